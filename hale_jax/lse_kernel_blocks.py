"""The Pallas kernels behind :func:`hale_jax.lse_kernel.uniformity_lse_fused`, and the
``pallas_call`` builders that launch them.

This module holds what runs on the device: the tile algebra (distances, scores and their
pullback on one ``[bk, bn]`` tile), the three kernel bodies and :func:`forward`,
:func:`grad_queries` and :func:`grad_entities`, which wrap each kernel in a ``pl.pallas_call``
over padded inputs.  The layout of a call (block sizes, padding, splits) arrives as a
:class:`Plan`; choosing it, checking arguments and wiring the custom VJP is
:mod:`hale_jax.lse_kernel`'s job (see its docstring for the cost and the ``matmul`` modes).

Kernels (``bk = block_k`` queries by ``bn = block_n`` entities per tile; the entity table is
read in place, never copied, when ``d`` is a power of two >= 16 and ``N >= 16``):

- forward, grid ``(k / bk, S)``: program ``(i, s)`` holds query block ``i`` and loops over its
  share (``1 / S``) of the entity blocks, keeping a running max ``m`` and sum ``s`` of the LSE
  on chip; it writes one partial LSE ``[bk]``.  The ``S`` partials ``[S, k]`` are combined by a
  tiny XLA log-sum-exp.  ``S`` ("splits", as in flash-decoding) gives the GPU enough programs
  although ``k`` (~100) fills one or two query blocks.
- backward ``d queries, d scale``, same grid: recomputes each tile's scores, forms the softmax
  weights ``p = exp(score - lse) * g``, pulls them back through the activation (``jax.vjp`` of
  ``h`` on the tile, so clamps and kinks are treated exactly as autodiff treats them) and the
  clamp, and accumulates ``dq [bk, d]`` and ``dc [bk]``; partials ``[S, k, d]``, ``[S, k]`` are
  summed in XLA.
- backward ``d entities, d bias``, grid ``(ceil(N / bn),)``: program ``t`` holds entity block
  ``t`` and loops over all query blocks, accumulating ``de [bn, d]`` and ``db [bn]``; each row
  is written by the program that owns it, so no atomics are needed.

Hyperbolic models (a ``curvature [k]`` input): the tile's distances are the elementwise map
:func:`hale_jax.hyperbolic.squared_distance` of the tile's inner products and norms, and its
pullback (``jax.vjp`` of the map on the tile) gives the cotangents of ``q.e``, ``|q|^2``,
``|e|^2`` and the curvature: ``dq = 2 q sum_i d|q|^2 + d(q.e) @ e``, ``de = 2 e sum_j d|e|^2 +
d(q.e)^T @ q``, and the dq kernel also accumulates ``d curvature [bk]``.  The Euclidean path
is the hand-written one above.

Ragged sizes.  Queries are padded to a multiple of ``bk`` (rows of zeros, scale 0, curvature
1; their outputs are dropped and their weights masked to 0).  The entity axis is not padded: as in
``chunked``, the last entity block is read as the final ``bn`` rows and the rows the previous
block already covered are masked (score ``-inf``, weight 0) in the forward and ``dq`` kernels;
the ``de`` kernel computes every row of that overlapping block in full, so the overlapped rows
are written twice with the same values.  Tables with fewer than 16 rows are padded with masked
zero rows, and ``d`` is zero-padded to a power of two >= 16 (Triton's ``tl.dot`` needs block
dimensions >= 16 and every block a power of two; zero columns change no distance).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu
from jax.typing import ArrayLike

from hale_jax import hyperbolic

Array = jax.Array
Activation = Callable[[ArrayLike], Array]

MIN_BLOCK = 16  # Triton's tl.dot needs every dimension >= 16


class Plan(NamedTuple):
  """Static layout of one call (hashable: a ``custom_vjp`` non-differentiable argument)."""
  k: int          # queries
  n: int          # entities
  kp: int         # queries padded to a multiple of bk
  np_: int        # entity rows after padding (max(n, 16))
  dp: int         # feature dimension padded to a power of two >= 16
  bk: int         # queries per tile
  bn: int         # entities per tile
  blocks: int     # entity blocks, ceil(n / bn)
  per_split: int  # entity blocks per program of the forward and dq kernels
  splits: int     # S, programs along the entity axis in those kernels
  matmul: str
  has_bias: bool
  has_curvature: bool  # a hyperbolic model: one curvature per query
  interpret: bool
  num_warps: int
  num_stages: int


# ----------------------------------------------------------------------------- tile algebra


def round_tf32(x: Array) -> Array:
  """``lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10)`` (TF32, round half to even).

  float32 goes through bit arithmetic, which Triton lowers (``reduce_precision`` it does not);
  other dtypes (float64, interpret mode only) through ``reduce_precision``.  Any shape.
  """
  if x.dtype != jnp.float32:
    return lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10)
  bits = lax.bitcast_convert_type(x, jnp.uint32)
  bits = (bits + (np.uint32(0xFFF) + ((bits >> 13) & 1))) & np.uint32(0xFFFFE000)
  return jnp.where(x != x, x, lax.bitcast_convert_type(bits, jnp.float32))


def _operand(x: Array, matmul: str) -> Array:
  """``x`` rounded as the ``matmul`` mode rounds a matmul input (``distances.inner_products``)."""
  if matmul == "tf32":
    return round_tf32(x)
  if matmul == "bf16":
    return x.astype(jnp.bfloat16)
  return x


def _dot(a: Array, b: Array, contract: tuple[int, int], matmul: str, out_dtype) -> Array:
  """2-d matmul of already-rounded operands contracting ``a``'s and ``b``'s ``contract`` axes."""
  precision = lax.Precision.HIGHEST if matmul == "float32" else lax.Precision.DEFAULT
  dims = (((contract[0],), (contract[1],)), ((), ()))
  return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=out_dtype)


def _rows(x: Array, matmul: str) -> tuple[Array, Array]:
  """``(|x_r|^2 [b], matmul operand [b, D])`` of a block of rows ``x [b, D]``."""
  return jnp.sum(x * x, axis=1), _operand(x, matmul)


def _raw_distances(q2: Array, rq: Array, e2: Array, re: Array, matmul: str) -> Array:
  """``|q|^2 + |e|^2 - 2 q.e`` before the clamp: ``[bk], [bk, D], [bn], [bn, D] -> [bk, bn]``."""
  return q2[:, None] + e2[None, :] - 2.0 * _dot(rq, re, (1, 1), matmul, q2.dtype)


def _clamp(raw: Array) -> Array:
  """``max(raw, 0)`` as a ``where`` (a NaN stays NaN)."""
  return jnp.where(raw < 0, 0.0, raw)


def _scores(dist: Array, c: Array, b: Array | None, activation: Activation) -> Array:
  """``b - h(c * dist)`` of a tile: ``[bk, bn], [bk], [bn] | None -> [bk, bn]``."""
  x = c[:, None] * dist
  scores = -activation(x)
  return scores if b is None else scores + b[None, :]


def _pullback(dist: Array, c: Array, b: Array | None, lse: Array, g: Array, mask: Array,
              activation: Activation) -> tuple[Array, Array, Array]:
  """Cotangents of one tile given ``d loss / d lse = g``.

  ``dist [bk, bn]`` (the clamped distances), ``c, lse, g [bk]``, ``b [bn] | None``, ``mask
  [bk, bn]`` (pairs that count).  Returns ``(d dist [bk, bn], d c per pair [bk, bn], p [bk,
  bn])`` with ``p = exp(score - lse) * g`` the cotangent of the scores (and of ``b``).
  """
  x = c[:, None] * dist
  hx, h_vjp = jax.vjp(activation, x)
  scores = -hx if b is None else b[None, :] - hx
  p = jnp.where(mask, jnp.exp(scores - lse[:, None]) * g[:, None], 0.0)
  (dx,) = h_vjp(-p)
  return dx * c[:, None], dx * dist, p


def _iota(size: int) -> Array:
  """``[0, 1, ..., size - 1]`` as int32, in a form the Triton lowering accepts."""
  return lax.broadcasted_iota(jnp.int32, (size,), 0)


def _window(t: Array, plan: Plan) -> tuple[Array, Array, Array]:
  """Entity block ``t``: ``(start, rows [bn], owned [bn])``.  The last block is read as the
  final ``bn`` rows; ``owned`` drops the rows an earlier block covered and padding rows."""
  nominal = t * plan.bn
  start = jnp.minimum(nominal, plan.np_ - plan.bn)
  rows = start + _iota(plan.bn)
  return start, rows, (rows >= nominal) & (rows < plan.n)


def _split_refs(refs, plan: Plan):
  """``(bias ref | None, curvature ref | None, output refs)`` from a kernel's trailing refs
  (the bias and the curvature are optional, in that order)."""
  refs = list(refs)
  bias = refs.pop(0) if plan.has_bias else None
  curvature = refs.pop(0) if plan.has_curvature else None
  return bias, curvature, refs


def _tile_distances(q2: Array, rq: Array, e2: Array, re: Array, kappa: Array | None,
                    matmul: str) -> Array:
  """The model's squared distances of a tile: Euclidean (clamped at 0) without ``kappa``."""
  if kappa is None:
    return _clamp(_raw_distances(q2, rq, e2, re, matmul))
  dot = _dot(rq, re, (1, 1), matmul, q2.dtype)
  return hyperbolic.tile_squared_distance(dot, q2, e2, kappa)


