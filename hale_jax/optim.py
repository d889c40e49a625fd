"""The optimiser and the learning-rate schedule.

The rate is set per epoch, not inside the compiled segment: with a schedule other than
``constant`` the optimiser is wrapped in ``optax.inject_hyperparams``, so the learning rate is a
leaf of the optimiser state that :func:`set_learning_rate` replaces when an epoch starts, and
the compiled segment stays the same.  The schedule is a function of the epochs done and the
training seconds spent when the epoch started (:func:`learning_rate_at`), which checkpoints
keep, so a resumed run continues on the same curve, also from inside an epoch.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np
import optax

OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad}
LR_SCHEDULES = ("constant", "cosine")


def make_optimizer(name: str, learning_rate: float,
                   schedule: str = "constant") -> optax.GradientTransformation:
  """``optax.adam`` or ``optax.adagrad`` at ``learning_rate``; with a ``schedule`` other than
  ``constant``, wrapped in ``optax.inject_hyperparams`` (see the module docstring)."""
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
  if schedule == "constant":
    return OPTIMIZERS[name](learning_rate)
  return optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=learning_rate)


def learning_rate_at(schedule: str, learning_rate: float, epoch: int, train_seconds: float,
                     max_epochs: int = 0, max_seconds: float = 0.0) -> float:
  """The rate of the epoch that starts after ``epoch`` epochs and ``train_seconds``.

  ``cosine``: ``lr * (1 + cos(pi * p)) / 2``, with ``p`` the spent fraction of the budget, the
  larger of ``epoch / max_epochs`` and ``train_seconds / max_seconds`` over the budgets that
  are set (clipped to 1).  A time budget's fraction is measured when the epoch starts, so the
  rate ends near ``lr * (pi * epoch_seconds / max_seconds)^2 / 4``, not at 0.
  """
  if schedule == "constant":
    return learning_rate
  if schedule != "cosine":
    raise ValueError(f"unknown lr_schedule {schedule!r}; choose one of {', '.join(LR_SCHEDULES)}")
  spent = []
  if max_epochs:
    spent.append(epoch / max_epochs)
  if max_seconds:
    spent.append(train_seconds / max_seconds)
  p = min(1.0, max(spent, default=0.0))
  return learning_rate * 0.5 * (1.0 + math.cos(math.pi * p))


def set_learning_rate(opt_state: Any, learning_rate: float) -> Any:
  """``opt_state`` with the rate of an ``inject_hyperparams`` state replaced (same dtype and
  sharding); any other optimiser state is returned unchanged."""
  # Duck-typed: optax's class for this state differs between versions.
  if "learning_rate" not in getattr(opt_state, "hyperparams", {}):
    return opt_state
  old = opt_state.hyperparams["learning_rate"]
  new = jax.device_put(np.asarray(learning_rate, old.dtype), old.sharding)
  return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})
