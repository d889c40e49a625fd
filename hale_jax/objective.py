"""Training objectives: ``loss(params, batch, key) -> scalar`` for each strategy, by name.

:data:`BUILDERS` maps a loss name to a builder; :func:`make_loss` returns the loss of a run.
Every loss reads a batch ``[B, 3]`` of training queries ``(head, relation id, tail)``
(reciprocals included: a triple ``(h, r, t)`` and ``(t, r + |R|, h)`` are two queries),
transforms the heads (``hale_jax.models``) and scores each query against its tail with the
scaled squared distance ``x = c_r d^2(Phi(e_h, r), e_t)`` (``||Phi(e_h, r) - e_t||^2`` for the
Euclidean models; for the hyperbolic ones the Poincaré distance under the query's curvature,
which every uniformity form, AllNeg and the sampled negatives receive with the queries).

- ``hale``: paper Eq. 9 (``hale_jax.losses``).  The first ``k`` rows of the (shuffled) batch
  are the sampled queries of the uniformity term, whose log-sum-exp over all ``N`` entities is
  a pluggable :data:`Uniformity`: :func:`plain_uniformity` materialises the ``[k, N]`` block,
  :func:`chunked_uniformity` streams it in chunks (``hale_jax.chunked``: same value, bounded
  memory).
- the baselines of §4.1.2 (``hale_jax.baselines``) score with ``-h(x)``, so
  ``activation="identity"`` gives their plain form and any other activation their "HA +"
  variant (Table 5).  ``samneg``/``advneg`` draw uniform tail negatives from ``key`` (head
  corruption is the tail corruption of the reciprocal query, which each epoch also trains).

Every loss may add a weight penalty on the batch's entity rows (``regularizer``, ``reg_weight``:
``hale_jax.regularizers``) and drop out elements of the transformed heads while training
(``query_dropout``, from the step's key).

Entity biases (``bias``): KGEmb's score ``b_h + b_t - h(x)`` for samneg and advneg; HaLE and
allneg rank a query's candidate tails against each other, where ``b_h`` is a constant, so they
learn ``b_t`` alone (:func:`bias_tables`).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from hale_jax import (activations, baselines, chunked, distances, losses, lse_kernel, models,
                      regularizers)

Array = jax.Array
LossFn = Callable[[dict[str, Array], Array, Array], Array]
# (queries [k, d], scales [k], entities [N, d], tail biases [N] or None,
#  curvatures [k] or None) -> LSE [k]
Uniformity = Callable[[Array, Array, Array, Array | None, Array | None], Array]

# The losses of the HaLE paper (Fig. 2's strategies; benchmarks/paper_tables.py): a fixed list,
# not every registered loss.  LOSSES, the ``--loss`` choices, follow from BUILDERS below.
PAPER_LOSSES = ("hale", "samneg", "advneg", "allneg", "nonneg")
LSE_FORMS = ("auto", "fused")  # how HaLE's uniformity LSE is computed (choose_uniformity)
BIAS_MODES = ("auto", "learn", "none")
BIASED_LOSSES = ("samneg", "advneg", "allneg", "hale")  # may learn entity biases
TAIL_BIAS_LOSSES = ("allneg", "hale")  # rank a query's tails against each other: no b_h
REGULARIZERS = regularizers.REGULARIZERS


def bias_tables(loss: str, bias: str) -> str:
  """Which entity-bias tables a run learns (``models.init_params(entity_bias=...)``):
  ``"none"``, ``"tail"`` (hale, allneg) or ``"head_tail"`` (samneg, advneg).  ``auto`` learns
  them for samneg and advneg (KGEmb's SamNeg setting), ``learn`` for any biased loss."""
  learn = loss in ("samneg", "advneg") if bias == "auto" else bias == "learn"
  if not learn:
    return "none"
  return "tail" if loss in TAIL_BIAS_LOSSES else "head_tail"


def default_lse_chunk(backend: str | None = None) -> int:
  """The uniformity LSE's chunk when ``lse_chunk`` is None: 4096 on CPU, 65536 elsewhere.

  On a CPU, chunks that stay in cache make the step faster than the plain ``[k, N]`` block.  On
  a GPU a loop's control runs on the host, so chunking makes small graphs' steps host-bound;
  65536 keeps WN18RR, FB15k-237 and CoDEx plain and bounds a 1M-entity step's blocks
  (``benchmarks/RESULTS.md`` has the measurements).
  """
  return 4096 if (backend or jax.default_backend()) == "cpu" else 65536


def effective_lse_chunk(lse_chunk: int | None) -> int:
  """``lse_chunk``, or :func:`default_lse_chunk` where it is None."""
  return default_lse_chunk() if lse_chunk is None else lse_chunk


def activation_of(cfg: Any) -> Callable:
  """The activation ``h`` an objective config names, with its ``beta`` and ``gamma``."""
  return activations.get_activation(cfg.activation, cfg.beta, cfg.gamma)


def plain_uniformity(activation: Callable, matmul: str = "float32") -> Uniformity:
  """The LSE over the materialised ``[k, N]`` block of scaled distances."""
  def lse(queries, scale, entities, bias, curvature):
    sampled = scale[:, None] * distances.squared_distances(queries, entities, matmul, curvature)
    return losses.uniformity_terms(sampled, activation, bias)
  return lse


def chunked_uniformity(activation: Callable, matmul: str, chunk: int,
                       keep_mib: int = 0) -> Uniformity:
  """The LSE computed ``chunk`` entities at a time (``hale_jax.chunked.uniformity_lse``),
  keeping the ``[k, N]`` inner products for the backward pass where they take at most
  ``keep_mib`` MiB (decided from the shapes when traced)."""
  def lse(queries, scale, entities, bias, curvature):
    size = queries.shape[0] * entities.shape[0] * jnp.dtype(queries.dtype).itemsize
    return chunked.uniformity_lse(queries, scale, entities, activation, chunk, matmul, bias,
                                  curvature, keep_products=size <= keep_mib * 2**20)
  return lse


def fused_uniformity(activation: Callable, matmul: str) -> Uniformity:
  """The LSE in one Pallas kernel per pass (``hale_jax.lse_kernel``): no ``[k, N]`` block in
  device memory."""
  def lse(queries, scale, entities, bias, curvature):
    return lse_kernel.uniformity_lse_fused(queries, scale, entities, activation, matmul, bias,
                                           curvature)
  return lse


def choose_uniformity(cfg: Any, num_entities: int, allow_chunks: bool) -> tuple[Uniformity, str]:
  """The uniformity term of a run and its description.  With the table whole on one device
  (``allow_chunks``): the fused kernel when ``cfg.lse`` is ``fused`` and a GPU runs it,
  otherwise chunks when ``0 < chunk < N``; plain everywhere else."""
  if allow_chunks and getattr(cfg, "lse", "auto") == "fused" and jax.default_backend() == "gpu":
    return fused_uniformity(activation_of(cfg), cfg.matmul), "fused kernel"
  chunk = effective_lse_chunk(cfg.lse_chunk)
  if allow_chunks and 0 < chunk < num_entities:
    return (chunked_uniformity(activation_of(cfg), cfg.matmul, chunk,
                               getattr(cfg, "lse_keep_mib", 0)), f"chunks of {chunk}")
  return plain_uniformity(activation_of(cfg), cfg.matmul), "plain"


class Scored(NamedTuple):
  """A batch's queries and positive scores."""
  heads: jax.Array     # [B]
  tails: jax.Array     # [B]
  queries: jax.Array   # [B, d], Phi(e_h, r)
  scale: jax.Array     # [B], c_r (1 without rel_scale)
  pos: jax.Array       # [B], c_r * d^2(Phi(e_h, r), e_t)
  pos_bias: jax.Array | None     # [B], b_t of the positives (runs with tail biases)
  entity_bias: jax.Array | None  # [N], every b_t
  curvature: jax.Array | None    # [B], each query's ball (hyperbolic models)


def score_batch(params: dict[str, Array], batch: Array, model: str, rel_scale: bool,
                noise: Callable[[Array], Array] | None = None) -> Scored:
  """Transforms the heads of ``batch [B, 3]`` and scores each query against its tail;
  ``noise`` (query dropout) acts on the transformed heads first."""
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  queries = models.transform(model, params, heads, rels)
  if noise is not None:
    queries = noise(queries)
  scale = (models.relation_scale(params, rels) if rel_scale
           else jnp.ones(rels.shape, queries.dtype))
  curvature = models.ball_curvature(params, rels)
  pos = scale * distances.pair_squared_distances(queries, params["entity"][tails], curvature)
  biased = models.has_entity_bias(params)
  return Scored(heads, tails, queries, scale, pos,
                params["bias_tail"][tails] if biased else None,
                params["bias_tail"] if biased else None, curvature)


def query_noise(cfg: Any, key: Array | None) -> Callable[[Array], Array] | None:
  """The query dropout of a training step (``cfg.query_dropout``, drawn from ``key`` folded
  with 1, so a loss's other draws from ``key`` stay as they were), or None: rate 0, or no key
  (a loss evaluated outside training)."""
  rate = getattr(cfg, "query_dropout", 0.0)
  if not rate or key is None:
    return None
  return lambda q: regularizers.dropout(jax.random.fold_in(key, 1), q, rate)


def _first(curvature: Array | None, k: int) -> Array | None:
  """The curvatures of the first ``k`` queries (None for the Euclidean models)."""
  return None if curvature is None else curvature[:k]


def _hale(cfg: Any, model: str, num_sampled: int, uniformity: Uniformity) -> LossFn:
  h = activation_of(cfg)

  def loss(params, batch, key=None):
    s = score_batch(params, batch, model, cfg.rel_scale, query_noise(cfg, key))
    k = num_sampled
    return losses.combine(losses.alignment_terms(s.pos, h, cfg.pos_square),
                          uniformity(s.queries[:k], s.scale[:k], params["entity"],
                                     s.entity_bias, _first(s.curvature, k)),
                          cfg.lam, s.pos_bias)
  return loss


def _allneg(cfg: Any, model: str, num_sampled: int, uniformity: Uniformity) -> LossFn:
  del num_sampled, uniformity
  h = activation_of(cfg)

  def loss(params, batch, key=None):
    s = score_batch(params, batch, model, cfg.rel_scale, query_noise(cfg, key))
    d2 = distances.squared_distances(s.queries, params["entity"], cfg.matmul, s.curvature)
    scores = baselines.scores_from_scaled(s.scale[:, None] * d2, h)
    if s.entity_bias is not None:  # b_h is the same for every candidate: softmax ignores it
      scores = scores + s.entity_bias[None, :]
    return baselines.allneg_loss(scores, s.tails)
  return loss


def _positive_scores(params, s: Scored, h: Callable) -> Array:
  """``-h(x)`` of the positives, plus KGEmb's ``b_h + b_t`` when the run learns them."""
  score = baselines.scores_from_scaled(s.pos, h)
  if s.pos_bias is None:
    return score
  return score + params["bias_head"][s.heads] + s.pos_bias


def _sampled_negatives(cfg: Any, model: str, adversarial: bool) -> LossFn:
  h = activation_of(cfg)

  def loss(params, batch, key):
    s = score_batch(params, batch, model, cfg.rel_scale, query_noise(cfg, key))
    entity = params["entity"]
    pos_score = _positive_scores(params, s, h)
    negs = jax.random.randint(key, (batch.shape[0], cfg.num_negatives), 0, entity.shape[0])
    neg = distances.pair_squared_distances(s.queries[:, None, :], entity[negs],  # [B, m]
                                        None if s.curvature is None else s.curvature[:, None])
    neg_score = baselines.scores_from_scaled(s.scale[:, None] * neg, h)
    if s.pos_bias is not None:
      neg_score = neg_score + params["bias_head"][s.heads][:, None] + params["bias_tail"][negs]
    if adversarial:
      return baselines.advneg_loss(pos_score, neg_score, cfg.adv_temperature, cfg.margin)
    return baselines.samneg_loss(pos_score, neg_score, cfg.margin)
  return loss


def _samneg(cfg: Any, model: str, num_sampled: int, uniformity: Uniformity) -> LossFn:
  del num_sampled, uniformity
  return _sampled_negatives(cfg, model, adversarial=False)


def _advneg(cfg: Any, model: str, num_sampled: int, uniformity: Uniformity) -> LossFn:
  del num_sampled, uniformity
  return _sampled_negatives(cfg, model, adversarial=True)


def _nonneg(cfg: Any, model: str, num_sampled: int, uniformity: Uniformity) -> LossFn:
  del num_sampled, uniformity
  h = activation_of(cfg)

  def loss(params, batch, key=None):
    s = score_batch(params, batch, model, cfg.rel_scale, query_noise(cfg, key))
    return baselines.nonneg_loss(_positive_scores(params, s, h), params["entity"],
                                 cfg.nonneg_weight)
  return loss


BUILDERS: dict[str, Callable[[Any, str, int, Uniformity], LossFn]] = {
    "hale": _hale, "samneg": _samneg, "advneg": _advneg, "allneg": _allneg, "nonneg": _nonneg}
LOSSES = tuple(BUILDERS)
assert set(PAPER_LOSSES) <= set(LOSSES) and set(BIASED_LOSSES) <= set(LOSSES)


def make_loss(cfg: Any, model: str, num_sampled: int,
              uniformity: Uniformity | None = None) -> LossFn:
  """The loss ``(params, batch [B, 3], key) -> scalar`` that an objective config names.

  Args:
    cfg: an objective config (``hale_jax.config.ObjectiveConfig``: loss, activation, beta,
      gamma, lam, pos_square, rel_scale, num_negatives, adv_temperature, margin,
      nonneg_weight, matmul, and optionally regularizer, reg_weight, query_dropout).
    model: the model name (``models.MODEL_NAMES``).
    num_sampled: ``k``, the sampled queries of HaLE's uniformity term.
    uniformity: HaLE's LSE over all entities; default :func:`plain_uniformity`.
  """
  if cfg.loss not in BUILDERS:
    raise ValueError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
  uniformity = uniformity or plain_uniformity(activation_of(cfg), cfg.matmul)
  loss = BUILDERS[cfg.loss](cfg, models.canonical_model(model), num_sampled, uniformity)
  return regularized(loss, getattr(cfg, "regularizer", "none"), getattr(cfg, "reg_weight", 0.0))


def regularized(loss: LossFn, regularizer: str, weight: float) -> LossFn:
  """``loss`` plus ``weight`` times the batch mean of the regularizer's penalty on each query's
  head and tail rows (``hale_jax.regularizers``); ``loss`` itself when there is none."""
  if regularizer == "none" or not weight:
    return loss

  def total(params, batch, key=None):
    entity = params["entity"]
    penalty = regularizers.penalty_terms(regularizer, entity[batch[:, 0]], entity[batch[:, 2]])
    return loss(params, batch, key) + weight * jnp.mean(penalty)
  return total
