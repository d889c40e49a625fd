"""Bounded-memory uniformity term: distances, activation and log-sum-exp fused chunk by chunk.

The uniformity term of the HaLE loss (``hale_jax.losses``) needs, for each of the ``k`` sampled
queries, a log-sum-exp over *all* ``N`` entities::

    lse_j = LSE_i( -h(c_j * ||q_j - e_i||^2) )          j < k,  i < N

(for the hyperbolic models ``||q_j - e_i||^2`` is their squared distance, under the curvature
of each query's ball, ``hale_jax.distances``).

Written plainly (``distances.squared_distances`` then ``losses.hale_loss``) XLA materialises the
``[k, N]`` matrix of scaled distances, and under ``jax.grad`` keeps it (and its activation and
softmax) alive for the backward pass: ``O(k * N)`` memory, which dominates a training step once
``N`` reaches 10^5-10^6 entities.

:func:`uniformity_lse` computes the same numbers with ``O(k * chunk)`` working memory:

- forward: ``lax.scan`` over the entity axis in chunks of ``chunk`` rows; each step computes the
  ``[k, chunk]`` block of scores ``-h(c * d^2)`` and folds it into an online log-sum-exp (a
  running max ``m`` and a running sum ``s`` of ``exp(score - m)``, rescaled by ``exp(m_old -
  m_new)`` when the max grows).  When ``chunk`` does not divide ``N`` the entity axis behaves as
  if padded to ``ceil(N / chunk) * chunk`` rows masked to ``-inf`` (they contribute
  ``exp(-inf) = 0``), but without copying the table: the last chunk is read as the final
  ``chunk`` rows (``lax.dynamic_slice``) and its rows that the previous chunk already covered
  are the masked ones;
- backward (a ``jax.custom_vjp``): only ``queries``, ``scale``, ``entities`` (the biases and
  curvatures where given) and the ``[k]`` result are saved.  A second ``lax.scan`` recomputes each chunk's scores, forms its softmax
  block ``exp(score - lse)`` times the incoming cotangent (0 on masked rows), and pulls it back
  through ``jax.vjp`` of the per-chunk function (so any elementwise activation works, including
  its clamps and kinks, exactly as autodiff of the plain version treats them); ``d queries``,
  ``d scale`` (and ``d curvature``) are accumulated in the scan carry, ``d entities`` is added in place into the
  ``[N, d]`` gradient chunk by chunk (``lax.dynamic_update_slice``).

Squared distances use the matmul form of :func:`hale_jax.distances.squared_distances`
(``|q|^2 + |e|^2 - 2 q.e``, clamped at 0, or the hyperbolic map of ``q.e`` and the norms); the
per-chunk function calls that very function, so values and derivatives (including the clamps)
are those of the plain version up to floating-point summation order.

Memory: besides the inputs and the outputs (the ``[N, d]`` entity gradient among them), the
working set is a few ``[k, chunk]`` blocks: ``O(k * chunk)`` instead of ``O(k * N)``, in both the
forward and the backward pass (``tests/test_chunked.py`` checks it with
``compiled.memory_analysis()``).  The price is recomputing the distances once in the backward pass (about ``2 k N d`` extra
FLOPs) and a sequential loop of ``ceil(N / chunk)`` steps.

Where ``k * N`` is small enough to keep (``keep_products=True``; training decides with
``--lse_keep_mib``), the forward pass computes the ``[k, N]`` inner products ``<q_j, e_i>`` in
one matmul before its loop and keeps them, and the backward pass pulls each chunk back from
them: the head (norms, distance map, activation) is recomputed from the kept products and the
matmul is only transposed, never recomputed.  On the 2-core CPU this takes 4.5-9 % off a
WN18RR step (``benchmarks/step_ab.py``; docs/notes/2026-12-07-plus-round2-part2.md).  One
matmul over the whole table sums each ``<q_j, e_i>`` as the per-chunk matmuls do, but XLA may
fuse it differently, so the two can differ in the last bit of float32.
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import activations, distances, models

Array = jax.Array
Activation = Callable[[ArrayLike], Array]


def _activated(d2: Array, scale: Array, bias: Array | None, activation: Activation) -> Array:
  """``b_i - h(scale_j * d2_ji)``: ``[k, c], [k], [c] -> [k, c]`` (``b = 0`` when None)."""
  scores = -activation(scale[:, None] * d2)
  return scores if bias is None else scores + bias[None, :]


def _chunk_head(products: Array, queries: Array, scale: Array, entities: Array,
                bias: Array | None, curvature: Array | None, activation: Activation) -> Array:
  """The scores of one chunk from its inner products ``<q_j, e_i>`` ``[k, c]``: everything
  :func:`_chunk_scores` does after the matmul (norms, distance map, activation, bias)."""
  q2 = jnp.sum(queries * queries, axis=-1, keepdims=True)
  e2 = jnp.sum(entities * entities, axis=-1)
  return _activated(distances.distance_from_products(products, q2, e2, curvature), scale, bias,
                    activation)


def _chunk_scores(queries: Array, scale: Array, entities: Array, bias: Array | None,
                  curvature: Array | None, activation: Activation,
                  matmul: str = "float32") -> Array:
  """``b_i - h(scale_j * d^2(q_j, e_i))`` for one chunk (``b = 0`` when ``bias`` is None):
  ``[k, d], [k], [c, d], [c], [k] -> [k, c]``; the same numbers as
  ``distances.squared_distances`` followed by the activation."""
  return _activated(distances.squared_distances(queries, entities, matmul, curvature), scale,
                    bias, activation)


def _layout(num_entities: int, chunk: int) -> tuple[int, int]:
  """``(chunk, num_chunks)`` with ``chunk`` clamped to ``num_entities``."""
  if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk <= 0:
    raise ValueError(f"chunk must be a positive int, got {chunk!r}")
  if num_entities <= 0:
    raise ValueError("the entity table is empty")
  chunk = min(int(chunk), num_entities)
  return chunk, -(-num_entities // chunk)


def _chunk_start(index: Array, num_entities: int, chunk: int) -> tuple[Array, Array]:
  """Start row of chunk ``index`` and its validity mask ``[chunk]``.

  Chunk ``i`` nominally covers rows ``[i * chunk, (i + 1) * chunk)``.  The last one would run past
  ``N`` when ``chunk`` does not divide ``N``; instead of padding the table (an ``[N, d]`` copy) it
  starts at ``N - chunk`` and its rows below ``i * chunk``, already covered by the previous
  chunk, are masked out (score ``-inf``, cotangent 0), exactly as padding rows would be.
  """
  nominal = index * chunk
  start = jnp.minimum(nominal, num_entities - chunk)
  valid = start + jnp.arange(chunk) >= nominal
  return start, valid


def _entity_block(table: Array, start: Array, chunk: int, axis: int = 0) -> Array:
  """The ``chunk`` entities from ``start`` along ``table``'s entity ``axis`` (the kept
  ``[k, N]`` products have them on axis 1)."""
  return jax.lax.dynamic_slice_in_dim(table, start, chunk, axis=axis)


def _check_shapes(queries: Array, scale: Array, entities: Array,
                  curvature: Array | None = None) -> None:
  if queries.ndim != 2 or entities.ndim != 2 or queries.shape[1] != entities.shape[1]:
    raise ValueError(f"expected queries [k, d] and entities [N, d], got {queries.shape} and "
                     f"{entities.shape}")
  if scale.shape != queries.shape[:1]:
    raise ValueError(f"expected scale [k] = {queries.shape[:1]}, got {scale.shape}")
  if curvature is not None and curvature.shape != queries.shape[:1]:
    raise ValueError(f"expected curvature [k] = {queries.shape[:1]}, got {curvature.shape}")


def _lse_forward(queries: Array, scale: Array, entities: Array, bias: Array | None,
                 curvature: Array | None, activation: Activation, chunk: int,
                 matmul: str, keep: bool) -> tuple[Array, Array | None]:
  """``([k] lse, products)``: ``products`` the ``[k, N]`` inner products when ``keep`` (one
  matmul before the loop, each chunk a slice of it), else None (each chunk its own matmul)."""
  n = entities.shape[0]
  chunk, num_chunks = _layout(n, chunk)
  k = queries.shape[0]
  dtype = jnp.result_type(queries.dtype, scale.dtype, entities.dtype)
  neg_inf = jnp.array(-jnp.inf, dtype)
  kept = distances.inner_products(queries, entities, matmul) if keep else None

  def step(carry, index):
    m, s = carry
    start, ok = _chunk_start(index, n, chunk)
    block = _entity_block(entities, start, chunk)
    bias_block = None if bias is None else _entity_block(bias, start, chunk)
    scores = (_chunk_scores(queries, scale, block, bias_block, curvature, activation, matmul)
              if kept is None else
              _chunk_head(_entity_block(kept, start, chunk, axis=1), queries, scale, block,
                          bias_block, curvature, activation))
    scores = jnp.where(ok[None, :], scores, neg_inf)
    m_new = jnp.maximum(m, jnp.max(scores, axis=-1))
    # Shift by 0 while nothing finite has been seen, so (-inf) - (-inf) never appears.
    shift = jnp.where(jnp.isneginf(m_new), jnp.zeros_like(m_new), m_new)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(scores - shift[:, None]), axis=-1)
    return (m_new, s), None

  init = (jnp.full((k,), -jnp.inf, dtype), jnp.zeros((k,), dtype))
  (m, s), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
  shift = jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)
  return shift + jnp.log(s), kept


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _uniformity_lse(queries, scale, entities, bias, curvature, activation, chunk, matmul, keep):
  return _lse_forward(queries, scale, entities, bias, curvature, activation, chunk, matmul,
                      keep)[0]


def _uniformity_lse_fwd(queries, scale, entities, bias, curvature, activation, chunk, matmul,
                        keep):
  lse, products = _lse_forward(queries, scale, entities, bias, curvature, activation, chunk,
                               matmul, keep)
  return lse, (queries, scale, entities, bias, curvature, lse, products)


def _chunk_pullback(queries, scale, block, bias_block, curvature, products, activation, matmul):
  """``(scores [k, c], pullback)`` of one chunk's scores with respect to ``(queries, scale,
  block, bias_block, curvature)``.  With ``products`` kept from the forward pass the matmul is
  not recomputed: the head is pulled back from them and the matmul is only transposed (its
  forward output is unused, so XLA drops it)."""
  if products is None:
    return jax.vjp(functools.partial(_chunk_scores, activation=activation, matmul=matmul),
                   queries, scale, block, bias_block, curvature)
  scores, head_pullback = jax.vjp(functools.partial(_chunk_head, activation=activation),
                                  products, queries, scale, block, bias_block, curvature)
  _, matmul_pullback = jax.vjp(functools.partial(distances.inner_products, matmul=matmul),
                               queries, block)

  def pullback(cotangent):
    dp, dq, ds, de, db, dk = head_pullback(cotangent)
    dq_m, de_m = matmul_pullback(dp)
    return dq_m + dq, ds, de_m + de, db, dk
  return scores, pullback


def _uniformity_lse_bwd(activation, chunk, matmul, keep, residuals, g):
  del keep  # the residuals say it: products is None unless kept
  queries, scale, entities, bias, curvature, lse, products = residuals
  n = entities.shape[0]
  chunk, num_chunks = _layout(n, chunk)

  def step(carry, index):
    dq, ds, de, db, dk = carry
    start, ok = _chunk_start(index, n, chunk)
    block = _entity_block(entities, start, chunk)
    bias_block = None if bias is None else _entity_block(bias, start, chunk)
    chunk_products = (None if products is None
                      else _entity_block(products, start, chunk, axis=1))
    scores, pullback = _chunk_pullback(queries, scale, block, bias_block, curvature,
                                       chunk_products, activation, matmul)
    # d lse_j / d score_ji = softmax_ji = exp(score_ji - lse_j); masked rows get 0.
    weights = jnp.where(ok[None, :], jnp.exp(scores - lse[:, None]), 0.0)
    dq_c, ds_c, de_c, db_c, dk_c = pullback((g[:, None] * weights).astype(scores.dtype))
    # Accumulate in place into the [N, d] gradient (masked rows add exact zeros).
    de = jax.lax.dynamic_update_slice_in_dim(de, _entity_block(de, start, chunk) + de_c, start,
                                             axis=0)
    if bias is not None:
      db = jax.lax.dynamic_update_slice_in_dim(db, _entity_block(db, start, chunk) + db_c,
                                               start, axis=0)
    return (dq + dq_c, ds + ds_c, de, db, None if curvature is None else dk + dk_c), None

  init = (jnp.zeros_like(queries), jnp.zeros_like(scale), jnp.zeros_like(entities),
          None if bias is None else jnp.zeros_like(bias),
          None if curvature is None else jnp.zeros_like(curvature))
  (dq, ds, de, db, dk), _ = jax.lax.scan(step, init, jnp.arange(num_chunks))
  return dq, ds, de, db, dk


_uniformity_lse.defvjp(_uniformity_lse_fwd, _uniformity_lse_bwd)


def uniformity_lse(queries: ArrayLike, scale: ArrayLike, entities: ArrayLike,
                   activation: activations.ActivationLike, chunk: int = 4096,
                   matmul: str = "float32", entity_bias: ArrayLike | None = None,
                   curvature: ArrayLike | None = None, keep_products: bool = False) -> Array:
  """``lse_j = LSE_i(b_i - h(scale_j * d^2(q_j, e_i)))`` over all entities, chunk by chunk.

  Args:
    queries: ``[k, d]``, the sampled queries ``Phi(e_h, r)``.
    scale: ``[k]``, their relation scales ``c_r > 0``.
    entities: ``[N, d]``, the whole entity table.
    activation: ``h``, a name (``"hanon"``) or an elementwise callable (``hale_jax.halin``,
      ``activations.get_activation("hanon", beta, gamma)``); ``None``: Hanon.  Static under
      ``jit`` (a new callable object means a new trace).
    chunk: entities per block (static); clamped to ``N``.  Working memory is ``O(k * chunk)``
      in both the forward and the backward pass.
    matmul: precision of the distance matmul, one of ``distances.MATMUL_MODES`` (static); the
      log-sum-exp itself always accumulates in the inputs' float type.
    entity_bias: ``[N]``, learned tail biases ``b_i`` (``hale_jax.losses``, "Tail biases");
      None: 0.
    curvature: ``[k]``, the curvature of each query's ball for the hyperbolic models
      (``models.ball_curvature``); None: the Euclidean distance.
    keep_products: keep the ``[k, N]`` inner products of the forward pass for the backward pass
      (static), which then skips the matmul that recomputes them: a faster backward pass for
      ``k * N`` more elements of memory (training keeps them where they fit in
      ``--lse_keep_mib``; ``objective.chunked_uniformity``).  The same numbers either way, up to float32 rounding.

  Returns:
    ``[k]``, equal to ``logsumexp(b[None, :] - h(scale[:, None] *
    distances.squared_distances(queries, entities, matmul, curvature)), axis=-1)`` up to
    summation order.  Differentiable in reverse mode (``grad``, ``vjp``) with respect to
    ``queries``, ``scale``, ``entities``, ``bias`` and ``curvature``; forward mode (``jvp``) is
    not defined (``jax.custom_vjp``).
  """
  queries, scale, entities = jnp.asarray(queries), jnp.asarray(scale), jnp.asarray(entities)
  curvature = None if curvature is None else jnp.asarray(curvature)
  _check_shapes(queries, scale, entities, curvature)
  bias = None if entity_bias is None else jnp.asarray(entity_bias)
  if bias is not None and bias.shape != entities.shape[:1]:
    raise ValueError(f"expected entity_bias [N] = {entities.shape[:1]}, got {bias.shape}")
  _layout(entities.shape[0], chunk)  # validates chunk early, with a clear message
  distances.check_matmul(matmul)
  return _uniformity_lse(queries, scale, entities, bias, curvature,
                         activations.resolve(activation), int(chunk), matmul,
                         bool(keep_products))


def __getattr__(name: str):
  """Names this module no longer has: an AttributeError naming what replaced them."""
  if name == "hale_loss_chunked":
    raise AttributeError(
        "hale_jax.chunked.hale_loss_chunked was removed in 0.1.0; use losses.combine("
        "losses.alignment_terms(pos_scaled, activation, pos_square), "
        "chunked.uniformity_lse(queries, scale, entities, activation, chunk), lam) (with "
        "pos_bias=..., entity_bias=... for tail biases), as hale_jax.objective does")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
