"""The training state and the jit-compiled segment: a ``lax.while_loop`` over optax steps.

Training runs an epoch in segments: compiled calls that each run a stretch of the epoch's
steps on the device (:func:`segment_fn`; a small graph's epoch is one call, a large one's a
call every few seconds, so the host can act in between: ``hale_jax.loop``).  The
reciprocal-augmented training set is shuffled on the device from the state's key once per
epoch (kept in an :class:`EpochPlan` between its segments) and the key moves on when the
epoch ends, so the numbers do not depend on how an epoch is cut.  Each step takes
``batch_size`` training queries (a triple ``(h, r, t)`` and its reciprocal ``(t, r + |R|, h)``
are separate queries).  The last ``2T mod batch_size`` queries of each epoch's permutation are
dropped, so every step has the same shape; the permutation changes every epoch.

Nothing here knows where arrays live: :mod:`hale_jax.program` jits these functions with the
shardings of its layout and may constrain the batch and the carry through ``constrain``.
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
  """Everything training reads and writes: parameters, optimiser state, PRNG key (of the epoch
  under way), step count."""
  params: dict[str, Array]
  opt_state: Any
  key: Array
  step: Array


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """The run's optimiser (``hale_jax.optim.make_optimizer``)."""
  o = config.optim
  return optim.make_optimizer(o.optimizer, o.learning_rate, o.lr_schedule,
                              warmup_epochs=o.warmup_epochs, ema_decay=o.ema_decay)


def learning_rate_at(config: Config, epoch: int, train_seconds: float) -> float:
  """The rate of the epoch after ``epoch`` epochs and ``train_seconds`` of training."""
  return optim.learning_rate_at(config.optim.lr_schedule, config.optim.learning_rate, epoch,
                                train_seconds, config.budget.max_epochs,
                                config.budget.max_seconds, config.optim.warmup_epochs)


def evaluated_params(state: TrainState) -> dict[str, Array]:
  """The parameters that validation and test rank: the optimiser's parameter average where the
  run keeps one (``--ema_decay``), else the trained parameters."""
  average = optim.averaged_params(state.opt_state)
  return state.params if average is None else average


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


def init_fn(config: Config, num_entities: int, num_relations: int, *,
            optimizer: optax.GradientTransformation | None = None,
            pad: Callable[[dict[str, Array]], dict[str, Array]] | None = None
            ) -> Callable[[], TrainState]:
  """The function that creates the initial state (to be jitted): parameters from
  ``config.optim.seed``, optionally padded by ``pad`` (``hale_jax.layout``), and the state of
  ``optimizer`` (default: :func:`make_optimizer`).  One function for every layout, so each
  starts from the same bits."""
  optimizer = optimizer or make_optimizer(config)
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


class EpochPlan(flax.struct.PyTreeNode):
  """One epoch's draw, kept on the device while its segments run: the order of the training
  queries ``[steps, batch]``, each step's PRNG key ``[steps, ...]`` and each step's loss
  ``[steps]`` (written as the steps run; the epoch's loss is their mean)."""
  order: Array
  keys: Array
  losses: Array


def _draw(key: Array, num_queries: int, steps: int, batch_size: int
          ) -> tuple[Array, Array, Array]:
  """``(next key, order [steps, batch], step keys)`` of the epoch that starts at ``key``."""
  key, perm_key, step_key = jax.random.split(key, 3)
  order = jax.random.permutation(perm_key, num_queries)[:steps * batch_size]
  return key, order.reshape(steps, batch_size), jax.random.split(step_key, steps)


