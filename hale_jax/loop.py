"""The training loop: epochs until a budget ends, validations, checkpoints, stop requests.

Library code: it takes a :class:`hale_jax.config.Config` and never reads flags
(``hale_jax.launch`` does).  :func:`train` composes small pieces: the layout
(``hale_jax.layout``), the run folder (``hale_jax.rundir``), the :class:`~hale_jax.trainer.Trainer`
that owns the state, :class:`Budget` (when to stop and validate), :class:`CheckpointPolicy`, a
``should_stop`` poll (signals) and user callbacks (``hale_jax.callbacks``).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
from jax.experimental import multihost_utils

from hale_jax import dataspec, ogb_eval, rundata, rundir, runfiles, tracking
from hale_jax.callbacks import EarlyStopping, ProgressPrinter, StallWarning, call_all
from hale_jax.config import Config
from hale_jax.data import KGData, data_report, summary
from hale_jax.dataspec import DataSpec
from hale_jax.layout import Layout, agree
from hale_jax.trainer import Progress, Trainer, describe


class Interrupted(Exception):
  """Training stopped early on request (a signal); the state was checkpointed first."""


class Diverged(Exception):
  """The loss or the parameters became non-finite; nothing non-finite was saved."""


class Budget:
  """When training stops (``max_epochs``, ``max_seconds``) and when it validates."""

  def __init__(self, config: Config):
    self.b = config.budget

  def exhausted(self, p: Progress, last_epoch_seconds: float) -> str | None:
    """Why no further epoch runs, or None.  A time budget stops before an epoch that the last
    epoch's duration says would overrun it, and always lets one epoch run."""
    if self.b.max_epochs and p.epoch >= self.b.max_epochs:
      return f"max_epochs {self.b.max_epochs} reached"
    if self.b.max_seconds and p.epoch and p.train_seconds + last_epoch_seconds > self.b.max_seconds:
      return f"training budget {self.b.max_seconds:g}s reached"
    return None

  def validate_now(self, p: Progress) -> bool:
    """Every ``eval_every`` epochs; in auto mode about 20 times per budget; at the end."""
    b = self.b
    if b.max_epochs and p.epoch >= b.max_epochs:
      return True
    if b.eval_every:
      return p.epoch % b.eval_every == 0
    if b.max_seconds:
      return (p.train_seconds - p.last_eval_at >= b.max_seconds / 20
              or p.train_seconds >= b.max_seconds)
    return p.epoch % max(1, b.max_epochs // 20) == 0


class CheckpointPolicy:
  """Checkpoints every ``checkpoint_every_epochs`` epochs and ``checkpoint_every_seconds``."""

  def __init__(self, config: Config):
    self.every_epochs = config.run.checkpoint_every_epochs
    self.every_seconds = config.run.checkpoint_every_seconds
    self.last = time.perf_counter()

  def seconds_due(self) -> bool:
    return bool(self.every_seconds and time.perf_counter() - self.last >= self.every_seconds)

  def due(self, epoch: int, seconds_due: bool) -> bool:
    return seconds_due or bool(self.every_epochs and epoch % self.every_epochs == 0)

  def saved(self) -> None:
    self.last = time.perf_counter()


def _epoch_decisions(trainer: Trainer, policy: CheckpointPolicy,
                     should_stop: Callable[[], str | None] | None) -> tuple[str | None, bool]:
  """Trains one epoch; returns a stop request and whether a checkpoint is due by time.  The
  decisions (time spent, stop, checkpoint due) are process 0's everywhere
  (``layout.agree``), so a multi-host run stays in step."""
  p = trainer.progress
  loss, seconds = trainer.run_epoch()
  reason = should_stop() if should_stop else None
  agreed = agree([seconds, reason is not None, policy.seconds_due()])
  seconds, due = float(agreed[0, 0]), bool(agreed[0, 2])
  if reason is None and agreed[:, 1].any():
    reason = "stop requested on another process"
  p.epoch, p.train_seconds, p.loss = p.epoch + 1, p.train_seconds + seconds, loss
  trainer.epoch_seconds = seconds
  return reason, due


def _diverged(trainer: Trainer) -> Diverged:
  """The error of a run whose loss or parameters became non-finite (nothing is saved)."""
  p, last = trainer.progress, trainer.saved_epoch
  then = (f"continues from its last finite checkpoint, epoch {last}" if last is not None
          else "starts over: no checkpoint was saved before")
  return Diverged(f"the training loss became {p.loss} at epoch {p.epoch}; nothing of this "
                  f"epoch was saved. Rerun the same command with a lower --learning_rate (it "
                  f"{then}), or check the data and --init_scale")


def _train_epochs(trainer: Trainer, config: Config, callbacks: list,
                  should_stop: Callable[[], str | None] | None) -> str:
  """Runs epochs until the budget or a callback stops them; returns why.  The epoch that ends
  the run is validated here and checkpointed once, by :func:`train`.  Raises
  :class:`Interrupted` after checkpointing when ``should_stop`` asks, and :class:`Diverged`
  (saving nothing) when the loss becomes non-finite."""
  budget, policy, p = Budget(config), CheckpointPolicy(config), trainer.progress
  stop = budget.exhausted(p, trainer.epoch_seconds)
  while stop is None:
    reason, due = _epoch_decisions(trainer, policy, should_stop)
    if not (math.isfinite(p.loss) and trainer.params_finite()):
      raise _diverged(trainer)
    stop = budget.exhausted(p, trainer.epoch_seconds)
    if budget.validate_now(p) or stop:
      p.last_eval_at = p.train_seconds
      answers = call_all(callbacks, "on_validation", trainer.validate(trainer.epoch_seconds))
      stop = stop or next(filter(None, answers), None)
    if reason:
      trainer.save()
      trainer.checkpointer.close()
      raise Interrupted(f"{reason}: checkpoint saved at epoch {p.epoch} in "
                        f"{trainer.checkpointer.workdir / 'checkpoints'}; rerun the same "
                        f"command to resume")
    if stop is None and policy.due(p.epoch, due):
      trainer.save()
      policy.saved()
  return stop


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
  after every epoch; when it returns a reason, the state is checkpointed and
  :class:`Interrupted` is raised.  A non-finite loss raises :class:`Diverged`.  ``callbacks``
  get each validation and the results (``hale_jax.callbacks``); a progress line per
  validation is always logged.  ``extra`` is stored under ``"run"`` in the results.
  ``config.run.mesh`` picks the layout over ``devices`` (default: all); a run may resume on
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
    trainer = _prepare(config, data, layout, workdir, spec, log, lead, earlier, data_spec)
    callbacks = [*standard_callbacks(config, data, workdir, log, lead), *callbacks]
    p = trainer.progress
    call_all(callbacks, "on_start", {"config": config, "workdir": workdir, "epoch": p.epoch,
                                     "train_seconds": p.train_seconds,
                                     "eval_seconds": p.eval_seconds, "curve": list(p.curve),
                                     "steps_per_epoch": trainer.steps})
    try:
      stop = _train_epochs(trainer, config, callbacks, should_stop)
    except Diverged:
      trainer.checkpointer.close()
      if lead:
        rundir.record_divergence(workdir, spec, p.epoch, p.loss)
      raise
    if not p.curve or p.curve[-1]["epoch"] != p.epoch:  # a resume found the budget spent
      call_all(callbacks, "on_validation", trainer.validate(trainer.epoch_seconds))
    if trainer.saved_epoch != p.epoch:
      trainer.save()
    trainer.checkpointer.close()
    log(f"stopped after {p.epoch} epochs: {stop}")
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
             data_spec: DataSpec | None) -> Trainer:
  """Keeps the data in the run folder, prints the run's description, compiles, resumes."""
  if lead:
    rundata.keep_data(workdir, data, data_spec)
  log(summary(data))
  for line in data_report(data):
    log(line)
  log(describe(config, layout.loss(config)[1]))
  log(f"device {rundir.device()}  layout {layout.describe()['mesh'] or 'one device'}  "
      f"workdir {workdir}")
  trainer = Trainer(config, data, layout, workdir, spec, log)
  log(f"compiled in {trainer.compile_seconds:.1f}s; {trainer.steps} steps of "
      f"{config.optim.batch_size} per epoch")
  resumed = trainer.restore()
  p = trainer.progress
  if earlier and earlier.get("diverged"):
    log(f"the earlier run in {workdir} diverged at epoch {earlier['diverged']['epoch']}; "
        + (f"continuing from its last finite checkpoint (epoch {p.epoch})" if resumed
           else "it left no checkpoint, so training starts over"))
  elif resumed:
    log(f"resumed from {workdir / 'checkpoints' / str(p.epoch)}: epoch {p.epoch}, "
        f"{p.train_seconds:.1f}s of training already spent")
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