# ----------------------------------------------------------------------------- kernels


def _lse_kernel(q_ref, c_ref, e_ref, *refs, plan: Plan, activation: Activation):
  """Program ``(i, s)``: partial LSE ``[bk]`` of query block ``i`` over split ``s``."""
  b_ref, k_ref, (out_ref,) = _split_refs(refs, plan)
  q, c = q_ref[...], c_ref[...]
  kappa = None if k_ref is None else k_ref[...]
  q2, rq = _rows(q, plan.matmul)
  lo = pl.program_id(1) * plan.per_split
  hi = jnp.minimum(lo + plan.per_split, plan.blocks)

  def body(t, carry):
    m, s = carry
    start, _, owned = _window(t, plan)
    e2, re = _rows(e_ref[pl.ds(start, plan.bn), :], plan.matmul)
    b = None if b_ref is None else b_ref[pl.ds(start, plan.bn)]
    scores = _scores(_tile_distances(q2, rq, e2, re, kappa, plan.matmul), c, b, activation)
    scores = jnp.where(owned[None, :], scores, -jnp.inf)
    m_new = jnp.maximum(m, jnp.max(scores, axis=1))
    # Shift by 0 while nothing finite has been seen, so (-inf) - (-inf) never appears.
    shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)
    s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(scores - shift[:, None]), axis=1)
    return m_new, s

  init = (jnp.full((plan.bk,), -jnp.inf, q.dtype), jnp.zeros((plan.bk,), q.dtype))
  m, s = lax.fori_loop(lo, hi, body, init)
  out_ref[...] = jnp.where(m == -jnp.inf, 0.0, m) + jnp.log(s)


