"""hale_jax.losses (paper Eq. 9 and its per-example terms) against float64 NumPy computations.

Values run under ``chex.variants`` (with and without ``jit``); gradients go through
``jax.test_util.check_grads`` and the analytic derivatives.  The loss of a batch of triples
(``hale_jax.objective``) is tested in test_objective.py.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from hale_jax import activations, losses
from reference import (FD_EPS, np_activation, np_alignment_terms, np_dactivation, np_hale_loss,
                       np_logsumexp, np_uniformity_terms, seeded_rng)

# Scaled squared distances are >= 0; arctanh only makes sense below 1.
INPUT_HIGH = {"hanon": 4.0, "halin": 3.0, "xexp": 3.0, "linear2x": 5.0, "two_arctanh": 0.9,
              "identity": 5.0}
# One set of sizes, so the jitted variants compile once per activation.
B, K, N = 17, 4, 23


def _inputs(rng, name, b=B, k=K, n=N):
  hi = INPUT_HIGH[name]
  return rng.uniform(0.0, hi, b), rng.uniform(0.0, hi, (k, n))


def _f32(*arrays):
  """float32 device arrays and their float64 values (what the reference must see)."""
  out = tuple(jnp.asarray(a, jnp.float32) for a in arrays)
  return out, tuple(np.asarray(a, np.float64) for a in out)


# Every activation once, the bounded ones also with non-default (beta, gamma); PosSquare on and
# off alternate (one line of code, no need for the full product).  The first two are quick.
LOSS_CASES = [("hanon", None, 10.0, True), ("halin", None, 10.0, False),
              ("hanon", 2.0, 5.0, False), ("halin", 4.0, 6.0, True),
              ("xexp", None, 10.0, True), ("linear2x", None, 10.0, False),
              ("two_arctanh", None, 10.0, True), ("identity", None, 10.0, False)]


def _check_hale_loss(test, name, beta, gamma, pos_square):
  rng = seeded_rng(test.id())
  (pos, sampled), (pos64, sampled64) = _f32(*_inputs(rng, name))
  lam = float(rng.uniform(0.1, 1.0))
  h = activations.get_activation(name, beta, gamma)
  got = test.variant(functools.partial(losses.hale_loss, activation=h, lam=lam,
                                       pos_square=pos_square))(pos, sampled)
  chex.assert_shape(got, ())
  chex.assert_type(got, jnp.float32)
  want = np_hale_loss(pos64, sampled64, np_activation(name, beta, gamma), lam, pos_square)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)


def _named(cases):
  return [(f"{n}_b{b}_g{g}_sq{s}", n, b, g, s) for n, b, g, s in cases]


@pytest.mark.slow
class OtherActivationsTest(chex.TestCase):
  """hale_loss with the other activations and (beta, gamma), jitted and not."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(LOSS_CASES[2:]))
  def test_hale_loss_matches_reference(self, name, beta, gamma, pos_square):
    _check_hale_loss(self, name, beta, gamma, pos_square)


