"""Hooks into a training run: what a user adds to :func:`hale_jax.loop.train` without editing it.

A callback is any object with some of these methods (:class:`Callback` has them all, doing
nothing):

- ``on_start(info)``: once, before the first segment of this process; ``info`` holds the
  config, the workdir, the number of steps per epoch and where the run starts from (``epoch``,
  ``epoch_step``: the steps done of the epoch under way, ``step``, ``train_seconds``,
  ``eval_seconds`` and the validation ``curve`` so far: a resumed run's).
- ``on_progress(r)``: after each segment of training (a few seconds of steps, or a whole epoch
  of a small graph), with a :class:`ProgressReport`.
- ``on_validation(v)``: after each validation, with a :class:`Validation` (it may fall inside
  an epoch).  Returning a string ends training here, with that string as the stop reason
  (early stopping); the best-valid parameters are then tested as usual.
- ``on_end(results)``: once, with the results dict that ``results.json`` holds.

In a multi-host run every process calls its callbacks with the same values, so a stop decision
made from the metrics is the same everywhere.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from hale_jax.progress import duration

Log = Callable[[str], None]


PROGRESS_EVERY_SECONDS = 10.0  # the progress printer's longest silence while a run trains


@dataclasses.dataclass(frozen=True)
class ProgressReport:
  """Where training stands after a segment."""
  epoch: int                  # epochs completed
  epoch_step: int             # steps done of the epoch under way (0: an epoch just ended)
  steps_per_epoch: int
  step: int                   # optimiser steps done
  train_seconds: float        # training time spent (the budget's clock)
  eval_seconds: float         # validation time spent so far
  loss: float                 # mean training loss of the epoch's steps so far (or the epoch's)
  learning_rate: float | None  # of the epoch under way
  triples_per_second: float   # training queries per second in the last segment
  max_seconds: float          # the training budget (0: none)
  max_epochs: int             # the epoch budget (0: none)

  @property
  def epochs(self) -> float:
    """Epochs done, with the share of the epoch under way."""
    return self.epoch + self.epoch_step / max(self.steps_per_epoch, 1)


@dataclasses.dataclass(frozen=True)
class Validation:
  """One validation of a run: where it stands and what the valid split gave."""
  epoch: int                  # epochs completed
  step: int                   # optimiser steps done
  train_seconds: float        # training time spent (the budget's clock)
  eval_seconds: float         # validation time spent so far
  loss: float                 # mean training loss of the last epoch (of the epoch's steps so
                              # far when the validation falls inside an epoch)
  learning_rate: float | None  # of the last epoch (None if none ran)
  triples_per_second: float   # training queries per second in the last segment
  metrics: dict[str, dict[str, float]]  # valid metrics per tie rule ("realistic", ...)
  best: dict[str, float]      # best realistic valid metrics so far, this one included
  best_epoch: int
  improved: bool              # this validation is the new best
  params: Any                 # the current parameters (device arrays, real entity rows)
  max_seconds: float          # the training budget (0: none)
  max_epochs: int             # the epoch budget (0: none)
  epoch_step: int = 0         # steps done of the epoch under way (0: at an epoch's end)
  steps_per_epoch: int = 0

  @property
  def epochs(self) -> float:
    """Epochs done, with the share of the epoch under way."""
    return self.epoch + self.epoch_step / max(self.steps_per_epoch, 1)


class Callback:
  """The hooks of a run, each doing nothing; subclass and override what you need."""

  def on_start(self, info: dict[str, Any]) -> None:
    """Before the first segment of this process."""

  def on_progress(self, r: ProgressReport) -> None:
    """After each segment of training."""

  def on_validation(self, v: Validation) -> str | None:
    """After each validation; return a reason to end training early."""
    del v
    return None

  def on_end(self, results: dict[str, Any]) -> None:
    """With the final results."""


def remaining_seconds(v: Validation | ProgressReport, epoch_seconds: float) -> float | None:
  """Training seconds left under the budget (the tighter of the two), or None when neither
  budget is set."""
  left = []
  if v.max_seconds:
    left.append(max(0.0, v.max_seconds - v.train_seconds))
  if v.max_epochs:
    left.append(max(0.0, v.max_epochs - v.epochs) * epoch_seconds)
  return min(left) if left else None


class ProgressPrinter(Callback):
  """Prints one line per validation: epoch, loss, speed, valid MRR and Hits@10, the training
  and evaluation time spent, and the time left until the run ends (the training budget left,
  then the final ranking of valid and test, estimated from the last validation); and when
  ``every`` seconds (default :data:`PROGRESS_EVERY_SECONDS`) passed without a line, a progress
  line after a segment: the share of the epoch under way, its loss so far, speed, time spent
  and left."""

  def __init__(self, log: Log = print, test_fraction: float = 1.0, every: float | None = None):
    self._log = log
    self._test_fraction = test_fraction  # test queries per valid query
    self._every = PROGRESS_EVERY_SECONDS if every is None else every
    self._last = (0.0, 0.0, 0.0)  # train seconds, epochs and eval seconds at the last line
    self._last_eval = 0.0  # seconds of the last validation
    self._epoch_seconds = 0.0  # training seconds per epoch, since the last line's start point
    self._printed = time.monotonic()

  def on_start(self, info: dict[str, Any]) -> None:
    steps = max(info.get("steps_per_epoch") or 1, 1)
    epochs = info["epoch"] + info.get("epoch_step", 0) / steps
    self._last = (info["train_seconds"], epochs, info["eval_seconds"])
    self._printed = time.monotonic()

  def _eta(self, v: Validation | ProgressReport, epoch_seconds: float) -> str:
    """`` | time left 1m41s``: the budget left and the final ranking, or nothing."""
    left = remaining_seconds(v, epoch_seconds)
    if left is None:
      return ""
    final = self._last_eval * (1.0 + self._test_fraction)
    return f" | time left {duration(left + final)}"

  def on_validation(self, v: Validation) -> str | None:
    m = v.metrics["realistic"]
    seconds, epochs, evals = self._last
    if v.epochs > epochs:
      self._epoch_seconds = (v.train_seconds - seconds) / (v.epochs - epochs)
    self._last_eval = v.eval_seconds - evals
    self._last = (v.train_seconds, v.epochs, v.eval_seconds)
    at = f"{v.epoch:4d}" if not v.epoch_step else f"{v.epochs:7.2f}"
    line = (f"epoch {at} | loss {v.loss:.4f} | {v.triples_per_second:,.0f} triples/s "
            f"| valid MRR {m['mrr']:.4f} H@10 {m['hits@10']:.4f} | train time "
            f"{v.train_seconds:.1f}s, eval time {v.eval_seconds:.1f}s")
    self._log(line + self._eta(v, self._epoch_seconds))
    self._printed = time.monotonic()
    return None

  def on_progress(self, r: ProgressReport) -> None:
    if time.monotonic() - self._printed < self._every:
      return
    self._printed = time.monotonic()
    if r.epoch_step:
      where = (f"epoch {r.epoch + 1}: {100 * r.epoch_step / r.steps_per_epoch:.1f}% "
               f"({r.epoch_step:,}/{r.steps_per_epoch:,} steps)")
    else:
      where = f"epoch {r.epoch}: done"
    if r.epochs > self._last[1]:
      self._epoch_seconds = (r.train_seconds - self._last[0]) / (r.epochs - self._last[1])
    self._log(f"  training {where} | loss {r.loss:.4f} | {r.triples_per_second:,.0f} "
              f"triples/s | train time {r.train_seconds:.1f}s" + self._eta(r, self._epoch_seconds))


class EarlyStopping(Callback):
  """Ends training after ``patience`` validations without a valid-MRR gain of more than
  ``min_delta`` over the best so far; the best-valid parameters are then tested."""

  def __init__(self, patience: int, min_delta: float = 0.0):
    self._patience, self._min_delta = patience, min_delta
    self._best: float | None = None
    self._waited = 0

  def on_start(self, info: dict[str, Any]) -> None:
    for point in info["curve"]:  # a resumed run: replay its validations
      self._update(point["valid_mrr"])

  def _update(self, mrr: float) -> bool:
    """Counts one validation; True when it is an improvement."""
    if self._best is None or mrr - self._best > self._min_delta:
      self._best, self._waited = mrr, 0
      return True
    self._waited += 1
    return False

  def on_validation(self, v: Validation) -> str | None:
    if self._update(v.metrics["realistic"]["mrr"]):
      return None
    if self._waited >= self._patience:
      return (f"early stopping: no valid MRR gain above {self._min_delta:g} in "
              f"{self._patience} validations (best {self._best:.4f})")
    return None


class StallWarning(Callback):
  """Warns once when the training loss has not changed over ``patience`` validations in a row:
  the sign of a saturated activation (every distance past the point where ``h`` is flat, e.g.
  from a large ``--init_scale``) or of a learning rate that moves nothing."""

  def __init__(self, log: Log = print, patience: int = 3, rtol: float = 1e-6):
    self._log, self._patience, self._rtol = log, patience, rtol
    self._losses: list[float] = []
    self._warned = False

  def on_validation(self, v: Validation) -> str | None:
    self._losses = (self._losses + [v.loss])[-(self._patience + 1):]
    first = self._losses[0]
    flat = all(abs(x - first) <= self._rtol * max(abs(first), 1e-12) for x in self._losses)
    if flat and len(self._losses) > self._patience and not self._warned:
      self._warned = True
      self._log(f"warning: the training loss has stayed at {v.loss:.6g} over the last "
                f"{self._patience + 1} validations; training has stalled. Likely causes: a "
                f"saturated activation (distances beyond where h is flat: lower --init_scale, "
                f"or raise --gamma), or a learning rate that is far too small or too large")
    return None


def call_all(callbacks: list[Any], hook: str, *args: Any) -> list[Any]:
  """Calls ``hook`` on every callback that has it; returns their answers."""
  return [getattr(cb, hook)(*args) for cb in callbacks if hasattr(cb, hook)]
