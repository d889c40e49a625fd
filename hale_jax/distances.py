"""A model's squared distance: an elementwise map of the matmul ``q @ E.T`` and the norms.

Every path that compares queries with all entities (the plain, chunked and fused uniformity
LSE, AllNeg, ranking) computes the inner products ``<q_b, e_n>`` as one matmul and turns them,
with ``|q_b|^2`` and ``|e_n|^2``, into squared distances by :func:`distance_from_products`:

- Euclidean models (``curvature`` None): ``|q|^2 + |e|^2 - 2 <q, e>``, clamped at 0;
- hyperbolic models (``curvature [B]``, the curvature ``c_b > 0`` of each query's ball): the
  squared Poincaré distance between the query point and ``expmap0(e, c_b)``
  (:func:`hale_jax.hyperbolic.squared_distance`).

:func:`pair_squared_distances` is the same distance for paired rows (positives, sampled
negatives), computed from the difference vector instead of the expanded norm.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from hale_jax import hyperbolic

Array = jax.Array

MATMUL_MODES = ("float32", "tf32", "bf16")


def check_matmul(matmul: str) -> None:
  """Raises ValueError unless ``matmul`` is one of :data:`MATMUL_MODES`."""
  if matmul not in MATMUL_MODES:
    raise ValueError(f"unknown matmul mode {matmul!r}; choose one of {', '.join(MATMUL_MODES)}")


def inner_products(q: Array, e: Array, matmul: str) -> Array:
  """``q @ e.T`` (``[B, d] x [N, d] -> [B, N]``) with the inputs rounded as ``matmul`` says and
  the products summed in the inputs' own float type (float32, or float64 under x64).

  - ``float32``: exact products, ``Precision.HIGHEST``.  JAX's default precision lets a GPU of
    the Ampere generation or later round float32 matmul inputs to TF32 (10 mantissa bits), which
    would perturb small distances through the cancellation in ``|q|^2 + |e|^2 - 2 q.e``;
    HIGHEST rules that out.
  - ``tf32``: the inputs rounded to TF32 (``lax.reduce_precision``, 8 exponent and 10 mantissa
    bits), then the default precision: TF32 tensor cores on such GPUs, which multiply these
    inputs exactly; on a CPU the same numbers through float32 units.
  - ``bf16``: the inputs cast to bfloat16 (7 mantissa bits), float32 accumulation
    (``preferred_element_type``): bfloat16 tensor cores on a GPU.
  """
  check_matmul(matmul)
  out = jnp.result_type(q, e)
  if matmul == "float32":
    return jnp.dot(q, e.T, precision=jax.lax.Precision.HIGHEST)
  if matmul == "tf32":
    q, e = (jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10) for x in (q, e))
    return jnp.dot(q, e.T, preferred_element_type=out)
  return jnp.dot(q.astype(jnp.bfloat16), e.T.astype(jnp.bfloat16), preferred_element_type=out)  # bf16


def distance_from_products(products: Array, q2: Array, e2: Array,
                           curvature: Array | None = None) -> Array:
  """Squared distances ``[B, N]`` from ``products = <q_b, e_n> [B, N]``, ``q2 = |q_b|^2 [B, 1]``,
  ``e2 = |e_n|^2 [N]`` and, for hyperbolic models, ``curvature [B]`` (module docstring).

  The Euclidean clamp is a ``where`` rather than ``maximum``: XLA's CPU backend may compile
  ``max`` inside a loop to an instruction that turns NaN into 0 (fast min/max), and a NaN must
  stay NaN (ranking puts it last).
  """
  if curvature is None:
    d = q2 + e2[None, :] - 2.0 * products
    return jnp.where(d < 0, jnp.zeros_like(d), d)
  return hyperbolic.squared_distance(products, q2, e2[None, :], curvature[:, None])


def squared_distances(queries: ArrayLike, entities: ArrayLike, matmul: str = "float32",
                      curvature: ArrayLike | None = None) -> Array:
  """The squared distance of every query to every entity: ``[B, N]`` for ``queries [B, d]``
  and ``entities [N, d]`` (``curvature [B]`` for hyperbolic models, None for Euclidean ones).

  Euclidean: ``||q_b - e_n||^2`` in the matmul form ``|q|^2 + |e|^2 - 2 q.e``, clamped at 0
  against cancellation.  ``matmul`` (one of :data:`MATMUL_MODES`) sets the precision of
  ``q.e`` only; the squared norms and the map are always in the inputs' float type.  Ranking
  always uses the default, exact ``float32``; ``tf32``/``bf16`` are training options
  (``--matmul``).
  """
  q = jnp.asarray(queries)
  e = jnp.asarray(entities)
  q2 = jnp.sum(q * q, axis=-1, keepdims=True)
  e2 = jnp.sum(e * e, axis=-1)
  return distance_from_products(inner_products(q, e, matmul), q2, e2,
                                None if curvature is None else jnp.asarray(curvature))


def pair_squared_distances(queries: ArrayLike, targets: ArrayLike,
                           curvature: ArrayLike | None = None) -> Array:
  """The squared distance row by row: ``[...]`` for ``queries, targets [..., d]`` (and
  ``curvature [...]`` for hyperbolic models): ``||q - t||^2`` from the difference ``q - t``,
  or :func:`hale_jax.hyperbolic.pair_squared_distance`."""
  if curvature is not None:
    return hyperbolic.pair_squared_distance(queries, targets, curvature)
  diff = jnp.asarray(queries) - jnp.asarray(targets)
  return jnp.sum(diff * diff, axis=-1)
