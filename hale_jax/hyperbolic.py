"""Poincaré-ball maths of the hyperbolic models RotH, RefH and AttH (Chami et al., ACL 2020).

The ball of curvature ``-c`` (``c > 0``) is ``{x : c |x|^2 < 1}``.  The models keep every
parameter in the tangent space at the origin and map it to the ball with :func:`expmap0`; a
query is a point ``x`` of the ball, and an entity's tangent vector ``v`` is mapped to the
ball of the query's own curvature when it is compared with the query.  The squared distance

    d_c(x, y)^2 = (2 / sqrt(c) * artanh(sqrt(c) * |(-x) (+)_c y|))^2,     y = expmap0(v, c)

depends on ``x`` and ``v`` only through ``<x, v>``, ``|x|^2`` and ``|v|^2``:
:func:`squared_distance` is that elementwise map, so the all-pairs distance keeps the matmul
form ``x @ V.T`` of the Euclidean models (``hale_jax.distances``), and
:func:`pair_squared_distance` is the same distance for paired rows, from the vector
``(-x) (+)_c y`` itself (better conditioned for small distances, as the Euclidean pair form).

Clamps, as in KGEmb (``utils/hyperbolic.py``): norms at ``MIN_NORM = 1e-15``, the Möbius
denominator at ``MIN_NORM``, the argument of ``artanh`` at ``1 - 1e-5``, and :func:`project`
pulls points back inside ``|x| < (1 - eps) / sqrt(c)`` with ``eps`` = :data:`BALL_EPS` (4e-3
in float32, 1e-5 in float64).  Every clamp is a ``where``, so a NaN stays NaN (ranking puts it
last) and no clamped branch feeds a NaN or an infinity into a gradient.

Where this differs from KGEmb, and why:

- ``tanh(x) / x`` (the radius ratio of :func:`expmap0`) and ``artanh(x) / x`` are evaluated
  as functions of ``s = x^2``, by their Taylor series below ``s = 1e-2`` in float64 and ``s =
  0.1`` in float32.  Autodiff of such a quotient cancels catastrophically at small ``x`` (its
  relative error is about ``eps / s``: in float32 0.4% at KGEmb's 1e-3 initialisation in 32
  dimensions, 25% at ``s = 1e-6``), and ``sqrt`` has an infinite derivative at 0; the series
  are exact to the dtype's rounding where they are used.
- The distance is computed as ``4 n^2 * (artanh(sqrt(c) n) / (sqrt(c) n))^2`` with ``n = |(-x)
  (+)_c y|``, the same number as KGEmb's ``(2 / sqrt(c) * artanh(sqrt(c) n))^2``: its derivative
  in ``c`` is then free of the cancellation between ``4 / c`` and ``artanh^2`` that loses most
  float32 digits of the curvature's gradient at small distances.
- KGEmb computes ``artanh`` in float64 whatever the model's dtype; here it runs in the
  inputs' dtype, as ``0.5 * (log1p(z) - log1p(-z))``.
- The tail ``y = expmap0(v, c)`` is not projected (as in KGEmb's ``hyp_distance_multi_c``);
  at ``|y| = 1 / sqrt(c)`` the ``artanh`` clamp bounds the distance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

MIN_NORM = 1e-15
ARTANH_MAX = 1.0 - 1e-5
BALL_EPS = {jnp.dtype(jnp.float32): 4e-3, jnp.dtype(jnp.float64): 1e-5}

# tanh(x) / x and artanh(x) / x as power series in s = x^2.  Below s = 1e-2 these terms are
# exact to float64 rounding (the next ones are below 1e-16), below s = 0.1 to float32 rounding.
_TANH_RATIO = (1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0, -1382.0 / 155925.0,
               21844.0 / 6081075.0)
_ARTANH_RATIO = tuple(1.0 / (2 * k + 1) for k in range(8))


def _series_below(dtype) -> float:
  """Where the series take over from the quotients (module docstring)."""
  return 1e-2 if jnp.dtype(dtype) == jnp.float64 else 0.1


def _polynomial(coefficients: tuple[float, ...], s: Array) -> Array:
  """``sum_k coefficients[k] * s^k`` by Horner's rule."""
  out = jnp.full_like(s, coefficients[-1])
  for a in coefficients[-2::-1]:
    out = out * s + a
  return out


