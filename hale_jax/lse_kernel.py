"""Fused all-entity uniformity log-sum-exp: a Pallas kernel in the style of flash attention.

HaLE's uniformity term (``hale_jax.losses``) needs, for each of ``k`` sampled queries, a
log-sum-exp over all ``N`` entities::

    lse_j = LSE_i( b_i - h(c_j * ||q_j - e_i||^2) )          j < k,  i < N

:func:`uniformity_lse_fused` computes the same function as ``chunked.uniformity_lse`` (same
squared distances ``|q|^2 + |e|^2 - 2 q.e`` clamped at 0 with a ``where``, or the hyperbolic
models' map of ``q.e`` and the norms under each query's curvature, same ``matmul`` modes, same
activation and bias, same custom-VJP semantics), but as Pallas kernels: distances,
scale, activation, bias and the online log-sum-exp are fused, and **nothing of size [k, N] ever
leaves the kernel** (neither in the forward nor in the backward pass).  The XLA form
(``chunked``) bounds memory by scanning chunks, yet each chunk still round-trips a few ``[k,
chunk]`` blocks through device memory and runs ``ceil(N / chunk)`` sequential steps; the kernel
keeps each ``[block_k, block_n]`` tile in registers and spreads the entity axis over the GPU.

The kernels themselves, their grids and how ragged sizes are masked are described in
:mod:`hale_jax.lse_kernel_blocks`; this module chooses the layout of a call (block sizes,
padding, splits), checks the arguments and wires the kernels into a ``jax.custom_vjp``.

Cost per call (``K`` = ``k`` padded, ``D`` = ``d`` padded): forward ``2 K N D`` matmul FLOPs,
about ``K N (10 + cost of h)`` elementwise FLOPs and ``K N`` exponentials (plus those inside
``h``); the entity table (``4 N D`` bytes in float32) is read ``K / bk`` times, plus ``N`` bias
values; ``4 S K`` bytes are written.  Backward: twice the forward's elementwise work plus the
vjp of ``h``, ``8 K N D`` matmul FLOPs (the distances recomputed in each of the two kernels,
plus ``dq`` and ``de``), the table read ``K / bk + 1`` times, ``de`` (``4 N D`` bytes) written
once and ``4 S K D`` bytes of ``dq`` partials (8 MB at ``S = 512, K = 128, D = 32``).  At
``k = 103, N = 10^7, d = 32`` the forward reads the 1.3 GB table twice (``K / bk = 2``); XLA's
plain form writes 4.1 GB for each ``[k, N]`` float32 matrix it materialises.

Lowering.  ``interpret=None`` runs the kernels in Pallas's interpreter when the default
backend is the CPU (how the tests run; slow, for testing only: on a CPU train with
``chunked.uniformity_lse``) and compiles them otherwise, for the GPU through
Triton (``pl.pallas_call`` with Triton compiler parameters; only constructs that the Triton
lowering supports: static power-of-two tiles, ref slices ``ref[pl.ds(start, bn), :]``,
``lax.fori_loop``, ``lax.dot_general``).  The ``matmul`` modes map to Triton's input
precisions: ``float32`` is ``Precision.HIGHEST`` (IEEE fp32 FMAs, no TF32), ``tf32`` rounds the
operands to TF32 in the kernel (bit arithmetic, as ``lax.reduce_precision`` has no Triton
lowering) and multiplies on TF32 tensor cores, ``bf16`` casts the operands to bfloat16 with
float32 accumulation.  The backward matmuls use the same mode on both operands; autodiff of
the XLA form also rounds each chunk's matmul cotangent to the mode (the transpose of the
rounding), the kernel does not, so in ``tf32`` / ``bf16`` the gradients agree with
``chunked``'s to the mode's rounding.  float64 inputs work in interpret mode (CPU, x64).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import activations, distances, models
from hale_jax.lse_kernel_blocks import (MIN_BLOCK, Activation, Array, Plan, forward,
                                        grad_entities, grad_queries)

# Programs to aim for in the forward and dq kernels (an H100 has 132 SMs, several programs each).
_TARGET_PROGRAMS = 1024


def _next_pow2(x: int) -> int:
  """The smallest power of two >= ``x`` (1 for ``x <= 1``)."""
  return 1 << max(0, int(x) - 1).bit_length()


def _prev_pow2(x: int) -> int:
  """The largest power of two <= ``x`` (``x >= 1``)."""
  return 1 << (int(x).bit_length() - 1)


def _check_block(name: str, value: int | None) -> None:
  """Raises unless ``value`` is None or a power of two >= 16 (what Triton's tiles need)."""
  if value is None:
    return
  if (isinstance(value, bool) or not isinstance(value, int) or value < MIN_BLOCK
      or value & (value - 1)):
    raise ValueError(f"{name} must be a power of two >= {MIN_BLOCK}, got {value!r}")


def _make_plan(k: int, n: int, d: int, matmul: str, has_bias: bool, has_curvature: bool,
               block_k: int | None, block_n: int | None, num_splits: int | None,
               interpret: bool | None) -> Plan:
  """Block sizes, padding and splits for ``k`` queries, ``n`` entities, ``d`` features."""
  _check_block("block_k", block_k)
  _check_block("block_n", block_n)
  if num_splits is not None and (isinstance(num_splits, bool) or not isinstance(num_splits, int)
                                 or num_splits <= 0):
    raise ValueError(f"num_splits must be a positive int, got {num_splits!r}")
  dp = _next_pow2(max(d, MIN_BLOCK))
  # Defaults (untuned guesses): tiles of ~8K float32 values, smaller for wide d.
  block_k = block_k or (64 if dp <= 128 else 32)
  block_n = block_n or max(MIN_BLOCK, min(128, 8192 // dp))
  bk = min(block_k, _next_pow2(max(k, MIN_BLOCK)))
  kp = -(-k // bk) * bk
  np_ = max(n, MIN_BLOCK)
  bn = min(block_n, _prev_pow2(np_))
  blocks = -(-n // bn)
  splits = num_splits or max(1, -(-_TARGET_PROGRAMS // (kp // bk)))
  per_split = -(-blocks // min(splits, blocks))
  if interpret is None:
    interpret = jax.default_backend() == "cpu"
  return Plan(k, n, kp, np_, dp, bk, bn, blocks, per_split, -(-blocks // per_split), matmul,
              has_bias, has_curvature, bool(interpret), 4, 2)


# ----------------------------------------------------------------------------- custom VJP


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _fused(q, c, e, b, kappa, activation, plan):
  """Padded ``lse [kp]``; a custom VJP so that the backward pass runs the two gradient kernels
  instead of differentiating through ``pallas_call`` (which would build ``[k, N]`` arrays)."""
  return forward(q, c, e, b, kappa, activation, plan)


def _fused_fwd(q, c, e, b, kappa, activation, plan):
  """The forward kernel, keeping its inputs and ``lse`` for the backward kernels."""
  lse = forward(q, c, e, b, kappa, activation, plan)
  return lse, (q, c, e, b, kappa, lse)


def _fused_bwd(activation, plan, residuals, g):
  """``(dq, dc, de, db, d kappa)`` from the dq and de kernels, given ``g = d loss / d lse``."""
  q, c, e, b, kappa, lse = residuals
  dq, dc, dkappa = grad_queries(q, c, e, b, kappa, lse, g, activation, plan)
  de, db = grad_entities(q, c, e, b, kappa, lse, g, activation, plan)
  return dq, dc, de, db, dkappa


_fused.defvjp(_fused_fwd, _fused_bwd)


# ----------------------------------------------------------------------------- public API


def _pad_to(x: Array, shape: tuple[int, ...], value: float = 0.0) -> Array:
  """Pads ``x`` with ``value`` at the end of each axis to ``shape`` (no copy when it already
  fits)."""
  if x.shape == shape:
    return x
  return jnp.pad(x, [(0, t - s) for s, t in zip(x.shape, shape)], constant_values=value)


def _check_shapes(queries: Array, scale: Array, entities: Array, bias: Array | None,
                  curvature: Array | None) -> None:
  """Raises a ``ValueError`` naming the expected shapes, before any kernel is traced."""
  if queries.ndim != 2 or entities.ndim != 2 or queries.shape[1] != entities.shape[1]:
    raise ValueError(f"expected queries [k, d] and entities [N, d], got {queries.shape} and "
                     f"{entities.shape}")
  if queries.shape[0] == 0 or entities.shape[0] == 0:
    raise ValueError("queries and entities must not be empty")
  if scale.shape != queries.shape[:1]:
    raise ValueError(f"expected scale [k] = {queries.shape[:1]}, got {scale.shape}")
  if bias is not None and bias.shape != entities.shape[:1]:
    raise ValueError(f"expected entity_bias [N] = {entities.shape[:1]}, got {bias.shape}")
  if curvature is not None and curvature.shape != queries.shape[:1]:
    raise ValueError(f"expected curvature [k] = {queries.shape[:1]}, got {curvature.shape}")


def uniformity_lse_fused(queries: ArrayLike, scale: ArrayLike, entities: ArrayLike,
                         activation: activations.ActivationLike, matmul: str = "float32",
                         entity_bias: ArrayLike | None = None,
                         curvature: ArrayLike | None = None,
                         *, block_k: int | None = None,
                         block_n: int | None = None, num_splits: int | None = None,
                         interpret: bool | None = None) -> Array:
  """``lse_j = LSE_i(b_i - h(scale_j * ||q_j - e_i||^2))`` over all entities, in Pallas kernels.

  The same function as ``chunked.uniformity_lse(queries, scale, entities, activation, chunk,
  matmul, entity_bias, curvature)`` (see the module docstring for the cost and the ``matmul`` modes, and
  :mod:`hale_jax.lse_kernel_blocks` for the kernels), without any ``[k, N]`` array in device memory.

  Args:
    queries: ``[k, d]``, the sampled queries ``Phi(e_h, r)``.
    scale: ``[k]``, their relation scales ``c_r > 0``.
    entities: ``[N, d]``, the whole entity table.
    activation: ``h``, a name or an elementwise callable (``activations.get_activation(name)``);
      static, traced into the kernels together with its ``jax.vjp``.
    matmul: precision of the distance matmul, one of ``distances.MATMUL_MODES`` (static).
    entity_bias: ``[N]``, learned tail biases ``b_i``; None: 0.
    curvature: ``[k]``, the curvature of each query's ball for the hyperbolic models
      (``models.ball_curvature``); None: the Euclidean distance.
    block_k: queries per tile, a power of two >= 16 (static; default 64, 32 when ``d > 128``);
      clamped to ``k`` rounded up to a power of two.
    block_n: entities per tile, a power of two >= 16 (static; default ``min(128, 8192 / d)``);
      clamped to the largest power of two <= ``max(N, 16)``.
    num_splits: programs along the entity axis of the forward and dq kernels (static; default
      about ``1024 / ceil(k / block_k)``, at most the number of entity blocks).
    interpret: run the kernels in Pallas's interpreter; None: when ``jax.default_backend()`` is
      ``"cpu"``.

  Returns:
    ``[k]``, in the inputs' float type (float32, or float64 under x64; other types compute in
    float32).  Differentiable in reverse mode with respect to ``queries``, ``scale``,
    ``entities``, ``bias`` and ``curvature`` (``jax.custom_vjp``; forward mode is not defined).
  """
  queries, scale, entities = jnp.asarray(queries), jnp.asarray(scale), jnp.asarray(entities)
  bias = None if entity_bias is None else jnp.asarray(entity_bias)
  curvature = None if curvature is None else jnp.asarray(curvature)
  _check_shapes(queries, scale, entities, bias, curvature)
  distances.check_matmul(matmul)
  (k, d), n = queries.shape, entities.shape[0]
  optional = [x for x in (bias, curvature) if x is not None]
  dtype = jnp.result_type(queries, scale, entities, *optional)
  dtype = dtype if dtype in (jnp.float32, jnp.float64) else jnp.dtype(jnp.float32)
  plan = _make_plan(k, n, d, matmul, bias is not None, curvature is not None, block_k, block_n,
                    num_splits, interpret)
  q = _pad_to(queries.astype(dtype), (plan.kp, plan.dp))
  c = _pad_to(scale.astype(dtype), (plan.kp,))
  e = _pad_to(entities.astype(dtype), (plan.np_, plan.dp))
  b = None if bias is None else _pad_to(bias.astype(dtype), (plan.np_,))
  # Padding queries get curvature 1, where the hyperbolic map and its derivatives are finite.
  kappa = None if curvature is None else _pad_to(curvature.astype(dtype), (plan.kp,), 1.0)
  return _fused(q, c, e, b, kappa, activations.resolve(activation), plan)[:k]
