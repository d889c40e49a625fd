"""Hardness-aware activations h(x) applied to scaled squared distances.

Every function maps ``ArrayLike -> Array`` elementwise (any shape in, same shape out),
is jittable, and is free of NaN in value and gradient for every finite float input.
In HaLE the input is ``x = c_r * ||Phi(e, r) - e'||^2 >= 0`` and the triple score is
``f = -h(x)`` (paper Eq. 8).

- ``hanon``    Eq. 6, ``1 / (1/gamma + exp(-beta (x - 0.5)))``; defaults beta=3, gamma=10 (Fig. 1).
               Computed in the overflow-free form ``gamma * sigmoid(beta (x - 0.5) - log gamma)``.
- ``halin``    Eq. 7, ``2x`` below 1, ``min(beta (x - 1) + 2, gamma)`` from 1; defaults beta=10,
               gamma=10 (Fig. 1).  For x <= 0 (outside the paper's domain) it stays ``2x``.
- ``xexp``     ``x e^x`` (RotL's phi).  The input is clipped at 80 (``80 e^80 ~ 4e36``), so large
               inputs give a large finite value and a zero gradient instead of inf (and NaN
               through the softmax).
- ``linear2x`` ``2x``: the temperature trick (tau = 1/2).
- ``arctanh``  ``2 artanh(x)`` (the hyperbolic models' nonlinearity).  Its domain is (-1, 1);
               the input is clipped to ``[-1 + 1e-6, 1 - 1e-6]``, so values stay finite and the
               gradient is zero outside the domain.
- ``identity`` ``x``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

_XEXP_MAX_EXPONENT = 80.0
_ARCTANH_EPS = 1e-6


def hanon(x: ArrayLike, beta: float = 3.0, gamma: float = 10.0) -> Array:
  """Hanon (Eq. 6): a sigmoid bounded above by ``gamma``; same shape as ``x``."""
  x = jnp.asarray(x)
  return gamma * jax.nn.sigmoid(beta * (x - 0.5) - jnp.log(gamma))


def halin(x: ArrayLike, beta: float = 10.0, gamma: float = 10.0) -> Array:
  """Halin (Eq. 7): piecewise linear, slope 2 then ``beta``, cut at ``gamma``."""
  x = jnp.asarray(x)
  upper = jnp.minimum(beta * (x - 1.0) + 2.0, gamma)
  return jnp.where(x < 1.0, 2.0 * x, upper)


def xexp(x: ArrayLike, beta: float = 0.0, gamma: float = 0.0) -> Array:
  """``x e^x`` with ``x`` clipped at 80; ``beta`` and ``gamma`` are ignored."""
  del beta, gamma
  x = jnp.minimum(jnp.asarray(x), _XEXP_MAX_EXPONENT)
  return x * jnp.exp(x)


def linear2x(x: ArrayLike, beta: float = 0.0, gamma: float = 0.0) -> Array:
  """``2x``; ``beta`` and ``gamma`` are ignored."""
  del beta, gamma
  return 2.0 * jnp.asarray(x)


def arctanh(x: ArrayLike, beta: float = 0.0, gamma: float = 0.0) -> Array:
  """``2 artanh(x)`` with ``x`` clipped into (-1, 1); ``beta`` and ``gamma`` are ignored."""
  del beta, gamma
  x = jnp.clip(jnp.asarray(x), -1.0 + _ARCTANH_EPS, 1.0 - _ARCTANH_EPS)
  return 2.0 * jnp.arctanh(x)


def identity(x: ArrayLike, beta: float = 0.0, gamma: float = 0.0) -> Array:
  """``x``; ``beta`` and ``gamma`` are ignored."""
  del beta, gamma
  return jnp.asarray(x)


ACTIVATIONS: dict[str, Callable[..., Array]] = {
    "hanon": hanon,
    "halin": halin,
    "xexp": xexp,
    "linear2x": linear2x,
    "arctanh": arctanh,
    "identity": identity,
}

# The paper's defaults for beta (Fig. 1); gamma defaults to 10 for both bounded functions.
DEFAULT_BETA = {"hanon": 3.0, "halin": 10.0}


@functools.lru_cache(maxsize=None)
def get_activation(name: str, beta: float | None = None, gamma: float = 10.0) -> Callable[[ArrayLike], Array]:
  """Returns ``x -> h(x)`` for the named activation with ``beta`` and ``gamma`` bound.

  ``beta=None`` takes the paper's default for that function.  The same arguments give the same
  function object, so jitted functions taking it as a static argument compile once.
  """
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
  fn = ACTIVATIONS[name]
  b = DEFAULT_BETA.get(name, 0.0) if beta is None else beta
  return lambda x: fn(x, beta=b, gamma=gamma)
