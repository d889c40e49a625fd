"""What a run trains, built once: the optimiser, the loss, the initial state and its shardings.

:class:`Program` is built from a :class:`~hale_jax.config.Config` and a
:class:`~hale_jax.layout.Layout` in one place (``Program.build``), so that the optimiser is made
once and the initial state traced once; the layout only lays out (shardings, padding,
placement), and :mod:`hale_jax.step` holds the pure functions that this module jits with the
layout's shardings.

    program = Program.build(config, layout, data.num_relations)
    state = program.init_state()                  # born in its layout
    segment, steps = program.segment(num_queries)  # jitted, state and plan donated
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
import optax

from hale_jax import objective, step
from hale_jax.config import Config
from hale_jax.layout import Layout, put_global

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Program:
  """The parts of one run's computation that do not change while it trains.

  ``loss`` is ``(params, batch, key) -> scalar`` on the real entity rows of the layout's padded
  tables; ``lse_form`` says how its uniformity LSE is formed (``"plain"`` or ``"chunks of C"``:
  chunks only on one device, since slicing the entity axis would gather a row-sharded table);
  ``init`` creates the initial state (padded, to be jitted), ``shardings`` says where each part
  of that state lives."""
  config: Config
  layout: Layout
  num_relations: int
  optimizer: optax.GradientTransformation
  loss: objective.LossFn
  lse_form: str
  init: Callable[[], step.TrainState]
  shardings: step.TrainState

  @classmethod
  def build(cls, config: Config, layout: Layout, num_relations: int) -> "Program":
    optimizer = step.make_optimizer(config)
    loss_fn, form = step.make_loss(config, layout.num_entities,
                                   allow_chunks=layout.single_device)
    init = step.init_fn(config, layout.num_entities, num_relations, optimizer=optimizer,
                        pad=layout.pad_params)
    params = jax.eval_shape(init).params
    return cls(config, layout, num_relations, optimizer,
               lambda params, batch, key=None: loss_fn(layout.real_rows(params), batch, key),
               form, init, layout.state_shardings(optimizer, params))

  def init_state(self) -> step.TrainState:
    """The initial state created directly in its layout (``jit`` with ``out_shardings``): the
    entity table and its moments are born row-sharded, never whole on one device."""
    return jax.jit(self.init, out_shardings=self.shardings)()

  def _constrain(self) -> step.Constrain:
    carry, rows = (self.shardings.params, self.shardings.opt_state), self.layout.batch_sharding()

    def constrain(batch, state):
      if batch is not None:
        batch = jax.lax.with_sharding_constraint(batch, rows)
      if state is not None:
        state = jax.lax.with_sharding_constraint(state, carry)
      return batch, state
    return constrain

  def segment(self, num_queries: int) -> tuple[Callable, int]:
    """The jitted segment ``(state, plan, train, start, count, fresh) -> (state, plan, loss)``
    of ``step.segment_fn`` (state and plan donated; the plan replicated, the scalars global
    arrays from ``Layout.scalar``) for a training set from ``Layout.place_training_set``
    holding ``num_queries`` real queries, and the number of steps of an epoch."""
    segment, steps = step.segment_fn(self.config, self.loss, num_queries, self._constrain(),
                                     optimizer=self.optimizer)
    rep = self.layout.replicated()
    plan = step.EpochPlan(rep, rep, rep)
    train = self.layout.training_set_sharding()
    return jax.jit(segment, in_shardings=(self.shardings, plan, train, rep, rep, rep),
                   out_shardings=(self.shardings, plan, rep), donate_argnums=(0, 1)), steps

  def epoch(self, num_queries: int) -> tuple[Callable, int]:
    """The jitted epoch ``(state, train) -> (state, mean_loss)`` (state donated) and its number
    of steps: :meth:`segment` over a whole epoch in one call (what the benchmarks time)."""
    epoch, steps = step.epoch_fn(self.config, self.loss, num_queries, self._constrain(),
                                 optimizer=self.optimizer)
    return jax.jit(epoch, in_shardings=(self.shardings, self.layout.training_set_sharding()),
                   out_shardings=(self.shardings, self.layout.replicated()),
                   donate_argnums=0), steps

  def new_plan(self, num_queries: int) -> step.EpochPlan:
    """A zero plan for :meth:`segment`, replicated."""
    rep = self.layout.replicated()
    return jax.tree.map(lambda s: put_global(np.zeros(s.shape, s.dtype), rep),
                        step.empty_plan(self.config, num_queries))
