"""hale_jax.activations against float64 NumPy references written from the paper (Eqs. 6-7)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations

# float64 central differences: small steps keep the truncation error well below check_grads'
# tolerance (round-off stays around 1e-10).
FD_EPS = 1e-6

# ----------------------------------------------------------------------------------------------
# Float64 references, straight from the formulas (not from the library's rewritten forms).


def np_hanon(x, beta=3.0, gamma=10.0):
  return 1.0 / (1.0 / gamma + np.exp(-beta * (x - 0.5)))


def np_halin(x, beta=10.0, gamma=10.0):
  return np.where(x < 1.0, 2.0 * x, np.minimum(beta * (x - 1.0) + 2.0, gamma))


def np_xexp(x, beta=None, gamma=None):
  return x * np.exp(x)


def np_linear2x(x, beta=None, gamma=None):
  return 2.0 * x


def np_arctanh(x, beta=None, gamma=None):
  return 2.0 * np.arctanh(x)


def np_identity(x, beta=None, gamma=None):
  return np.array(x, dtype=np.float64)


# Analytic derivatives (away from Halin's kinks).
def np_dhanon(x, beta=3.0, gamma=10.0):
  e = np.exp(-beta * (x - 0.5))
  return beta * e / (1.0 / gamma + e) ** 2


def np_dhalin(x, beta=10.0, gamma=10.0):
  return np.where(x < 1.0, 2.0, np.where(beta * (x - 1.0) + 2.0 < gamma, beta, 0.0))


REFERENCE = {
    "hanon": (np_hanon, np_dhanon),
    "halin": (np_halin, np_dhalin),
    "xexp": (np_xexp, lambda x, b=None, g=None: (1.0 + x) * np.exp(x)),
    "linear2x": (np_linear2x, lambda x, b=None, g=None: np.full_like(x, 2.0)),
    "arctanh": (np_arctanh, lambda x, b=None, g=None: 2.0 / (1.0 - x * x)),
    "identity": (np_identity, lambda x, b=None, g=None: np.ones_like(x)),
}

# A sensible domain for each function (scaled squared distances are >= 0; arctanh needs |x| < 1).
DOMAIN = {
    "hanon": (0.0, 6.0),
    "halin": (0.0, 4.0),
    "xexp": (-4.0, 4.0),
    "linear2x": (-5.0, 5.0),
    "arctanh": (-0.95, 0.95),
    "identity": (-5.0, 5.0),
}

# (beta, gamma) pairs: the paper's defaults and non-default values.  Only hanon/halin use them.
PARAMS = {
    "hanon": [(3.0, 10.0), (1.5, 5.0), (7.0, 20.0)],
    "halin": [(10.0, 10.0), (4.0, 5.0), (2.5, 20.0)],
}
DEFAULTS = {"hanon": (3.0, 10.0), "halin": (10.0, 10.0)}

NAMES = sorted(activations.ACTIVATIONS)
EXTREME = np.array([-1e30, -1e4, -100, -1, 0, 1, 100, 1e4, 1e30], np.float32)


def test_registry_holds_the_six_functions():
  assert set(activations.ACTIVATIONS) == {"hanon", "halin", "xexp", "linear2x", "arctanh",
                                          "identity"}


def _cases():
  for name in NAMES:
    for beta, gamma in PARAMS.get(name, [(None, None), (2.0, 7.0)]):
      yield pytest.param(name, beta, gamma, id=f"{name}-b{beta}-g{gamma}")


def _kinks(beta, gamma):
  return np.array([1.0, 1.0 + (gamma - 2.0) / beta])


def _sample(rng, name, n, beta=None, gamma=None, margin=0.02):
  lo, hi = DOMAIN[name]
  x = rng.uniform(lo, hi, size=n)
  if name == "halin":  # keep finite differences off the two kinks
    b, g = (beta, gamma) if beta is not None else DEFAULTS["halin"]
    for k in _kinks(b, g):
      near = np.abs(x - k) < margin
      x[near] = k + np.where(x[near] < k, -2 * margin, 2 * margin)
  return x


def _call(name, x, beta, gamma):
  fn = activations.ACTIVATIONS[name]
  if beta is None:
    return fn(x)
  return fn(x, beta=beta, gamma=gamma)


def _ref_args(name, beta, gamma):
  if beta is None:
    return DEFAULTS.get(name, (None, None))
  return beta, gamma


@pytest.mark.parametrize("name,beta,gamma", list(_cases()))
def test_matches_reference_float32(rng, name, beta, gamma):
  x = _sample(rng, name, 257, beta, gamma).astype(np.float32)
  got = np.asarray(_call(name, jnp.asarray(x), beta, gamma))
  assert got.dtype == np.float32 and got.shape == x.shape
  b, g = _ref_args(name, beta, gamma)
  want = REFERENCE[name][0](x.astype(np.float64), b, g)
  np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name,beta,gamma", list(_cases()))
def test_matches_reference_float64(rng, x64, name, beta, gamma):
  x = _sample(rng, name, 257, beta, gamma)
  got = np.asarray(_call(name, jnp.asarray(x), beta, gamma))
  assert got.dtype == np.float64
  b, g = _ref_args(name, beta, gamma)
  np.testing.assert_allclose(got, REFERENCE[name][0](x, b, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,beta,gamma", list(_cases()))
def test_gradients(rng, x64, name, beta, gamma):
  x = jnp.asarray(_sample(rng, name, 16, beta, gamma))
  f = lambda v: _call(name, v, beta, gamma)  # noqa: E731
  check_grads(f, (x,), order=1, modes=("rev", "fwd"), eps=FD_EPS)
  # ... and against the analytic derivative of the paper's formula.
  grad = np.asarray(jax.vmap(jax.grad(f))(x))
  b, g = _ref_args(name, beta, gamma)
  np.testing.assert_allclose(grad, REFERENCE[name][1](np.asarray(x), b, g), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_value_and_gradient_finite_at_extreme_inputs(name):
  fn = activations.get_activation(name)
  x = jnp.asarray(EXTREME)
  value = np.asarray(fn(x))
  grad = np.asarray(jax.grad(lambda v: jnp.sum(fn(v)))(x))
  assert value.dtype == np.float32 and grad.dtype == np.float32
  assert not np.isnan(value).any(), value
  assert not np.isnan(grad).any(), grad
  assert np.isfinite(value).all(), value
  assert np.isfinite(grad).all(), grad


@pytest.mark.parametrize("name", NAMES)
def test_no_nan_in_realistic_range(name):
  """No NaN for every input a scaled squared distance can take before overflow matters."""
  fn = activations.get_activation(name)
  x = jnp.asarray(np.concatenate([-np.logspace(-6, 3, 40), [0.0], np.logspace(-6, 3, 40)]),
                  jnp.float32)
  value = np.asarray(fn(x))
  grad = np.asarray(jax.grad(lambda v: jnp.sum(fn(v)))(x))
  assert np.isfinite(value).all() and np.isfinite(grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_jit_and_vmap(rng, name):
  fn = activations.get_activation(name)
  x = jnp.asarray(_sample(rng, name, 24).reshape(4, 6).astype(np.float32))
  eager = np.asarray(fn(x))
  np.testing.assert_allclose(np.asarray(jax.jit(fn)(x)), eager, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(np.asarray(jax.vmap(fn)(x)), eager, rtol=1e-6, atol=1e-7)
  # the elementwise contract: any shape in, the same shape out (scalars included)
  assert fn(x).shape == x.shape
  assert fn(jnp.float32(0.25)).shape == ()


def test_get_activation_defaults(rng):
  x = rng.uniform(0.0, 4.0, 101).astype(np.float32)
  x[:2] = [0.7, 2.2]  # where the defaults matter
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon")(x)),
                             np_hanon(x.astype(np.float64), 3.0, 10.0), rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(activations.get_activation("halin")(x)),
                             np_halin(x.astype(np.float64), 10.0, 10.0), rtol=2e-5, atol=2e-6)
  assert activations.DEFAULT_BETA["hanon"] == 3.0
  assert activations.DEFAULT_BETA["halin"] == 10.0


def test_get_activation_binds_beta_and_gamma(rng):
  x = rng.uniform(0.0, 4.0, 101).astype(np.float32)
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon", 1.5, 4.0)(x)),
                             np_hanon(x.astype(np.float64), 1.5, 4.0), rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(activations.get_activation("halin", 3.0, 6.0)(x)),
                             np_halin(x.astype(np.float64), 3.0, 6.0), rtol=2e-5, atol=2e-6)
  # gamma alone, beta from the defaults
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon", gamma=5.0)(x)),
                             np_hanon(x.astype(np.float64), 3.0, 5.0), rtol=2e-5, atol=2e-6)
  for name in ("xexp", "linear2x", "identity"):
    np.testing.assert_allclose(np.asarray(activations.get_activation(name, 5.0, 1.0)(x)),
                               REFERENCE[name][0](x.astype(np.float64)), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("bad", ["Hanon", "tanh", "", "relu"])
def test_unknown_activation_raises(bad):
  with pytest.raises(ValueError, match="unknown activation"):
    activations.get_activation(bad)


@pytest.mark.parametrize("beta,gamma", [(3.0, 10.0), (1.0, 5.0), (8.0, 20.0)])
def test_hanon_bounded_by_gamma_and_increasing(beta, gamma):
  x = np.concatenate([np.linspace(-10, 30, 2001), [1e3, 1e6, 1e30]]).astype(np.float32)
  y = np.asarray(activations.hanon(x, beta, gamma))
  assert (y >= 0).all()
  assert (y <= gamma * (1 + 1e-6)).all()
  assert np.all(np.diff(y) >= 0)
  np.testing.assert_allclose(y[-3:], gamma, rtol=1e-6)  # tends to gamma
  assert y[np.searchsorted(x[:2001], 0.5)] == pytest.approx(1.0 / (1.0 / gamma + 1.0), rel=1e-5)


@pytest.mark.parametrize("beta,gamma", [(10.0, 10.0), (4.0, 5.0), (2.0, 20.0)])
def test_halin_saturates_at_gamma(beta, gamma):
  start = 1.0 + (gamma - 2.0) / beta
  x = np.array([start + 1e-3, start + 0.5, 2 * start + 3, 1e4, 1e30], np.float32)
  fn = jax.jit(lambda v: activations.halin(v, beta, gamma))
  np.testing.assert_array_equal(np.asarray(fn(x)), np.float32(gamma))
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(jax.grad(fn)))(x)), 0.0)
  below = np.linspace(0.0, start - 1e-3, 200, dtype=np.float32)
  assert (np.asarray(fn(below)) < gamma).all()
  # continuous at x = 1 (2x meets beta (x - 1) + 2)
  assert float(fn(np.float32(1.0))) == pytest.approx(2.0)
  assert float(fn(np.float32(1.0 - 1e-6))) == pytest.approx(2.0, abs=1e-5)
