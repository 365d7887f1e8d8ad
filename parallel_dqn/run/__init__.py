"""Runs: one lifecycle (:mod:`~parallel_dqn.run.lifecycle`) wired for one process (:mod:`~parallel_dqn.run.single`)
or MPI (:mod:`~parallel_dqn.run.mpi`), and the train -> evaluate -> report workflow. The CLI calls these."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parallel_dqn import outputs
from parallel_dqn.config import Config
from parallel_dqn.errors import UserError
from parallel_dqn.run import cloud_output


def train(cfg: Config, overwrite: bool = False, resume: str | None = None) -> dict[str, Any] | None:
    """Train in the configured mode; the results on rank 0 (or the single process), None on MPI worker ranks.

    A cloud ``run.output`` (``s3://``, ``gs://``, ``azure://``) is staged: ``cfg.run.output`` becomes the local
    folder the run writes, mirrored to the store (:mod:`parallel_dqn.run.cloud_output`).
    """
    return _train(cfg, overwrite, resume)[0]


def _train(
    cfg: Config, overwrite: bool, resume: str | None
) -> tuple[dict[str, Any] | None, cloud_output.StoreMirror | None]:
    """:func:`train`, and the staged output's mirror (None for a local output) for the caller's later uploads."""
    cfg.validate()
    mirror = cloud_output.stage(cfg)
    if cfg.dist.mode == "parallel":
        from parallel_dqn.run.mpi import train_parallel  # imports mpi4py only when it is needed

        return train_parallel(cfg, overwrite=overwrite, resume=resume, mirror=mirror), mirror
    from parallel_dqn.run.single import train as train_single

    return train_single(cfg, overwrite=overwrite, resume=resume, mirror=mirror), mirror


def evaluate(cfg: Config, model_path: str, overwrite: bool = False) -> dict[str, Any]:
    """Evaluate a saved model on held-out days (one process); the model and ``run.output`` may be in a store."""
    from parallel_dqn.run.single import evaluate as evaluate_single

    mirror = cloud_output.stage(cfg)
    return evaluate_single(cfg, cloud_output.readable(model_path), overwrite=overwrite, mirror=mirror)


def full_workflow(
    cfg: Config, overwrite: bool = False, resume: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], Path] | None:
    """Train into ``run.output``, evaluate the saved model into ``OUT/evaluation``, write ``OUT/report.html``.

    Returns (training results, evaluation results, report path); None on MPI worker ranks.
    """
    from parallel_dqn.evaluation.report import write_report

    trained, mirror = _train(cfg, overwrite, resume)
    if trained is None:  # an MPI worker rank: rank 0 evaluates and reports
        return None
    output = Path(cfg.run.output)
    period = trained.get("period")
    if not period:
        raise UserError("the training run has no evaluation period to evaluate on", "give --eval_start and --eval_end")
    eval_cfg = Config.from_dict(cfg.to_dict(), source="full-workflow")
    eval_cfg.set("data.eval_start", period[0][:10])  # UTC days, as the store's keys
    eval_cfg.set("data.eval_end", period[1][:10])
    eval_cfg.set("run.output", str(output / outputs.EVALUATION))
    # the evaluation belongs to this run: a resumed workflow redoes it over an earlier attempt's
    evaluated = evaluate(eval_cfg, str(output / outputs.MODEL), overwrite=overwrite or resume is not None)
    report = write_report([output], output / outputs.REPORT)
    if mirror is not None:  # a cloud output: the evaluation and the report go to the store too
        mirror.push()
    return trained, evaluated, report
