"""Hooks into a training run: what a user adds to :func:`hale_jax.loop.train` without editing it.

A callback is any object with some of these methods (:class:`Callback` has them all, doing
nothing):

- ``on_start(info)``: once, before the first epoch of this process; ``info`` holds the config,
  the workdir, the epoch the run starts from and the number of steps per epoch.
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


class ProgressPrinter(Callback):
  """Prints one line per validation: epoch, loss, speed, valid MRR and Hits@10, times."""

  def __init__(self, log: Log = print):
    self._log = log

  def on_validation(self, v: Validation) -> str | None:
    m = v.metrics["realistic"]
    self._log(f"epoch {v.epoch:4d} | loss {v.loss:.4f} | {v.triples_per_second:,.0f} triples/s "
              f"| valid MRR {m['mrr']:.4f} H@10 {m['hits@10']:.4f} | train "
              f"{v.train_seconds:.1f}s eval {v.eval_seconds:.1f}s")
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
