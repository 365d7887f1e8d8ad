"""``--mode single``: rank 0 and every worker in this process, wired through the in-process transport.

The lifecycle is :mod:`parallel_dqn.run.lifecycle`'s; this module only wires it: all workers are
hosted here and their messages reach rank 0's endpoint as plain objects. ``evaluate`` runs a saved
model the same way (no checkpoints, no ``status.json``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from parallel_dqn import outputs
from parallel_dqn.checkpoint.coordinator import load_worker_states
from parallel_dqn.checkpoint.resume import check_resume_flags
from parallel_dqn.comm.inprocess import InProcessTransport
from parallel_dqn.config import Config, flatten_settings, parse_date
from parallel_dqn.data.store import Store, open_store
from parallel_dqn.data.synthetic import load_structure
from parallel_dqn.errors import UserError
from parallel_dqn.model.device import resolve_device
from parallel_dqn.model.saved import load_model
from parallel_dqn.run.cloud_output import StoreMirror, claim_output
from parallel_dqn.run.lifecycle import RankZero, RunStart, decide_start, open_process, plan_run, refuse_mpi_launch
from parallel_dqn.run.signals import StopSignals
from parallel_dqn.training.driver import LocalShard, run_workers
from parallel_dqn.training.plan import RunPlan, plan_evaluation

log = logging.getLogger(__name__)

#: settings ``evaluate`` takes from the command line; every other one comes from the model
EVALUATE_SETTINGS = ("data.data", "data.cache", "data.eval_start", "data.eval_end", "market.cost_bps", "run.", "notify.",
                     "dist.timeout", "dist.record_block")
#: settings of the model that an evaluation may change when they are given (the capital allocation)
EVALUATE_OVERRIDES = ("meta.enabled", "meta.max_weight")


def train(
    cfg: Config, overwrite: bool = False, resume: str | None = None, mirror: StoreMirror | None = None
) -> dict[str, Any]:
    """Train on the training period, evaluate on the held-out one, write every output.

    ``resume`` (``--resume``): ``"auto"`` or a run / checkpoint folder (:mod:`parallel_dqn.checkpoint.resume`).
    ``mirror``: a cloud ``--output``'s store copy (:func:`~parallel_dqn.run.cloud_output.stage`).
    """
    check_resume_flags(overwrite, resume)
    refuse_mpi_launch("single")
    plan, store = plan_run(cfg)
    output = Path(cfg.run.output)
    with claim_output(output, overwrite, resume, mirror=mirror):
        open_process(cfg, output / outputs.LOG)
        start = decide_start(cfg, output, overwrite, resume)
        if start.finished is not None:
            return start.finished
        with StopSignals() as signals:
            return _run_here(cfg, plan, store, start, stop_signal=lambda: signals.received, mirror=mirror)


def evaluate(
    cfg: Config, model_path: str, overwrite: bool = False, mirror: StoreMirror | None = None
) -> dict[str, Any]:
    """Evaluate a saved model greedily on ``--eval_start``..``--eval_end`` (days it was not trained on); ``mirror``
    as for :func:`train`."""
    saved = load_model(model_path)
    model_cfg = evaluation_config(cfg, saved, str(model_path))
    store = open_store(model_cfg.data.data)
    plan = plan_evaluation(model_cfg, store, tuple(saved["symbols"]), saved, structure=load_structure(model_cfg.data.data))
    output = Path(model_cfg.run.output)
    with claim_output(output, overwrite, None, what="evaluate", mirror=mirror):
        open_process(model_cfg, output / outputs.LOG)
        # an evaluation writes no checkpoints: it just ends on a signal
        return _run_here(model_cfg, plan, store, RunStart(), initial_state=saved, mirror=mirror)


def evaluation_config(cfg: Config, saved: dict[str, Any], source: str) -> Config:
    """The model's settings, with the data, period, costs, capital allocation and output of ``cfg``.

    A setting given that the model fixes (its stocks, network, features) is refused in one line instead
    of being ignored, and so are evaluation days the model was trained on.
    """
    model_cfg = Config.from_dict(saved["config"], source=source)
    given, model, defaults = (flatten_settings(c.to_dict()) for c in (cfg, model_cfg, Config()))
    stocks = cfg.data.stocks
    if stocks and list(stocks) != list(saved["symbols"]):
        raise UserError(
            f"the model was trained on {' '.join(saved['symbols'])}; it cannot be evaluated on --stocks {' '.join(stocks)}",
            "drop --stocks (a model is evaluated on the stocks it was trained on)",
        )
    for key, value in given.items():
        if key == "data.stocks":
            continue
        if key.startswith(EVALUATE_SETTINGS) or (key in EVALUATE_OVERRIDES and value != defaults.get(key)):
            model_cfg.set(key, value, source="evaluate")
        elif value != defaults.get(key) and value != model.get(key):
            raise UserError(
                f"{key} = {value!r} cannot change in an evaluation: the model was trained with {model.get(key)!r}",
                "drop that setting (an evaluation takes the data, period, costs, meta.enabled, meta.max_weight "
                "and run settings; the rest comes from the model)",
            )
    model_cfg.dist.workers = 0
    model_cfg.dist.mode = "single"
    model_cfg.validate()
    resolve_device(model_cfg.run.device)
    d = model_cfg.data
    if not d.eval_start or not d.eval_end:
        raise UserError("evaluate needs --eval_start and --eval_end", "give the held-out days to evaluate on")
    trained = saved.get("train_days") or [saved["config"]["data"].get("start_date"), saved["config"]["data"].get("end_date")]
    if trained and all(trained):
        first, last = (parse_date(day, "the model's training days") for day in trained)
        lo, hi = parse_date(d.eval_start, "--eval_start"), parse_date(d.eval_end, "--eval_end")
        if lo <= last and hi >= first:
            raise UserError(
                f"--eval_start {lo} .. --eval_end {hi} overlaps the days the model was trained on ({first} .. {last})",
                f"evaluate on days after {last}",
            )
    return model_cfg


def _run_here(
    cfg: Config,
    plan: RunPlan,
    store: Store,
    start: RunStart,
    stop_signal=lambda: None,
    initial_state: dict | None = None,
    mirror: StoreMirror | None = None,
) -> dict[str, Any]:
    """Rank 0 and every worker in this process."""
    n_workers = len(plan.shards)
    log.debug(
        "single-process run: %d stocks, %d workers, train %s..%s, eval %s..%s, %d episodes -> %s",
        len(plan.symbols), n_workers, plan.train_start, plan.train_end, plan.eval_start, plan.eval_end,
        plan.episodes, cfg.run.output,
    )
    rank0 = RankZero(cfg, plan, "single", n_workers, start, stop_signal, initial_state, mirror)
    transport = InProcessTransport(rank0.endpoint)
    shards = [LocalShard(i, stocks) for i, stocks in enumerate(plan.shards)]
    saved = load_worker_states(start.checkpoint, range(n_workers)) if start.checkpoint else None
    with rank0.watching():
        run_workers(shards, plan, store, transport, cfg, resume=saved, stop_signal=stop_signal)
        return rank0.finish()

