"""The training loop: segments until a budget ends, validations, checkpoints, stop requests.

Library code: it takes a :class:`hale_jax.config.Config` and never reads flags
(``hale_jax.launch`` does).  :func:`train` composes small pieces: the layout
(``hale_jax.layout``), the run folder (``hale_jax.rundir``), the :class:`~hale_jax.trainer.Trainer`
that owns the state, the segment sizes, :class:`~hale_jax.budget.Budget` (when to stop and
validate) and :class:`~hale_jax.budget.CheckpointPolicy` (``hale_jax.budget``), a
``should_stop`` poll (signals) and user callbacks (``hale_jax.callbacks``).  Everything acts
after a segment (a few seconds of steps), so also inside a long epoch.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils

from hale_jax import dataspec, ogb_eval, rundata, rundir, runfiles, tracking
from hale_jax.budget import Budget, CheckpointPolicy, SegmentSizer
from hale_jax.callbacks import EarlyStopping, ProgressPrinter, StallWarning, call_all
from hale_jax.config import Config
from hale_jax.data import KGData, data_report, summary
from hale_jax.dataspec import DataSpec
from hale_jax.layout import Layout, agree
from hale_jax.program import Program
from hale_jax.trainer import Progress, Trainer, describe


class Interrupted(Exception):
  """Training stopped early on request (a signal); the state was checkpointed first."""


class Diverged(Exception):
  """The loss or the parameters became non-finite; nothing non-finite was saved."""


def _segment_decisions(trainer: Trainer, policy: CheckpointPolicy, sizer: SegmentSizer,
                       should_stop: Callable[[], str | None] | None) -> tuple[bool, str | None,
                                                                              bool]:
  """Trains one segment; returns whether it ended the epoch, a stop request and whether a
  checkpoint is due by time.  The decisions (time spent, stop, checkpoint due) are process 0's
  everywhere (``layout.agree``), so a multi-host run stays in step, and so are the segment
  sizes, which follow from the agreed times."""
  count = sizer.count(trainer.progress.epoch_step)
  loss, seconds = trainer.run_segment(count)
  reason = should_stop() if should_stop else None
  agreed = agree([seconds, reason is not None, policy.seconds_due()])
  seconds, due = float(agreed[0, 0]), bool(agreed[0, 2])
  if reason is None and agreed[:, 1].any():
    reason = "stop requested on another process"
  sizer.measured(count, seconds)
  return trainer.advance(count, seconds, loss), reason, due


def _position(trainer: Trainer) -> str:
  """``3 epochs``, or ``3 epochs and 120 of 400 steps`` inside the fourth."""
  p = trainer.progress
  inside = f" and {p.epoch_step:,} of {trainer.steps:,} steps" if p.epoch_step else ""
  return f"{p.epoch} epochs{inside}"


def _where(trainer: Trainer, at: tuple[int, int] | None = None) -> str:
  """``epoch 3``, or ``epoch 3, step 120 of 400 of epoch 4`` inside the fourth: where training
  stands, or ``at`` (epochs, steps of the next)."""
  epoch, epoch_step = at or (trainer.progress.epoch, trainer.progress.epoch_step)
  inside = (f", step {epoch_step:,} of {trainer.steps:,} of epoch {epoch + 1}"
            if epoch_step else "")
  return f"epoch {epoch}{inside}"


def _diverged(trainer: Trainer) -> Diverged:
  """The error of a run whose loss or parameters became non-finite (nothing is saved)."""
  p, last = trainer.progress, trainer.saved_at
  then = (f"continues from its last finite checkpoint, {_where(trainer, last)}"
          if last is not None else "starts over: no checkpoint was saved before")
  return Diverged(f"the training loss became {trainer.loss} at epoch {_running_epoch(p)}; "
                  f"nothing after the last checkpoint was saved. Rerun the same command with "
                  f"a lower --learning_rate (it {then}), or check the data and --init_scale")


def _running_epoch(p: Progress) -> int:
  """The epoch the last segment trained (1-based)."""
  return p.epoch + 1 if p.epoch_step else p.epoch


def _train_segments(trainer: Trainer, config: Config, callbacks: list,
                    should_stop: Callable[[], str | None] | None) -> str:
  """Runs segments until the budget or a callback stops them; returns why.  The segment that
  ends the run is validated here and checkpointed once, by :func:`train`.  Raises
  :class:`Interrupted` after checkpointing when ``should_stop`` asks, and :class:`Diverged`
  (saving nothing) when the loss becomes non-finite."""
  budget, policy, p = Budget(config), CheckpointPolicy(config), trainer.progress
  sizer = SegmentSizer(config.budget.segment_seconds, trainer.steps)
  stop = budget.exhausted(p, 0.0)
  while stop is None:
    ended, reason, due = _segment_decisions(trainer, policy, sizer, should_stop)
    if not (math.isfinite(trainer.loss) and trainer.params_finite()):
      raise _diverged(trainer)
    call_all(callbacks, "on_progress", trainer.report())
    stop = budget.exhausted(p, sizer.seconds(p.epoch_step))
    if budget.validate_now(p, ended) or stop:
      p.last_eval_at = p.train_seconds
      answers = call_all(callbacks, "on_validation", trainer.validate())
      stop = stop or next(filter(None, answers), None)
    if reason:
      trainer.save()
      trainer.checkpointer.close()
      raise Interrupted(f"{reason}: checkpoint saved at {_where(trainer)} in "
                        f"{trainer.checkpointer.workdir / 'checkpoints' / str(trainer.saved_step)}"
                        f"; rerun the same command to resume")
    if stop is None and policy.due(ended, p.epoch, due):
      trainer.save()
      policy.saved()
  return stop


def _curve_step(point: dict[str, Any], steps_per_epoch: int) -> int:
  """The optimiser steps of a validation point (points of older runs hold only the epoch)."""
  return point.get("step", int(point["epoch"]) * steps_per_epoch)


def train(config: Config, data: KGData, workdir: str | os.PathLike, *,
          log: Callable[[str], None] = print, overwrite: bool = False,
          extra: dict[str, Any] | None = None,
          data_spec: DataSpec | dict[str, Any] | None = None,
          should_stop: Callable[[], str | None] | None = None,
          devices: Sequence[jax.Device] | None = None, callbacks: Sequence[Any] = (),
          allow_changed_data: bool = False) -> dict[str, Any]:
  """Trains, validates, tests the best-valid parameters, and writes ``workdir/results.json``.

  Resumes from the latest checkpoint in ``workdir`` when it holds the same run, and returns
  the stored results when that run already finished.  ``data_spec`` says where ``data`` came
  from (a :class:`hale_jax.dataspec.DataSpec`, or its JSON form) and is kept in ``run.json``
  with the sha256 of its files;
  a resume refuses changed files unless ``allow_changed_data``.  ``should_stop`` is polled
  after every segment; when it returns a reason, the state is checkpointed and
  :class:`Interrupted` is raised (the segments, checkpoint writes and the restore run inside
  ``should_stop.hold()`` when it has one, as ``hale_jax.stopping.StopRequest``).  A non-finite
  loss raises :class:`Diverged`.  ``callbacks`` get each segment's progress, each validation
  and the results (``hale_jax.callbacks``); a line per validation, and a progress line while
  training runs long without one, are always logged.  ``extra`` is stored under ``"run"`` in
  the results.  ``config.run.mesh`` picks the layout over ``devices`` (default: all); a run may resume on
  another layout.  While it trains, a run holds an exclusive lock on ``workdir``.  In a
  multi-host run every process calls this; process 0 writes the files.
  """
  queries = 2 * len(data.train)  # checked before the workdir is touched, as is the layout
  if config.optim.batch_size > queries:
    raise ValueError(f"--batch_size {config.optim.batch_size} exceeds the {queries} training "
                     f"queries (2 per triple); lower it")
  ogb_eval.check_protocol(config.budget.eval_protocol, data)
  layout = Layout.for_run(config, data.num_entities, devices)
  data_spec = None if data_spec is None else dataspec.from_json(data_spec)
  lead = jax.process_index() == 0
  workdir = rundir.prepare_workdir(workdir) if lead else Path(workdir)
  with rundir.WorkdirLock(workdir) if lead else contextlib.nullcontext():
    spec = rundir.run_spec(config, data, data_spec)
    earlier = None if overwrite else rundir.read_run(workdir)
    extending = bool(earlier) and (workdir / runfiles.RESULTS).exists()
    finished = rundir.start(workdir, spec, overwrite, write=lead,
                            allow_changed_data=allow_changed_data, log=log)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("hale_jax: run folder ready")
    if finished is not None:
      log(f"{workdir}: this run already finished; its results are in "
          f"{workdir / runfiles.RESULTS} (pass a larger --max_epochs or --max_seconds to "
          f"train on from its last checkpoint, or --overwrite to start over)")
      return finished
    if extending:
      log(f"{workdir}: extending the finished run to the larger budget; its earlier results "
          f"are kept in {workdir / runfiles.PREVIOUS_RESULTS}")
    trainer = _prepare(config, data, layout, workdir, spec, log, lead, earlier, data_spec,
                       should_stop)
    callbacks = [*standard_callbacks(config, data, workdir, log, lead), *callbacks]
    p = trainer.progress
    call_all(callbacks, "on_start", {"config": config, "workdir": workdir, "epoch": p.epoch,
                                     "epoch_step": p.epoch_step, "step": trainer.steps_done(),
                                     "train_seconds": p.train_seconds,
                                     "eval_seconds": p.eval_seconds, "curve": list(p.curve),
                                     "steps_per_epoch": trainer.steps})
    try:
      stop = _train_segments(trainer, config, callbacks, should_stop)
    except Diverged:
      trainer.checkpointer.close()
      if lead:
        rundir.record_divergence(workdir, spec, _running_epoch(p), trainer.loss)
      raise
    done = trainer.steps_done()
    if not p.curve or _curve_step(p.curve[-1], trainer.steps) != done:  # budget spent before
      call_all(callbacks, "on_validation", trainer.validate())
    if trainer.saved_step != done:
      trainer.save()
    trainer.checkpointer.close()
    log(f"stopped after {_position(trainer)}: {stop}")
    return _finish(trainer, workdir, stop, extra, callbacks, lead)


def standard_callbacks(config: Config, data: KGData, workdir: Path, log: Callable[[str], None],
                       lead: bool) -> list[Any]:
  """The callbacks every run has: the progress line, the stall warning, early stopping with
  ``--patience``, and on the process that writes files, ``metrics.jsonl`` and the
  TensorBoard and Weights & Biases writers that the config asks for."""
  out: list[Any] = [ProgressPrinter(log, len(data.test) / max(len(data.valid), 1)),
                    StallWarning(log)]
  if config.budget.patience:
    out.append(EarlyStopping(config.budget.patience, config.budget.min_delta))
  if lead:
    out.append(tracking.MetricsFile(workdir, log))
    if config.run.tensorboard_dir:
      out.append(tracking.TensorBoardWriter(config.run.tensorboard_dir))
    if config.run.wandb_project:
      out.append(tracking.WandbWriter(config.run.wandb_project, config.flat(), workdir.name))
  return out


def _prepare(config: Config, data: KGData, layout: Layout, workdir: Path, spec: dict,
             log: Callable[[str], None], lead: bool, earlier: dict | None,
             data_spec: DataSpec | None, should_stop: Any) -> Trainer:
  """Keeps the data in the run folder, prints the run's description, compiles, resumes."""
  if lead:
    rundata.keep_data(workdir, data, data_spec)
  log(summary(data))
  for line in data_report(data):
    log(line)
  program = Program.build(config, layout, data.num_relations)
  log(describe(config, program.lse_form))
  log(f"device: {rundir.device_phrase(rundir.device())}  layout: "
      f"{layout.describe()['mesh'] or 'one device'}  workdir: {workdir}")
  trainer = Trainer(program, data, workdir, spec, log)
  # A second signal (hale_jax.stopping.StopRequest) waits for a segment or a checkpoint write.
  trainer.hold = getattr(should_stop, "hold", None) or trainer.hold
  log(f"compiled in {trainer.compile_seconds:.1f}s; {trainer.steps} steps of "
      f"{config.optim.batch_size} per epoch")
  resumed = trainer.restore()
  p = trainer.progress
  if earlier and earlier.get("diverged"):
    log(f"the earlier run in {workdir} diverged at epoch {earlier['diverged']['epoch']}; "
        + (f"continuing from its last finite checkpoint ({_where(trainer)})" if resumed
           else "it left no checkpoint, so training starts over"))
  elif resumed:
    log(f"resumed from {workdir / 'checkpoints' / str(trainer.saved_step)}: "
        f"{_where(trainer)}, {p.train_seconds:.1f}s of training already spent")
  return trainer


