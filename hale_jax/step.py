"""The training state and the jit-compiled epoch: a ``lax.scan`` over optax steps.

One epoch is one compiled call: the reciprocal-augmented training set is shuffled on the
device and ``lax.scan`` runs the optax steps, so there is no host round-trip inside an epoch.
Each step takes ``batch_size`` training queries (a triple ``(h, r, t)`` and its reciprocal
``(t, r + |R|, h)`` are separate queries).  The last ``2T mod batch_size`` queries of each
epoch's permutation are dropped, so every step has the same shape; the permutation changes
every epoch.

Nothing here knows where arrays live: :mod:`hale_jax.layout` jits these functions with the
shardings of its mesh and may constrain the batch and the carry through ``constrain``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from hale_jax import models, objective, optim
from hale_jax.config import Config

Array = jax.Array
# constrain(batch, (params, opt_state)) -> the same with sharding constraints (or unchanged)
Constrain = Callable[[Any, Any], tuple[Any, Any]]


class TrainState(flax.struct.PyTreeNode):
  """Everything an epoch reads and writes: parameters, optimiser state, PRNG key, step count."""
  params: dict[str, Array]
  opt_state: Any
  key: Array
  step: Array


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """The run's optimiser (``hale_jax.optim.make_optimizer``)."""
  return optim.make_optimizer(config.optim.optimizer, config.optim.learning_rate,
                              config.optim.lr_schedule)


def learning_rate_at(config: Config, epoch: int, train_seconds: float) -> float:
  """The rate of the epoch after ``epoch`` epochs and ``train_seconds`` of training."""
  return optim.learning_rate_at(config.optim.lr_schedule, config.optim.learning_rate, epoch,
                                train_seconds, config.budget.max_epochs,
                                config.budget.max_seconds)


def set_learning_rate(state: TrainState, learning_rate: float) -> TrainState:
  return state.replace(opt_state=optim.set_learning_rate(state.opt_state, learning_rate))


def make_loss(config: Config, num_entities: int, allow_chunks: bool = True
              ) -> tuple[objective.LossFn, str]:
  """The run's loss ``(params, batch, key) -> scalar`` and how its uniformity LSE is formed
  (``"plain"`` or ``"chunks of C"``); ``allow_chunks=False`` forces the plain LSE."""
  uniformity, form = objective.choose_uniformity(config.objective, num_entities, allow_chunks)
  loss = objective.make_loss(config.objective, config.model.model, config.num_sampled,
                             uniformity)
  return loss, form


def init_fn(config: Config, num_entities: int, num_relations: int,
            pad: Callable[[dict[str, Array]], dict[str, Array]] | None = None
            ) -> Callable[[], TrainState]:
  """The function that creates the initial state (to be jitted): parameters from
  ``config.optim.seed``, optionally padded by ``pad`` (``hale_jax.layout``), and the optimiser
  state.  One function for every layout, so each starts from the same bits."""
  optimizer = make_optimizer(config)
  m = config.model

  def init() -> TrainState:
    key, init_key = jax.random.split(jax.random.PRNGKey(config.optim.seed))
    params = models.init_params(
        m.model, init_key, num_entities, num_relations, m.dim, m.init_scale, m.dtype,
        entity_bias=objective.bias_tables(config.objective.loss, config.objective.bias),
        rotation_init=m.rotation_init)
    if pad is not None:
      params = pad(params)
    return TrainState(params, optimizer.init(params), key, jnp.zeros((), jnp.int32))

  return init


def epoch_fn(config: Config, loss_fn: objective.LossFn, num_queries: int,
             constrain: Constrain | None = None):
  """The un-jitted epoch ``(state, train [Q, 3]) -> (state, mean_loss)`` and its step count.

  ``num_queries`` is the number of real training queries (the rows the permutation draws
  from; the array may hold padding rows beyond).
  """
  optimizer = make_optimizer(config)
  batch_size = config.optim.batch_size
  steps = num_queries // batch_size
  if steps == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {num_queries} training queries")
  grad_fn = jax.value_and_grad(loss_fn)
  constrain = constrain or (lambda batch, carry: (batch, carry))

  def epoch(state: TrainState, train: Array) -> tuple[TrainState, Array]:
    key, perm_key, step_key = jax.random.split(state.key, 3)
    order = jax.random.permutation(perm_key, num_queries)[:steps * batch_size]
    order = order.reshape(steps, batch_size)
    step_keys = jax.random.split(step_key, steps)

    def step(carry, xs):
      params, opt_state = carry
      idx, k = xs
      batch, _ = constrain(train[idx], None)
      loss, grads = grad_fn(params, batch, k)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      _, carry = constrain(None, (optax.apply_updates(params, updates), opt_state))
      return carry, loss

    (params, opt_state), step_losses = jax.lax.scan(step, (state.params, state.opt_state),
                                                    (order, step_keys))
    return TrainState(params, opt_state, key, state.step + steps), jnp.mean(step_losses)

  return epoch, steps
