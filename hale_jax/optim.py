"""The optimiser and the learning-rate schedule.

The rate is set per epoch, not inside the compiled segment: with a schedule other than
``constant`` the optimiser is wrapped in ``optax.inject_hyperparams``, so the learning rate is a
leaf of the optimiser state that :func:`set_learning_rate` replaces when an epoch starts, and
the compiled segment stays the same.  The schedule is a function of the epochs done and the
training seconds spent when the epoch started (:func:`learning_rate_at`), which checkpoints
keep, so a resumed run continues on the same curve, also from inside an epoch.  A warm-up
(``warmup_epochs``) multiplies any schedule's rate over the first epochs.

With ``ema_decay`` the optimiser also keeps an exponential moving average of the parameters in
its state (:func:`parameter_average`): it is checkpointed and resumed with the state, sharded
like the parameters (``optax.tree_map_params`` finds it), and :func:`averaged_params` reads it
for validation and test.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

OPTIMIZERS = {"adam": optax.adam, "adagrad": optax.adagrad}
LR_SCHEDULES = ("constant", "cosine")


class AverageState(NamedTuple):
  """The state of :func:`parameter_average`: the wrapped optimiser's state and the average
  (a pytree like the parameters)."""
  inner: object
  average: object


def parameter_average(inner: optax.GradientTransformation,
                      decay: float) -> optax.GradientTransformation:
  """``inner``, also keeping ``average <- decay * average + (1 - decay) * new_params`` after
  each update (starting from the initial parameters).  The updates are ``inner``'s, unchanged:
  the average is read, never trained (Polyak averaging with an exponential window of about
  ``1 / (1 - decay)`` steps)."""
  def init(params):
    return AverageState(inner.init(params), jax.tree.map(lambda p: p.copy(), params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("parameter_average needs the parameters in update()")
    updates, inner_state = inner.update(updates, state.inner, params)
    average = jax.tree.map(lambda a, p, u: decay * a + (1 - decay) * (p + u).astype(a.dtype),
                           state.average, params, updates)
    return updates, AverageState(inner_state, average)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any) -> Any | None:
  """The parameter average kept by :func:`parameter_average` in ``opt_state`` (at any depth:
  inside ``inject_hyperparams``), or None where the optimiser keeps none."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, AverageState))
           if isinstance(s, AverageState)]
  return found[0].average if found else None


def make_optimizer(name: str, learning_rate: float, schedule: str = "constant", *,
                   warmup_epochs: int = 0, ema_decay: float = 0.0
                   ) -> optax.GradientTransformation:
  """``optax.adam`` or ``optax.adagrad`` at ``learning_rate``; with a ``schedule`` other than
  ``constant`` or a warm-up, wrapped in ``optax.inject_hyperparams`` (see the module
  docstring); with ``ema_decay > 0``, keeping a parameter average (:func:`parameter_average`)."""
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")

  factory = OPTIMIZERS[name]
  if ema_decay:
    def factory(learning_rate):  # pylint: disable=function-redefined
      return parameter_average(OPTIMIZERS[name](learning_rate), ema_decay)
  if schedule == "constant" and not warmup_epochs:
    return factory(learning_rate)
  # With the optimiser itself as the factory, inject_hyperparams also holds its other numeric
  # defaults (Adam's b1, b2, eps) as float32 leaves; the recorded numbers depend on that.
  return optax.inject_hyperparams(factory)(learning_rate=learning_rate)


def learning_rate_at(schedule: str, learning_rate: float, epoch: int, train_seconds: float,
                     max_epochs: int = 0, max_seconds: float = 0.0,
                     warmup_epochs: int = 0) -> float:
  """The rate of the epoch that starts after ``epoch`` epochs and ``train_seconds``.

  ``cosine``: ``lr * (1 + cos(pi * p)) / 2``, with ``p`` the spent fraction of the budget, the
  larger of ``epoch / max_epochs`` and ``train_seconds / max_seconds`` over the budgets that
  are set (clipped to 1).  A time budget's fraction is measured when the epoch starts, so the
  rate ends near ``lr * (pi * epoch_seconds / max_seconds)^2 / 4``, not at 0.

  ``warmup_epochs = W``: epoch ``e < W`` runs at ``(e + 1) / (W + 1)`` of that rate (a linear
  rise that never trains an epoch at rate 0).
  """
  warm = min(1.0, (epoch + 1) / (warmup_epochs + 1))
  return warm * _scheduled(schedule, learning_rate, epoch, train_seconds, max_epochs,
                           max_seconds)


def _scheduled(schedule: str, learning_rate: float, epoch: int, train_seconds: float,
               max_epochs: int, max_seconds: float) -> float:
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
