"""hale_jax.activations against float64 NumPy references written from the paper (Eqs. 6-7).

Values run under ``chex.variants`` (with and without ``jit``) in float32 and float64;
gradients go through ``jax.test_util.check_grads`` and the analytic derivatives.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from hale_jax import activations
from reference import DEFAULTS, FD_EPS, REFERENCE, np_halin, np_hanon, seeded_rng

# A sensible domain for each function (scaled squared distances are >= 0; arctanh needs |x| < 1).
DOMAIN = {
    "hanon": (0.0, 6.0),
    "halin": (0.0, 4.0),
    "xexp": (-4.0, 4.0),
    "linear2x": (-5.0, 5.0),
    "two_arctanh": (-0.95, 0.95),
    "identity": (-5.0, 5.0),
}

# (beta, gamma) pairs of the two parametrised functions: the paper's defaults (None: taken by
# the function itself) and non-default values.  The other four ignore them (checked in
# test_get_activation_binds_beta_and_gamma), so they run once, with their defaults.
PARAMS = {
    "hanon": [(None, None), (1.5, 5.0), (7.0, 20.0)],
    "halin": [(None, None), (4.0, 5.0), (2.5, 20.0)],
}

NAMES = sorted(activations.ACTIVATIONS)
EXTREME = np.array([-1e30, -1e4, -100, -1, 0, 1, 100, 1e4, 1e30], np.float32)
# Every input a scaled squared distance can take before overflow matters, both signs.
REALISTIC = np.concatenate([-np.logspace(-6, 3, 40), [0.0], np.logspace(-6, 3, 40)])


def _cases():
  for name in NAMES:
    for beta, gamma in PARAMS.get(name, [(None, None)]):
      yield f"{name}_b{beta}_g{gamma}", name, beta, gamma


CASES = list(_cases())
DEFAULT_CASES = [c for c in CASES if c[2] is None]  # each function once, with its defaults
OTHER_CASES = [c for c in CASES if c[2] is not None]  # hanon and halin, other (beta, gamma)


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


def _call(name, x, beta=None, gamma=None):
  fn = activations.ACTIVATIONS[name]
  if beta is None:
    return fn(x)
  return fn(x, beta=beta, gamma=gamma)


def _ref_args(name, beta, gamma):
  if beta is None:
    return DEFAULTS.get(name, (None, None))
  return beta, gamma


def test_registry_holds_the_six_functions():
  assert set(activations.ACTIVATIONS) == {"hanon", "halin", "xexp", "linear2x", "two_arctanh",
                                          "identity"}


def _check_reference(test, name, beta, gamma):
  """``name``'s values through ``test.variant`` against the reference, float32 and float64."""
  rng = seeded_rng(test.id())
  fn = test.variant(functools.partial(_call, name, beta=beta, gamma=gamma))
  b, g = _ref_args(name, beta, gamma)
  ref = functools.partial(REFERENCE[name][0], beta=b, gamma=g)
  # float32: a [4, 64] block (any shape in, the same shape out)
  x = _sample(rng, name, 256, beta, gamma).astype(np.float32).reshape(4, 64)
  got = fn(jnp.asarray(x))
  chex.assert_shape(got, (4, 64))
  chex.assert_type(got, jnp.float32)
  chex.assert_trees_all_close(got, ref(x.astype(np.float64)), rtol=2e-5, atol=2e-6)
  # float64: exact to round-off
  with jax.enable_x64(True):
    x = _sample(rng, name, 256, beta, gamma).reshape(4, 64)
    got = fn(jnp.asarray(x))
    chex.assert_type(got, jnp.float64)
    chex.assert_trees_all_close(got, ref(x), rtol=1e-12, atol=1e-12)


class ValuesTest(chex.TestCase):
  """Values against the references, jitted and not, in float32 and float64; finite values and
  gradients everywhere."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*DEFAULT_CASES)
  def test_matches_reference(self, name, beta, gamma):
    _check_reference(self, name, beta, gamma)

  @chex.variants(with_jit=True)
  def test_value_and_gradient_finite(self):
    """No NaN or inf in value or gradient, at extreme float32 inputs and over the whole range a
    scaled squared distance can take; scalars in, scalars out."""
    _check_finite(self)


@pytest.mark.slow
class EagerFiniteTest(chex.TestCase):

  @chex.variants(without_jit=True)
  def test_value_and_gradient_finite(self):
    _check_finite(self)


def _check_finite(test):
  x = jnp.asarray(np.concatenate([EXTREME, REALISTIC.astype(np.float32)]))
  for name in NAMES:
    fn = activations.get_activation(name)
    value = test.variant(fn)(x)
    grad = test.variant(jax.grad(lambda v, fn=fn: jnp.sum(fn(v))))(x)
    chex.assert_type([value, grad], jnp.float32)
    chex.assert_tree_all_finite((value, grad))
    chex.assert_shape(test.variant(fn)(jnp.float32(0.25)), ())


@pytest.mark.slow
class OtherParametersTest(chex.TestCase):
  """Hanon and Halin with other (beta, gamma) than the paper's."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*OTHER_CASES)
  def test_matches_reference(self, name, beta, gamma):
    _check_reference(self, name, beta, gamma)