def tanh_ratio(s: ArrayLike) -> Array:
  """``tanh(x) / x`` at ``x = sqrt(s)``, ``s >= 0`` (1 at 0), elementwise, with accurate
  finite derivatives everywhere (module docstring)."""
  s = jnp.asarray(s)
  below = _series_below(s.dtype)
  small = s < below
  x = jnp.sqrt(jnp.where(small, below, s))
  series = _polynomial(_TANH_RATIO, jnp.where(small, s, 0.0))  # no overflow where unused
  return jnp.where(small, series, jnp.tanh(x) / x)


def artanh_ratio(s: ArrayLike) -> Array:
  """``artanh(min(x, ARTANH_MAX)) / x`` at ``x = sqrt(s)``, ``s >= 0`` (1 at 0), elementwise,
  with accurate finite derivatives everywhere."""
  s = jnp.asarray(s)
  below = _series_below(s.dtype)
  small = s < below
  x = jnp.sqrt(jnp.where(small, below, s))
  z = jnp.where(x > ARTANH_MAX, ARTANH_MAX, x)
  artanh = 0.5 * (jnp.log1p(z) - jnp.log1p(-z))
  series = _polynomial(_ARTANH_RATIO, jnp.where(small, s, 0.0))  # no overflow where unused
  return jnp.where(small, series, artanh / x)


def _squared_norm(x: Array) -> Array:
  return jnp.sum(x * x, axis=-1, keepdims=True)


def ball_eps(dtype) -> float:
  """The boundary margin of :func:`project` for ``dtype`` (float32's for other types)."""
  return BALL_EPS.get(jnp.dtype(dtype), BALL_EPS[jnp.dtype(jnp.float32)])


def project(x: ArrayLike, c: ArrayLike) -> Array:
  """``x [..., d]`` pulled back to radius ``(1 - eps) / sqrt(c)`` where it lies beyond it
  (``c [...]``, one curvature per row); other rows unchanged."""
  x = jnp.asarray(x)
  c = jnp.asarray(c)[..., None]
  x2 = _squared_norm(x)
  norm = jnp.sqrt(jnp.where(x2 < MIN_NORM * MIN_NORM, MIN_NORM * MIN_NORM, x2))
  max_norm = (1.0 - ball_eps(x.dtype)) / jnp.sqrt(c)
  return jnp.where(norm > max_norm, x / norm * max_norm, x)


def expmap0(u: ArrayLike, c: ArrayLike) -> Array:
  """The exponential map at the origin, ``tanh(sqrt(c) |u|) u / (sqrt(c) |u|)``, projected:
  tangent vectors ``u [..., d]`` to points of the ball of curvature ``-c [...]``."""
  u = jnp.asarray(u)
  c = jnp.asarray(c)
  return project(tanh_ratio(c[..., None] * _squared_norm(u)) * u, c)


def mobius_add(x: ArrayLike, y: ArrayLike, c: ArrayLike) -> Array:
  """Möbius addition ``x (+)_c y`` of ``x, y [..., d]`` in the ball of curvature ``-c [...]``::

      ((1 + 2c <x, y> + c |y|^2) x + (1 - c |x|^2) y) / (1 + 2c <x, y> + c^2 |x|^2 |y|^2)

  with the denominator clamped at ``MIN_NORM`` (KGEmb's ``mobius_add``).
  """
  x, y = jnp.asarray(x), jnp.asarray(y)
  c = jnp.asarray(c)[..., None]
  x2, y2, xy = _squared_norm(x), _squared_norm(y), jnp.sum(x * y, axis=-1, keepdims=True)
  num = (1.0 + 2.0 * c * xy + c * y2) * x + (1.0 - c * x2) * y
  denom = 1.0 + 2.0 * c * xy + c * c * x2 * y2
  return num / jnp.where(denom < MIN_NORM, MIN_NORM, denom)


