"""Hooks into a training run: what a user adds to :func:`hale_jax.loop.train` without editing it.

A callback is any object with some of these methods (:class:`Callback` has them all, doing
nothing):

- ``on_start(info)``: once, before the first epoch of this process; ``info`` holds the config,
  the workdir, the number of steps per epoch and where the run starts from (``epoch``,
  ``train_seconds``, ``eval_seconds`` and the validation ``curve`` so far: a resumed run's).
- ``on_validation(v)``: after each validation, with a :class:`Validation`.  Returning a string
  ends training after this epoch, with that string as the stop reason (early stopping); the
  best-valid parameters are then tested as usual.
- ``on_end(results)``: once, with the results dict that ``results.json`` holds.

In a multi-host run every process calls its callbacks with the same values, so a stop decision
made from the metrics is the same everywhere.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Validation:
  """One validation of a run: where it stands and what the valid split gave."""
  epoch: int                  # epochs done
  step: int                   # optimiser steps done
  train_seconds: float        # training time spent (the budget's clock)
  eval_seconds: float         # validation time spent so far
  loss: float                 # mean training loss of the last epoch
  learning_rate: float | None  # of the last epoch (None if no epoch ran in this process)
  triples_per_second: float   # training queries per second in the last epoch
  metrics: dict[str, dict[str, float]]  # valid metrics per tie rule ("realistic", ...)
  best: dict[str, float]      # best realistic valid metrics so far, this one included
  best_epoch: int
  improved: bool              # this validation is the new best
  params: Any                 # the current parameters (device arrays, real entity rows)
  max_seconds: float          # the training budget (0: none)
  max_epochs: int             # the epoch budget (0: none)


class Callback:
  """The hooks of a run, each doing nothing; subclass and override what you need."""

  def on_start(self, info: dict[str, Any]) -> None:
    """Before the first epoch of this process."""

  def on_validation(self, v: Validation) -> str | None:
    """After each validation; return a reason to end training early."""
    del v
    return None

  def on_end(self, results: dict[str, Any]) -> None:
    """With the final results."""


def _duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def remaining_seconds(v: Validation, epoch_seconds: float) -> float | None:
  """Training seconds left under the budget (the tighter of the two), or None when neither
  budget is set."""
  left = []
  if v.max_seconds:
    left.append(max(0.0, v.max_seconds - v.train_seconds))
  if v.max_epochs:
    left.append(max(0, v.max_epochs - v.epoch) * epoch_seconds)
  return min(left) if left else None


class ProgressPrinter(Callback):
  """Prints one line per validation: epoch, loss, speed, valid MRR and Hits@10, times, and
  the training time left with an estimate of when the run ends (training, then the final
  ranking of valid and test, estimated from the last validation)."""

  def __init__(self, log: Log = print, test_fraction: float = 1.0):
    self._log = log
    self._test_fraction = test_fraction  # test queries per valid query
    self._last = (0.0, 0, 0.0)  # train seconds, epoch and eval seconds at the last line

  def on_start(self, info: dict[str, Any]) -> None:
    self._last = (info["train_seconds"], info["epoch"], info["eval_seconds"])

  def on_validation(self, v: Validation) -> str | None:
    m = v.metrics["realistic"]
    seconds, epoch, evals = self._last
    epoch_seconds = (v.train_seconds - seconds) / max(v.epoch - epoch, 1)
    last_eval = v.eval_seconds - evals
    self._last = (v.train_seconds, v.epoch, v.eval_seconds)
    line = (f"epoch {v.epoch:4d} | loss {v.loss:.4f} | {v.triples_per_second:,.0f} triples/s "
            f"| valid MRR {m['mrr']:.4f} H@10 {m['hits@10']:.4f} | train "
            f"{v.train_seconds:.1f}s eval {v.eval_seconds:.1f}s")
    left = remaining_seconds(v, epoch_seconds)
    if left is not None:
      final = last_eval * (1.0 + self._test_fraction)
      line += f" | left {_duration(left)}, ETA {_duration(left + final)}"
    self._log(line)
    return None


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
