"""Hardness-aware activations h(x) applied to scaled squared distances.

Every activation maps ``ArrayLike -> Array`` elementwise (any shape in, same shape out), is
jittable, and is free of NaN in value and gradient for every finite float input.  In HaLE the
input is ``x = c_r * ||Phi(e, r) - e'||^2 >= 0`` and the triple score is ``f = -h(x)`` (paper
Eq. 8).

- ``hanon``       Eq. 6, ``1 / (1/gamma + exp(-beta (x - 0.5)))``; defaults beta=3, gamma=10
                  (Fig. 1).  Computed in the overflow-free form
                  ``gamma * sigmoid(beta (x - 0.5) - log gamma)``.
- ``halin``       Eq. 7, ``2x`` below 1, ``min(beta (x - 1) + 2, gamma)`` from 1; defaults
                  beta=10, gamma=10 (Fig. 1).  For x <= 0 (outside the paper's domain) it stays
                  ``2x``.
- ``xexp``        ``x e^x`` (RotL's phi).  The input is clipped at 80 (``80 e^80 ~ 4e36``), so
                  large inputs give a large finite value and a zero gradient instead of inf (and
                  NaN through the softmax).
- ``linear2x``    ``2x``: the temperature trick (tau = 1/2).
- ``two_arctanh`` ``2 artanh(x)`` (the hyperbolic models' nonlinearity).  Its domain is
                  (-1, 1); the input is clipped to ``[-1 + 1e-6, 1 - 1e-6]``, so values stay
                  finite and the gradient is zero outside the domain.  The name ``"arctanh"``
                  (the ``--activation`` value of earlier versions) is still accepted for it.
- ``identity``    ``x``.

Each is an :class:`Activation`: a callable, hashable value (name, beta, gamma) registered as a
static pytree node, so it passes through ``jax.jit``, ``grad`` and ``vmap`` as an ordinary
argument (no leaves; equal activations share one compilation).  Wherever the library takes an
activation it also takes its name (:func:`resolve`); ``None`` means :data:`DEFAULT_ACTIVATION`,
the paper's Hanon, everywhere.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, Union

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

_XEXP_MAX_EXPONENT = 80.0
_ARCTANH_EPS = 1e-6


def _hanon(x: Array, beta: float, gamma: float) -> Array:
  return gamma * jax.nn.sigmoid(beta * (x - 0.5) - jnp.log(gamma))


def _halin(x: Array, beta: float, gamma: float) -> Array:
  upper = jnp.minimum(beta * (x - 1.0) + 2.0, gamma)
  return jnp.where(x < 1.0, 2.0 * x, upper)


def _xexp(x: Array, beta: float, gamma: float) -> Array:
  del beta, gamma
  x = jnp.minimum(x, _XEXP_MAX_EXPONENT)
  return x * jnp.exp(x)


def _linear2x(x: Array, beta: float, gamma: float) -> Array:
  del beta, gamma
  return 2.0 * x


def _two_arctanh(x: Array, beta: float, gamma: float) -> Array:
  del beta, gamma
  x = jnp.clip(x, -1.0 + _ARCTANH_EPS, 1.0 - _ARCTANH_EPS)
  return 2.0 * jnp.arctanh(x)


def _identity(x: Array, beta: float, gamma: float) -> Array:
  del beta, gamma
  return x


_FUNCTIONS = {"hanon": _hanon, "halin": _halin, "xexp": _xexp, "linear2x": _linear2x,
              "two_arctanh": _two_arctanh, "identity": _identity}

# The paper's defaults for beta (Fig. 1); gamma defaults to 10 for both bounded functions.
DEFAULT_BETA = {"hanon": 3.0, "halin": 10.0}
DEFAULT_GAMMA = 10.0
DEFAULT_ACTIVATION = "hanon"
"""What ``activation=None`` means in every public function: Hanon, beta 3, gamma 10."""
RENAMED = {"arctanh": "two_arctanh"}
"""Earlier names still accepted as names (``--activation`` values in flagfiles and run.json)."""


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Activation:
  """The activation ``name`` with ``beta`` and ``gamma`` bound: ``h(x)``, elementwise.

  ``h(x, beta, gamma)`` overrides the bound values for one call.  Hashable and a static pytree
  node (no leaves), so ``jax.jit(f)(x, activation=h)`` works without ``static_argnames``.
  """
  name: str
  beta: float
  gamma: float

  def __call__(self, x: ArrayLike, beta: float | None = None,
               gamma: float | None = None) -> Array:
    return _FUNCTIONS[self.name](jnp.asarray(x), self.beta if beta is None else beta,
                                 self.gamma if gamma is None else gamma)

  def __repr__(self) -> str:
    return f"Activation({self.name!r}, beta={self.beta}, gamma={self.gamma})"


ActivationLike = Union[Activation, str, Callable[[ArrayLike], Array], None]


def _canonical(name: str) -> str:
  """``name`` with its earlier spelling replaced; ValueError listing the names if unknown."""
  name = RENAMED.get(name, name)
  if name not in _FUNCTIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(_FUNCTIONS)}")
  return name


def get_activation(name: str, beta: float | None = None,
                   gamma: float = DEFAULT_GAMMA) -> Activation:
  """The named activation with ``beta`` and ``gamma`` bound.

  ``beta=None`` takes the paper's default for that function.  Equal arguments give equal
  activations, so jitted functions taking one as a static argument compile once.  Raises
  ValueError naming the valid names when ``name`` is unknown.
  """
  if not isinstance(name, str):
    raise ValueError(f"an activation name must be a string, got {name!r}")
  name = _canonical(name)
  b = DEFAULT_BETA.get(name, 0.0) if beta is None else float(beta)
  return Activation(name, b, float(gamma))


def canonical_name(name: str) -> str:
  """The current name of activation ``name`` (``"arctanh"`` -> ``"two_arctanh"``)."""
  return _canonical(name)


def resolve(activation: ActivationLike) -> Callable[[ArrayLike], Array]:
  """The callable for ``activation``: a name (``get_activation(name)``, the paper's beta and
  gamma), a callable as it is, or ``None`` for :data:`DEFAULT_ACTIVATION`."""
  if activation is None:
    return get_activation(DEFAULT_ACTIVATION)
  if isinstance(activation, str):
    return get_activation(activation)
  if not callable(activation):
    raise ValueError(f"activation must be a name ({', '.join(_FUNCTIONS)}) or a callable, "
                     f"got {activation!r}")
  return activation


hanon = get_activation("hanon")
halin = get_activation("halin")
xexp = get_activation("xexp")
linear2x = get_activation("linear2x")
two_arctanh = get_activation("two_arctanh")
identity = get_activation("identity")

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (hanon, halin, xexp, linear2x,
                                                          two_arctanh, identity)}
CHOICES = (*ACTIVATIONS, *RENAMED)
"""The accepted names, the current ones first (``--activation``'s values)."""

_DEPRECATED = {"arctanh": "two_arctanh"}


def deprecated_attribute(module: str, name: str) -> Activation:
  """The activation behind a deprecated public name, with a DeprecationWarning naming the new
  one; AttributeError for any other name."""
  if name not in _DEPRECATED:
    raise AttributeError(f"module {module!r} has no attribute {name!r}")
  new = _DEPRECATED[name]
  warnings.warn(f"{module}.{name} is deprecated and will be removed in the next version; use "
                f"{module}.{new} (it computes 2 * artanh(x))", DeprecationWarning, stacklevel=3)
  return ACTIVATIONS[new]


def __getattr__(name: str) -> Activation:
  return deprecated_attribute(__name__, name)