def _ball_tile_grads(q2: Array, rq: Array, e2: Array, re: Array, kappa: Array, c: Array,
                     b: Array | None, lse: Array, g: Array, mask: Array,
                     activation: Activation, matmul: str):
  """A hyperbolic tile's pullback: ``(d dot [bk, bn], d q2 [bk], d e2 [bn], d kappa [bk],
  d c per pair [bk, bn], p [bk, bn])`` (see :func:`_pullback`)."""
  dot = _dot(rq, re, (1, 1), matmul, q2.dtype)
  dist, pull = jax.vjp(hyperbolic.tile_squared_distance, dot, q2, e2, kappa)
  ddist, dc_pairs, p = _pullback(dist, c, b, lse, g, mask, activation)
  ddot, dq2, de2, dkappa = pull(ddist)
  return ddot, dq2, de2, dkappa, dc_pairs, p


def _dq_kernel(q_ref, c_ref, e_ref, lse_ref, g_ref, *refs, plan: Plan,
               activation: Activation):
  """Program ``(i, s)``: partial ``dq [bk, D]`` and ``dc [bk]`` (and ``d curvature [bk]``) of
  query block ``i`` over split ``s``."""
  b_ref, k_ref, outs = _split_refs(refs, plan)
  q, c, lse, g = q_ref[...], c_ref[...], lse_ref[...], g_ref[...]
  kappa = None if k_ref is None else k_ref[...]
  q2, rq = _rows(q, plan.matmul)
  lo = pl.program_id(1) * plan.per_split
  hi = jnp.minimum(lo + plan.per_split, plan.blocks)

  def body(t, carry):
    dq, dc, dk = carry
    start, _, owned = _window(t, plan)
    e = e_ref[pl.ds(start, plan.bn), :]
    e2, re = _rows(e, plan.matmul)
    b = None if b_ref is None else b_ref[pl.ds(start, plan.bn)]
    mask = jnp.broadcast_to(owned[None, :], (plan.bk, plan.bn))
    if kappa is not None:
      ddot, dq2, _, dkappa, dc_pairs, _ = _ball_tile_grads(q2, rq, e2, re, kappa, c, b, lse, g,
                                                           mask, activation, plan.matmul)
      # dist = f(q.e, |q|^2, |e|^2, kappa):  d q = 2 q d|q|^2 + d(q.e) @ e.
      dq_dot = _dot(_operand(ddot, plan.matmul), re, (1, 0), plan.matmul, q.dtype)
      dq = dq + 2.0 * q * dq2[:, None] + dq_dot
      return dq, dc + jnp.sum(dc_pairs, axis=1), dk + dkappa
    raw = _raw_distances(q2, rq, e2, re, plan.matmul)
    ddist, dc_pairs, _ = _pullback(_clamp(raw), c, b, lse, g, mask, activation)
    draw = jnp.where(raw < 0, 0.0, ddist)
    # raw = |q|^2 + |e|^2 - 2 q.e:  d q = 2 q sum_i draw - 2 draw @ e.
    dq_dot = _dot(_operand(draw, plan.matmul), re, (1, 0), plan.matmul, q.dtype)
    dq = dq + 2.0 * q * jnp.sum(draw, axis=1)[:, None] - 2.0 * dq_dot
    return dq, dc + jnp.sum(dc_pairs, axis=1), dk

  zeros = jnp.zeros((plan.bk,), q.dtype)
  init = (jnp.zeros((plan.bk, plan.dp), q.dtype), zeros, zeros)
  dq, dc, dk = lax.fori_loop(lo, hi, body, init)
  outs[0][...] = dq
  outs[1][...] = dc
  if plan.has_curvature:
    outs[2][...] = dk