def segment_fn(config: Config, loss_fn: objective.LossFn, num_queries: int,
               constrain: Constrain | None = None, *,
               optimizer: optax.GradientTransformation | None = None):
  """The un-jitted segment ``(state, plan, train [Q, 3], start, count, fresh) -> (state, plan,
  loss)`` and the number of steps of an epoch.

  A segment runs steps ``[start, start + count)`` of the epoch that starts at ``state.key``
  (a ``lax.while_loop`` with a dynamic trip count, so any count runs the same compiled code).
  With ``fresh`` it first draws the epoch's order and step keys into ``plan`` (the first
  segment of an epoch, or the first after a restore: the draw depends on ``state.key`` alone).
  The key moves on only when the epoch's last step has run, so an epoch in any number of
  segments is the same computation as in one.  ``loss`` is the mean loss of the epoch's steps
  so far (at the epoch's end, the mean of all its steps).  ``num_queries`` is the number of
  real training queries (the rows the permutation draws from; the array may hold padding rows
  beyond).  ``optimizer`` defaults to :func:`make_optimizer`.
  """
  optimizer = optimizer or make_optimizer(config)
  batch_size = config.optim.batch_size
  steps = num_queries // batch_size
  if steps == 0:
    raise ValueError(f"batch_size {batch_size} exceeds the {num_queries} training queries")
  grad_fn = jax.value_and_grad(loss_fn)
  constrain = constrain or (lambda batch, carry: (batch, carry))

  def segment(state: TrainState, plan: EpochPlan, train: Array, start: Array, count: Array,
              fresh: Array | bool) -> tuple[TrainState, EpochPlan, Array]:
    def draw(plan):
      _, order, keys = _draw(state.key, num_queries, steps, batch_size)
      return plan.replace(order=order, keys=keys)

    plan = draw(plan) if fresh is True else jax.lax.cond(fresh, draw, lambda p: p, plan)
    stop = start + count

    def step(carry):
      i, params, opt_state, losses = carry
      batch, _ = constrain(train[plan.order[i]], None)
      loss, grads = grad_fn(params, batch, plan.keys[i])
      updates, opt_state = optimizer.update(grads, opt_state, params)
      _, (params, opt_state) = constrain(None, (optax.apply_updates(params, updates), opt_state))
      return i + 1, params, opt_state, losses.at[i].set(loss)

    _, params, opt_state, losses = jax.lax.while_loop(
        lambda carry: carry[0] < stop, step,
        (start, state.params, state.opt_state, plan.losses))
    end = stop == steps
    key = jnp.where(end, jax.random.split(state.key, 3)[0], state.key)
    so_far = jnp.sum(jnp.where(jnp.arange(steps) < stop, losses, 0)) / jnp.maximum(stop, 1)
    loss = jnp.where(end, jnp.mean(losses), so_far)
    return (TrainState(params, opt_state, key, state.step + count),
            plan.replace(losses=losses), loss)

  return segment, steps


def empty_plan(config: Config, num_queries: int) -> EpochPlan:
  """Shapes and dtypes of the plan of ``segment_fn`` (``jax.ShapeDtypeStruct`` leaves)."""
  batch_size = config.optim.batch_size
  steps = num_queries // batch_size
  _, order, keys = jax.eval_shape(lambda k: _draw(k, num_queries, steps, batch_size),
                                  jax.random.PRNGKey(0))
  return EpochPlan(order, keys, jax.ShapeDtypeStruct((steps,), jnp.dtype(config.model.dtype)))


def epoch_fn(config: Config, loss_fn: objective.LossFn, num_queries: int,
             constrain: Constrain | None = None, *,
             optimizer: optax.GradientTransformation | None = None):
  """The un-jitted whole epoch ``(state, train [Q, 3]) -> (state, mean_loss)`` and its step
  count: the segment of :func:`segment_fn` over all steps (what the benchmarks time)."""
  segment, steps = segment_fn(config, loss_fn, num_queries, constrain, optimizer=optimizer)
  shapes = empty_plan(config, num_queries)

  def epoch(state: TrainState, train: Array) -> tuple[TrainState, Array]:
    plan = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    state, _, loss = segment(state, plan, train, jnp.int32(0), jnp.int32(steps), True)
    return state, loss

  return epoch, steps
