"""A Flax NNX module holding a KGE model's tables, for HaLE inside your own Flax code.

:class:`KGEmbedding` owns the entity and relation tables of one of the models
(``hale_jax.models``) as ``nnx.Param`` variables and applies the model's transform; its
:meth:`~KGEmbedding.loss` is the very objective the launcher trains (``hale_jax.objective``),
so a Flax user trains with ``nnx.Optimizer`` and gets the library's numbers::

    from flax import nnx
    import optax
    from hale_jax.nn import KGEmbedding

    model = KGEmbedding("RotL", num_entities=1000, num_relations=20, dim=32, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(5e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, batch):          # batch: [B, 3] (head, relation id, tail)
      loss, grads = nnx.value_and_grad(lambda m: m.loss(batch))(model)
      optimizer.update(model, grads)
      return loss

Relation ids run over ``2 * num_relations``: ``r`` and its reciprocal ``r + num_relations``
(head prediction ``(?, r, t)`` is the query ``(t, r + |R|, ?)``).
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.typing import ArrayLike

from hale_jax import activations, losses, models, objective
from hale_jax.config import ObjectiveConfig

Array = jax.Array


class KGEmbedding(nnx.Module):
  """The tables of a KGE model (``entity [N, d]``, the relation tables ``[2|R|, d]`` or
  ``[2|R|]``) as ``nnx.Param``, with the model's transform and the HaLE objective."""

  def __init__(self, model: str, num_entities: int, num_relations: int, dim: int, *,
               rngs: nnx.Rngs, init_scale: float = 1e-3, rotation_init: str = "uniform",
               entity_bias: str = "none"):
    self.model_name = models.canonical_model(model)
    tables = models.init_params(model, rngs.params(), num_entities, num_relations, dim,
                                init_scale, entity_bias=entity_bias,
                                rotation_init=rotation_init)
    self.table_names = tuple(sorted(tables))
    for name, value in tables.items():
      setattr(self, name, nnx.Param(value))

  def tables(self) -> dict[str, Array]:
    """The parameter dict of ``hale_jax.models`` (arrays), for any library function."""
    return {name: getattr(self, name)[...] for name in self.table_names}

  def __call__(self, heads: ArrayLike, relations: ArrayLike) -> Array:
    """The queries ``Phi(e_h, r)``: ``heads [B]``, ``relations [B]`` -> ``[B, d]``."""
    return models.transform(self.model_name, self.tables(), heads, relations)

  def relation_scale(self, relations: ArrayLike) -> Array:
    """``c_r > 0`` of ``relations [B]`` -> ``[B]``."""
    return models.relation_scale(self.tables(), relations)

  def distances(self, heads: ArrayLike, relations: ArrayLike,
                activation: activations.ActivationLike = activations.DEFAULT_ACTIVATION
                ) -> Array:
    """What ranking sorts for the queries ``(heads, relations, ?)``: ``[B, N]``, smaller is
    better (``models.ranking_distances``; ``activation``, the training's ``h``, matters only
    with entity biases)."""
    tables = self.tables()
    return models.ranking_distances(tables, models.transform(self.model_name, tables, heads,
                                                             relations), relations, activation)

  def loss(self, batch: ArrayLike, settings: ObjectiveConfig | None = None,
           key: Array | None = None, alpha: float | None = None) -> Array:
    """The training loss of ``batch [B, 3]`` under ``settings`` (default: HaLE with the
    paper's Hanon, lambda 0.3, alpha 0.1).  HaLE's uniformity term uses the first
    ``ceil(alpha * B)`` queries, so shuffle the batches; ``alpha`` defaults to
    ``settings.alpha`` (given, it replaces it); ``samneg``/``advneg`` need ``key``."""
    settings = settings or ObjectiveConfig()
    alpha = settings.alpha if alpha is None else alpha
    num_sampled = losses.num_sampled_queries(int(batch.shape[0]), alpha)
    loss_fn = objective.make_loss(settings, self.model_name, num_sampled)
    return loss_fn(self.tables(), jax.numpy.asarray(batch), key)