# The quick tier checks the two hardness-aware functions with their defaults.
@pytest.mark.parametrize("ident,name,beta,gamma", [
    c if c[1] in ("hanon", "halin") and c[2] is None else pytest.param(*c, marks=pytest.mark.slow)
    for c in CASES])
def test_gradients(rng, x64, ident, name, beta, gamma):
  del ident
  x = jnp.asarray(_sample(rng, name, 16, beta, gamma))
  f = lambda v: _call(name, v, beta, gamma)  # noqa: E731
  check_grads(f, (x,), order=1, modes=("rev", "fwd"), eps=FD_EPS)
  # ... and against the analytic derivative of the paper's formula.
  grad = np.asarray(jax.vmap(jax.grad(f))(x))
  b, g = _ref_args(name, beta, gamma)
  np.testing.assert_allclose(grad, REFERENCE[name][1](np.asarray(x), b, g), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_vmap_matches_elementwise(rng):
  x = jnp.asarray(rng.uniform(-0.9, 0.9, (4, 6)).astype(np.float32))
  for name in NAMES:
    fn = activations.get_activation(name)
    np.testing.assert_allclose(np.asarray(jax.vmap(fn)(x)), np.asarray(fn(x)), rtol=1e-6,
                               atol=1e-7, err_msg=name)


def test_get_activation_defaults(rng):
  x = rng.uniform(0.0, 4.0, 101).astype(np.float32)
  x[:2] = [0.7, 2.2]  # where the defaults matter
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon")(x)),
                             np_hanon(x.astype(np.float64), 3.0, 10.0), rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(activations.get_activation("halin")(x)),
                             np_halin(x.astype(np.float64), 10.0, 10.0), rtol=2e-5, atol=2e-6)
  assert activations.DEFAULT_BETA["hanon"] == 3.0
  assert activations.DEFAULT_BETA["halin"] == 10.0
  # the same arguments give equal, equally hashed activations (jit's static arguments compile
  # once); other arguments give another one
  assert activations.get_activation("hanon") == activations.get_activation("hanon", 3, 10)
  assert hash(activations.get_activation("hanon")) == hash(activations.hanon)
  assert activations.get_activation("hanon", 2.0) != activations.get_activation("hanon")
  assert activations.get_activation("arctanh") == activations.two_arctanh


def test_get_activation_binds_beta_and_gamma(rng):
  x = rng.uniform(0.0, 4.0, 101).astype(np.float32)
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon", 1.5, 4.0)(x)),
                             np_hanon(x.astype(np.float64), 1.5, 4.0), rtol=2e-5, atol=2e-6)
  np.testing.assert_allclose(np.asarray(activations.get_activation("halin", 3.0, 6.0)(x)),
                             np_halin(x.astype(np.float64), 3.0, 6.0), rtol=2e-5, atol=2e-6)
  # gamma alone, beta from the defaults
  np.testing.assert_allclose(np.asarray(activations.get_activation("hanon", gamma=5.0)(x)),
                             np_hanon(x.astype(np.float64), 3.0, 5.0), rtol=2e-5, atol=2e-6)
  # the other functions ignore beta and gamma
  for name in ("xexp", "linear2x", "identity"):
    np.testing.assert_allclose(np.asarray(activations.get_activation(name, 5.0, 1.0)(x)),
                               REFERENCE[name][0](x.astype(np.float64)), rtol=2e-5, atol=2e-6)
  y = rng.uniform(-0.9, 0.9, 33).astype(np.float32)
  np.testing.assert_allclose(np.asarray(activations.get_activation("two_arctanh", 5.0, 1.0)(y)),
                             REFERENCE["two_arctanh"][0](y.astype(np.float64)), rtol=2e-5, atol=2e-6)


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


@pytest.mark.parametrize("beta,gamma", [(10.0, 10.0)] + [
    pytest.param(b, g, marks=pytest.mark.slow) for b, g in [(4.0, 5.0), (2.0, 20.0)]])
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
