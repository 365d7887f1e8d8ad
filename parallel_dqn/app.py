"""The run-level entry points behind the CLI: train and evaluate.

Each builds the plan, the parameter server with its recorder, and the workers,
wired through a transport: in-process for ``--mode single``, MPI for
``--mode parallel`` (``parallel_dqn.dist.mpi``). The algorithm is the same.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from parallel_dqn.config import Config
from parallel_dqn.data.store import open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.dist.driver import LocalShard, run_workers
from parallel_dqn.dist.server import ParameterServer
from parallel_dqn.dist.transport import InProcessTransport
from parallel_dqn.errors import UserError
from parallel_dqn.evaluation.results import RunRecorder
from parallel_dqn.model.saved import load_model
from parallel_dqn.ops.logs import setup_logging
from parallel_dqn.ops.notify import Notifier, notifying
from parallel_dqn.ops.progress import Progress
from parallel_dqn.run_plan import RunPlan, plan_evaluation, plan_training

log = logging.getLogger(__name__)

RUN_FILES = ("trained_model.pth", "metrics.json", "metrics.jsonl")


def prepare_output(output: Path, overwrite: bool) -> None:
    """Create the output folder; refuse to mix a new run into an old one unless told to.

    Nothing of an earlier run is removed here: with ``--overwrite`` its files are
    replaced one by one as the new run writes them, so a run that fails on bad
    input leaves the earlier results as they were.
    """
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file", "give a folder path")
    old = [name for name in RUN_FILES if (output / name).exists()]
    if old and not overwrite:
        raise UserError(
            f"--output {output} already holds a run ({old[0]})", "choose another --output, or pass --overwrite"
        )
    output.mkdir(parents=True, exist_ok=True)


def train(cfg: Config, overwrite: bool = False) -> dict[str, Any]:
    """Train on the training period, evaluate on the held-out one, write every output."""
    cfg.validate()
    store = open_store(cfg.data.data)
    plan = plan_training(cfg, store, structure=load_structure(cfg.data.data))
    output = Path(cfg.run.output)
    prepare_output(output, overwrite)
    return _run_single(cfg, plan, store, output, initial_state=None)


def evaluate(cfg: Config, model_path: str, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate a saved model greedily on ``--eval_start``..``--eval_end``."""
    saved = load_model(model_path)
    model_cfg = Config.from_dict(saved["config"], source=str(model_path))
    # The model fixes the network and features; the data, period, costs and output come from the flags.
    model_cfg.data.data = cfg.data.data
    model_cfg.data.eval_start, model_cfg.data.eval_end = cfg.data.eval_start, cfg.data.eval_end
    model_cfg.market.cost_bps = cfg.market.cost_bps
    model_cfg.run = cfg.run
    model_cfg.dist.workers = 0
    model_cfg.validate()
    store = open_store(model_cfg.data.data)
    plan = plan_evaluation(model_cfg, store, tuple(saved["symbols"]), saved, structure=load_structure(model_cfg.data.data))
    output = Path(model_cfg.run.output)
    prepare_output(output, overwrite)
    return _run_single(model_cfg, plan, store, output, initial_state=saved)


def _run_single(cfg: Config, plan: RunPlan, store, output: Path, initial_state: dict | None) -> dict[str, Any]:
    """Server and every worker in this process, through the in-process transport."""
    setup_logging(output / "run.log")
    torch.set_num_threads(cfg.run.threads)
    log.debug("resolved config:\n%s", cfg.to_toml())
    log.debug(
        "single-process run: %d stocks, %d workers, train %s..%s, eval %s..%s, %d episodes -> %s",
        len(plan.symbols), len(plan.shards), plan.train_start, plan.train_end, plan.eval_start, plan.eval_end,
        plan.episodes, output,
    )
    progress = Progress(total_steps=0, enabled=cfg.run.progress)
    recorder = RunRecorder(cfg, output, progress)
    notifier = Notifier.from_config(cfg.notify, output.name)
    on_episode = notifying(recorder.on_episode, recorder.curve, notifier, cfg.notify.every, plan.episodes)
    server = ParameterServer(cfg, len(plan.shards), on_episode, initial_state=initial_state, progress=progress)
    transport = InProcessTransport(server)
    shards = [LocalShard(i, stocks) for i, stocks in enumerate(plan.shards)]
    started = time.perf_counter()
    notifier.start("single", plan.symbols, len(plan.shards), plan.episodes, output)
    try:
        try:
            run_workers(shards, plan, store, transport, cfg)
        finally:
            progress.close()
        result = recorder.finish(server, extra={"wall_seconds": round(time.perf_counter() - started, 2), "mode": "single"})
        notifier.complete(result)
    except UserError as exc:
        log.debug("stopped: %s", exc.line())  # the file records why; the CLI prints the line once
        notifier.error(exc)
        raise
    except BaseException as exc:
        log.debug("failed", exc_info=True)
        notifier.error(exc)
        raise
    finally:
        notifier.close()
    log.info("outputs written to %s", output)
    return result