def _distance_from_ball_norm(n2: Array, c: Array) -> Array:
  """``(2 / sqrt(c) * artanh(sqrt(c n2)))^2`` from ``n2 = |(-x) (+)_c y|^2`` (module
  docstring)."""
  ratio = artanh_ratio(c * n2)
  return 4.0 * n2 * ratio * ratio


def squared_distance(products: ArrayLike, x2: ArrayLike, v2: ArrayLike,
                     c: ArrayLike) -> Array:
  """``d_c(x, expmap0(v, c))^2`` elementwise from ``<x, v>``, ``|x|^2``, ``|v|^2`` and ``c``
  (any broadcastable shapes, e.g. ``[k, n], [k, 1], [1, n], [k, 1]``).

  With ``y = lam v``, ``lam = tanh(sqrt(c) |v|) / (sqrt(c) |v|)``: ``<x, y> = lam <x, v>``,
  ``|y|^2 = lam^2 |v|^2``, and ``(-x) (+)_c y = (c2 y - c1 x) / D`` with ``c1 = 1 - 2c <x, y> +
  c |y|^2``, ``c2 = 1 - c |x|^2``, ``D = 1 - 2c <x, y> + c^2 |x|^2 |y|^2``, so
  ``|(-x) (+)_c y|^2 = (c1^2 |x|^2 + c2^2 |y|^2 - 2 c1 c2 <x, y>) / D^2`` (the numerator
  clamped at 0 against cancellation).
  """
  p, x2, v2, c = (jnp.asarray(a) for a in (products, x2, v2, c))
  lam = tanh_ratio(c * v2)
  xy = lam * p
  y2 = lam * lam * v2
  c1 = 1.0 - 2.0 * c * xy + c * y2
  c2 = 1.0 - c * x2
  num = c1 * c1 * x2 + c2 * c2 * y2 - 2.0 * c1 * c2 * xy
  denom = 1.0 - 2.0 * c * xy + c * c * x2 * y2
  denom = jnp.where(denom < MIN_NORM, MIN_NORM, denom)
  return _distance_from_ball_norm(jnp.where(num < 0, 0.0, num) / (denom * denom), c)


def tile_squared_distance(products: ArrayLike, x2: ArrayLike, v2: ArrayLike,
                          c: ArrayLike) -> Array:
  """:func:`squared_distance` of a ``[k, n]`` tile from ``products [k, n]``, ``x2, c [k]`` and
  ``v2 [n]``, each broadcast to the tile first, so that its ``jax.vjp`` is elementwise too (the
  fused kernel's tiles, ``hale_jax.lse_kernel_blocks``)."""
  products = jnp.asarray(products)

  def full(a):
    return jnp.broadcast_to(a, products.shape)
  return squared_distance(products, full(jnp.asarray(x2)[:, None]),
                          full(jnp.asarray(v2)[None, :]), full(jnp.asarray(c)[:, None]))


def pair_squared_distance(x: ArrayLike, v: ArrayLike, c: ArrayLike) -> Array:
  """``d_c(x_b, expmap0(v_b, c_b))^2`` row by row for ``x, v [..., d]`` and ``c [...]``;
  returns ``[...]``.  The same function as :func:`squared_distance`, from the vector
  ``c2 y - c1 x`` rather than its expanded squared norm."""
  x, v = jnp.asarray(x), jnp.asarray(v)
  c = jnp.asarray(c)[..., None]
  y = tanh_ratio(c * _squared_norm(v)) * v
  x2, y2, xy = _squared_norm(x), _squared_norm(y), jnp.sum(x * y, axis=-1, keepdims=True)
  c1 = 1.0 - 2.0 * c * xy + c * y2
  c2 = 1.0 - c * x2
  w = c2 * y - c1 * x
  denom = 1.0 - 2.0 * c * xy + c * c * x2 * y2
  denom = jnp.where(denom < MIN_NORM, MIN_NORM, denom)
  return _distance_from_ball_norm(_squared_norm(w) / (denom * denom), c)[..., 0]