class HaleLossTest(chex.TestCase):
  """hale_loss and its per-example terms, jitted and not, against NumPy."""

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_named(LOSS_CASES[:2]))
  def test_hale_loss_matches_reference(self, name, beta, gamma, pos_square):
    _check_hale_loss(self, name, beta, gamma, pos_square)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(("hanon_square", "hanon", True), ("halin_plain", "halin", False))
  def test_per_example_terms(self, name, pos_square):
    """alignment_terms [B], uniformity_terms [k] (with and without tail biases), and combine
    of them equal to hale_loss."""
    rng = seeded_rng(self.id())
    (pos, sampled, pb, eb), (pos64, sampled64, pb64, eb64) = _f32(
        *_inputs(rng, name), rng.normal(0.0, 1.0, B), rng.normal(0.0, 1.0, N))
    h, h64 = activations.get_activation(name), np_activation(name)
    lam = float(rng.uniform(0.1, 1.0))

    align = self.variant(functools.partial(losses.alignment_terms, activation=h,
                                           pos_square=pos_square))(pos)
    chex.assert_shape(align, (B,))
    chex.assert_trees_all_close(align, np_alignment_terms(pos64, h64, pos_square), rtol=1e-5,
                                atol=1e-6)
    uniform = self.variant(functools.partial(losses.uniformity_terms, activation=h))
    terms, biased = uniform(sampled), uniform(sampled, entity_bias=eb)
    chex.assert_shape([terms, biased], (K,))
    chex.assert_trees_all_close(terms, np_uniformity_terms(sampled64, h64), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(biased, np_uniformity_terms(sampled64, h64, eb64), rtol=1e-5,
                                atol=1e-6)

    combine = self.variant(functools.partial(losses.combine, lam=lam))
    hale = self.variant(functools.partial(losses.hale_loss, activation=h, lam=lam,
                                          pos_square=pos_square))
    chex.assert_trees_all_close(combine(align, terms), hale(pos, sampled), rtol=1e-6)
    chex.assert_trees_all_close(combine(align, biased, pos_bias=pb),
                                hale(pos, sampled, pos_bias=pb, entity_bias=eb), rtol=1e-6)
    chex.assert_trees_all_close(
        combine(align, biased, pos_bias=pb),
        np_hale_loss(pos64, sampled64, h64, lam, pos_square, pb64, eb64), rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_defaults_are_hanon_3_10_and_lambda_0_3(self):
    """hale_loss(pos, sampled) is Hanon with beta 3, gamma 10, lam 0.3 and PosSquare."""
    rng = seeded_rng(self.id())
    (pos, sampled), (pos64, sampled64) = _f32(*_inputs(rng, "hanon"))
    got = self.variant(losses.hale_loss)(pos, sampled)
    want = np_hale_loss(pos64, sampled64, np_activation("hanon", 3.0, 10.0), 0.3, True)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-6)
    assert losses.DEFAULT_LAMBDA == 0.3
    # and the per-example terms have the same defaults
    explicit = losses.alignment_terms(pos, activations.hanon, True)
    chex.assert_trees_all_close(self.variant(losses.alignment_terms)(pos), explicit, rtol=1e-6)
    chex.assert_trees_all_close(self.variant(losses.uniformity_terms)(sampled),
                                losses.uniformity_terms(sampled, activations.hanon), rtol=1e-6)


def test_hale_loss_terms_are_weighted_as_documented():
  """Hand-computable case with h = identity: lam * mean(x+^2) + mean_j LSE_i(-x_ji)."""
  h = activations.get_activation("identity")
  pos = jnp.array([1.0, 2.0, 3.0])
  sampled = jnp.array([[0.0, 0.0], [1.0, 1.0]])
  want = 0.5 * (1 + 4 + 9) / 3 + 0.5 * (math.log(2.0) + (-1.0 + math.log(2.0)))
  assert float(losses.hale_loss(pos, sampled, h, 0.5)) == pytest.approx(want, rel=1e-6)
  want_nosq = 0.5 * 2.0 + 0.5 * (math.log(2.0) + (-1.0 + math.log(2.0)))
  assert float(losses.hale_loss(pos, sampled, h, 0.5, pos_square=False)) == pytest.approx(
      want_nosq, rel=1e-6)
  # the per-example terms of the same case
  np.testing.assert_allclose(np.asarray(losses.alignment_terms(pos, h)), [1.0, 4.0, 9.0])
  np.testing.assert_allclose(np.asarray(losses.uniformity_terms(sampled, h)),
                             [math.log(2.0), math.log(2.0) - 1.0], rtol=1e-6)
  # combine: lam * mean(alignment) + mean(uniformity) - mean(pos_bias)
  assert float(losses.combine(jnp.array([1.0, 3.0]), jnp.array([5.0]), 0.5,
                              jnp.array([1.0, 2.0]))) == pytest.approx(0.5 * 2 + 5 - 1.5)


@pytest.mark.parametrize("name", ["hanon", pytest.param("halin", marks=pytest.mark.slow),
                                  pytest.param("xexp", marks=pytest.mark.slow)])
def test_hale_loss_gradients(rng, x64, name):
  b, k, n = 6, 2, 7
  pos, sampled = _inputs(rng, name, b, k, n)
  if name == "halin":  # keep finite differences off the kinks at 1 and 1.8
    for kink in (1.0, 1.8):
      for a in (pos, sampled):
        near = np.abs(a - kink) < 0.02
        a[near] = kink + 0.05
  h = activations.get_activation(name)
  lam = 0.3
  f = jax.jit(lambda p, s: losses.hale_loss(p, s, h, lam))
  pos, sampled = jnp.asarray(pos), jnp.asarray(sampled)
  check_grads(f, (pos, sampled), order=1, modes=("rev",), eps=FD_EPS)
  # analytic: d/dpos = 2 lam h h' / B ; d/dsampled = -softmax(-h) h' / k
  gp, gs = jax.grad(f, argnums=(0, 1))(pos, sampled)  # reuses check_grads' compilations
  h64, dh64 = np_activation(name), np_dactivation(name)
  hp, dp = h64(pos), dh64(pos)
  hs, ds = h64(sampled), dh64(sampled)
  soft = np.exp(-hs - np_logsumexp(-hs)[:, None])
  np.testing.assert_allclose(np.asarray(gp), 2 * lam * hp * dp / b, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(np.asarray(gs), -soft * ds / k, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_per_example_term_gradients(rng, x64):
  """check_grads of each term with a generic cotangent; the alignment term's Jacobian is
  diagonal (each positive's term depends on that positive only)."""
  pos, sampled = map(jnp.asarray, _inputs(rng, "hanon", 5, 3, 6))
  eb = jnp.asarray(rng.normal(0.0, 1.0, 6))
  h = activations.get_activation("hanon")
  w_b, w_k = jnp.asarray(rng.normal(size=5)), jnp.asarray(rng.normal(size=3))
  check_grads(jax.jit(lambda p: jnp.dot(w_b, losses.alignment_terms(p, h))), (pos,), order=1,
              modes=("rev", "fwd"), eps=FD_EPS)
  check_grads(jax.jit(lambda s, b: jnp.dot(w_k, losses.uniformity_terms(s, h, b))),
              (sampled, eb), order=1, modes=("rev", "fwd"), eps=FD_EPS)
  jac = np.asarray(jax.jacobian(lambda p: losses.alignment_terms(p, h))(pos))
  h64, dh64 = np_activation("hanon"), np_dactivation("hanon")
  np.testing.assert_allclose(jac, np.diag(2 * h64(pos) * dh64(pos)), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("batch,alpha,want", [(1024, 0.1, 103), (100, 0.05, 5), (10, 1.0, 10),
                                              (1, 0.05, 1), (100, 0.07, 7), (3, 0.34, 2),
                                              (1000, 0.2, 200), (512, 0.1, 52)])
def test_num_sampled_queries_examples(batch, alpha, want):
  got = losses.num_sampled_queries(batch, alpha)
  assert isinstance(got, int)
  assert got == want


def test_num_sampled_queries_is_exact_ceil(rng):
  """ceil(alpha * B) computed exactly with decimal alphas (no float round-up)."""
  for _ in range(300):
    alpha_str = f"{rng.integers(1, 1001) / 1000:.3f}"
    batch = int(rng.integers(1, 5000))
    want = math.ceil(Fraction(alpha_str) * batch)
    assert losses.num_sampled_queries(batch, float(alpha_str)) == want, (batch, alpha_str)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, 1.0000001, float("nan")])
def test_num_sampled_queries_rejects_bad_alpha(alpha):
  with pytest.raises(ValueError):
    losses.num_sampled_queries(100, alpha)