def _finish(trainer: Trainer, workdir: Path, stop: str, extra: dict | None, callbacks: list,
            lead: bool) -> dict:
  """Tests the best-valid parameters and writes ``best_params.npz`` and ``results.json``."""
  valid, test = trainer.test()
  best_host = trainer.layout.unpad_params(trainer.best_params)  # every process gathers
  if lead:
    runfiles.write_npz(workdir / runfiles.PARAMS, best_host)
  log = trainer.log
  how = ", OGB protocol" if trainer.config.budget.eval_protocol == "ogb" else ""
  log(f"best valid epoch {trainer.progress.best_epoch}{how}: "
      f"{_fmt_metrics(valid['realistic'])}")
  for mode in ("realistic", "pessimistic"):
    log(f"test ({mode} ties{how}): {_fmt_metrics(test[mode])}")
  results = trainer.results(valid, test, stop, extra)
  if lead:
    runfiles.write_json(workdir / runfiles.RESULTS, results)
    log(f"results written to {workdir / runfiles.RESULTS}")
  call_all(callbacks, "on_end", results)
  return results


def _fmt_metrics(m: dict[str, float]) -> str:
  return (f"MRR {m['mrr']:.4f}  MR {m['mr']:.1f}  H@1 {m['hits@1']:.4f}  "
          f"H@3 {m['hits@3']:.4f}  H@10 {m['hits@10']:.4f}")