def _de_kernel(q_ref, c_ref, e_ref, lse_ref, g_ref, *refs, plan: Plan,
               activation: Activation):
  """Program ``t``: ``de [bn, D]`` (and ``db [bn]``) of entity block ``t``, over all queries."""
  b_ref, k_ref, outs = _split_refs(refs, plan)
  start, rows, _ = _window(pl.program_id(0), plan)
  e = e_ref[pl.ds(start, plan.bn), :]
  e2, re = _rows(e, plan.matmul)
  b = None if b_ref is None else b_ref[pl.ds(start, plan.bn)]
  real_rows = rows < plan.n  # every row of the block, also those an earlier block owns

  def body(i, carry):
    de, db = carry
    block = pl.ds(i * plan.bk, plan.bk)
    q, c, lse, g = q_ref[block, :], c_ref[block], lse_ref[block], g_ref[block]
    q2, rq = _rows(q, plan.matmul)
    mask = ((i * plan.bk + _iota(plan.bk)) < plan.k)[:, None] & real_rows[None, :]
    if k_ref is not None:
      ddot, _, de2, _, _, p = _ball_tile_grads(q2, rq, e2, re, k_ref[block], c, b, lse, g, mask,
                                               activation, plan.matmul)
      # dist = f(q.e, |q|^2, |e|^2, kappa):  d e = 2 e d|e|^2 + d(q.e)^T @ q.
      de_dot = _dot(_operand(ddot, plan.matmul), rq, (0, 0), plan.matmul, e.dtype)
      return de + 2.0 * e * de2[:, None] + de_dot, db + jnp.sum(p, axis=0)
    raw = _raw_distances(q2, rq, e2, re, plan.matmul)
    ddist, _, p = _pullback(_clamp(raw), c, b, lse, g, mask, activation)
    draw = jnp.where(raw < 0, 0.0, ddist)
    de_dot = _dot(_operand(draw, plan.matmul), rq, (0, 0), plan.matmul, e.dtype)
    de = de + 2.0 * e * jnp.sum(draw, axis=0)[:, None] - 2.0 * de_dot
    return de, db + jnp.sum(p, axis=0)

  init = (jnp.zeros((plan.bn, plan.dp), e.dtype), jnp.zeros((plan.bn,), e.dtype))
  de, db = lax.fori_loop(0, plan.kp // plan.bk, body, init)
  outs[0][pl.ds(start, plan.bn), :] = de
  if plan.has_bias:
    outs[1][pl.ds(start, plan.bn)] = db


# ----------------------------------------------------------------------------- pallas calls


def _whole(shape: tuple[int, ...]) -> pl.BlockSpec:
  """The whole array as one block for every program (the kernel slices it itself)."""
  return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


def _pallas(kernel, plan: Plan, activation: Activation, grid, in_specs, out_specs, out_shape,
            name: str):
  """``kernel`` (given ``plan`` and ``activation``) as a ``pallas_call`` on ``grid``, with the
  plan's Triton settings, or interpreted when ``plan.interpret``."""
  return pl.pallas_call(
      functools.partial(kernel, plan=plan, activation=activation), grid=grid,
      in_specs=in_specs, out_specs=out_specs, out_shape=out_shape, interpret=plan.interpret,
      compiler_params=plgpu.CompilerParams(num_warps=plan.num_warps,
                                           num_stages=plan.num_stages),
      name=name)


def _optional(*arrays: Array | None) -> list[Array]:
  """The given ones of the optional inputs (bias, curvature), in order."""
  return [a for a in arrays if a is not None]


def _query_specs(plan: Plan, e: Array, b: Array | None, kappa: Array | None,
                 extra: int) -> list[pl.BlockSpec]:
  """In-specs of the (query block, split) grid: q, c, the table, ``extra`` [kp] vectors, b,
  the curvatures."""
  block = pl.BlockSpec((plan.bk,), lambda i, s: (i,))
  specs = [pl.BlockSpec((plan.bk, plan.dp), lambda i, s: (i, 0)), block, _whole(e.shape)]
  specs += [block] * extra
  return specs + ([] if b is None else [_whole(b.shape)]) + ([] if kappa is None else [block])


def forward(q: Array, c: Array, e: Array, b: Array | None, kappa: Array | None,
            activation: Activation, plan: Plan) -> Array:
  """Padded ``q [kp, D], c [kp], e [Np, D], b [Np] | None, kappa [kp] | None -> lse [kp]``."""
  out_shape = jax.ShapeDtypeStruct((plan.splits, plan.kp), q.dtype)
  parts = _pallas(_lse_kernel, plan, activation, (plan.kp // plan.bk, plan.splits),
                  _query_specs(plan, e, b, kappa, 0),
                  pl.BlockSpec((None, plan.bk), lambda i, s: (s, i)),
                  out_shape, "hale_uniformity_lse")(q, c, e, *_optional(b, kappa))
  m = jnp.max(parts, axis=0)
  shift = jnp.where(jnp.isneginf(m), jnp.zeros_like(m), m)
  return shift + jnp.log(jnp.sum(jnp.exp(parts - shift), axis=0))


def grad_queries(q, c, e, b, kappa, lse, g, activation, plan: Plan):
  """``(dq [kp, D], dc [kp], d kappa [kp] | None)``: the dq kernel's ``S`` partials, summed."""
  vector = jax.ShapeDtypeStruct((plan.splits, plan.kp), q.dtype)
  out_shape = [jax.ShapeDtypeStruct((plan.splits, plan.kp, plan.dp), q.dtype), vector]
  vector_spec = pl.BlockSpec((None, plan.bk), lambda i, s: (s, i))
  out_specs = [pl.BlockSpec((None, plan.bk, plan.dp), lambda i, s: (s, i, 0)), vector_spec]
  if kappa is not None:
    out_shape, out_specs = out_shape + [vector], out_specs + [vector_spec]
  outs = _pallas(_dq_kernel, plan, activation, (plan.kp // plan.bk, plan.splits),
                 _query_specs(plan, e, b, kappa, 2), out_specs, out_shape,
                 "hale_uniformity_lse_dq")(q, c, e, lse, g, *_optional(b, kappa))
  sums = [jnp.sum(x, axis=0) for x in outs]
  return sums[0], sums[1], (sums[2] if kappa is not None else None)


def grad_entities(q, c, e, b, kappa, lse, g, activation, plan: Plan):
  """``(de [Np, D], db [Np] | None)`` from the entity-block kernel."""
  in_specs = [_whole(x.shape) for x in (q, c, e, lse, g, *_optional(b, kappa))]
  out_shape = [jax.ShapeDtypeStruct(e.shape, e.dtype)]
  out_shape += [] if b is None else [jax.ShapeDtypeStruct(b.shape, b.dtype)]
  outs = _pallas(_de_kernel, plan, activation, (plan.blocks,), in_specs,
                 [_whole(s.shape) for s in out_shape], out_shape,
                 "hale_uniformity_lse_de")(q, c, e, lse, g, *_optional(b, kappa))
  return outs[0], (outs[1] if b is not None else None)
