"""hale_jax.losses and hale_jax.train.batch_loss against float64 NumPy computations."""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations, losses, models, train
from test_activations import REFERENCE, DEFAULTS
from test_models import np_softplus, np_transform, random_params

# float64 central differences: small steps keep the truncation error well below check_grads'
# tolerance (round-off stays around 1e-10).
FD_EPS = 1e-6


def np_logsumexp(a, axis=-1):
  m = np.max(a, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def np_activation(name, beta=None, gamma=10.0):
  ref = REFERENCE[name][0]
  if name in DEFAULTS:
    b = DEFAULTS[name][0] if beta is None else beta
    return lambda x: ref(np.asarray(x, np.float64), b, gamma)
  return lambda x: ref(np.asarray(x, np.float64))


def np_hale_loss(pos, sampled, h, lam, pos_square=True):
  hp = h(pos)
  alignment = np.mean(hp * hp) if pos_square else np.mean(hp)
  return lam * alignment + np.mean(np_logsumexp(-h(sampled), axis=-1))


# Scaled squared distances are >= 0; arctanh only makes sense below 1.
INPUT_HIGH = {"hanon": 4.0, "halin": 3.0, "xexp": 3.0, "linear2x": 5.0, "arctanh": 0.9,
              "identity": 5.0}


def _inputs(rng, name, b, k, n):
  hi = INPUT_HIGH[name]
  return rng.uniform(0.0, hi, b), rng.uniform(0.0, hi, (k, n))


@pytest.mark.parametrize("pos_square", [True, False])
@pytest.mark.parametrize("name,beta,gamma", [("hanon", None, 10.0), ("hanon", 2.0, 5.0),
                                             ("halin", None, 10.0), ("halin", 4.0, 6.0),
                                             ("xexp", None, 10.0), ("linear2x", None, 10.0),
                                             ("arctanh", None, 10.0), ("identity", None, 10.0)])
def test_hale_loss_matches_reference(rng, name, beta, gamma, pos_square):
  b, k, n = 17, 4, 23
  pos, sampled = _inputs(rng, name, b, k, n)
  lam = float(rng.uniform(0.1, 1.0))
  h = activations.get_activation(name, beta, gamma)
  got = losses.hale_loss(jnp.asarray(pos, jnp.float32), jnp.asarray(sampled, jnp.float32), h, lam,
                         pos_square)
  assert got.shape == () and got.dtype == jnp.float32
  pos32 = pos.astype(np.float32).astype(np.float64)
  sampled32 = sampled.astype(np.float32).astype(np.float64)
  want = np_hale_loss(pos32, sampled32, np_activation(name, beta, gamma), lam, pos_square)
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)


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


@pytest.mark.parametrize("name", ["hanon", "halin", "xexp"])
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
  f = lambda p, s: losses.hale_loss(p, s, h, lam)  # noqa: E731
  pos, sampled = jnp.asarray(pos), jnp.asarray(sampled)
  check_grads(f, (pos, sampled), order=1, modes=("rev",), eps=FD_EPS)
  # analytic: d/dpos = 2 lam h h' / B ; d/dsampled = -softmax(-h) h' / k
  gp, gs = jax.grad(f, argnums=(0, 1))(pos, sampled)
  ref, dref = REFERENCE[name]
  beta, gamma = DEFAULTS.get(name, (None, None))
  hp, dp = ref(np.asarray(pos), beta, gamma), dref(np.asarray(pos), beta, gamma)
  hs, ds = ref(np.asarray(sampled), beta, gamma), dref(np.asarray(sampled), beta, gamma)
  soft = np.exp(-hs - np_logsumexp(-hs)[:, None])
  np.testing.assert_allclose(np.asarray(gp), 2 * lam * hp * dp / b, rtol=1e-9, atol=1e-12)
  np.testing.assert_allclose(np.asarray(gs), -soft * ds / k, rtol=1e-9, atol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# train.batch_loss against a fully NumPy computation.

N, R2, D, B, K = 20, 6, 8, 12, 3


def np_batch_loss(model, params, batch, h, lam, k, pos_square=True):
  p = {key: np.asarray(v, np.float64) for key, v in params.items()}
  heads, rels, tails = batch[:, 0], batch[:, 1], batch[:, 2]
  q = np_transform(model, p, heads, rels)
  c = np_softplus(p["scale"][rels])
  ent = p["entity"]
  pos = c * np.sum((q - ent[tails]) ** 2, axis=-1)
  sampled = c[:k, None] * np.sum((q[:k, None, :] - ent[None, :, :]) ** 2, axis=-1)
  assert sampled.shape == (k, len(ent))
  return np_hale_loss(pos, sampled, h, lam, pos_square)


@pytest.mark.parametrize("model,act,pos_square", [
    ("TransE", "hanon", True), ("DistMult", "halin", True), ("RotatE", "hanon", True),
    ("RotE", "linear2x", False), ("RotL", "xexp", True)])
def test_batch_loss_matches_numpy(rng, model, act, pos_square):
  # init_scale 0.2 keeps c_r ||.||^2 in the range where every activation is still informative
  params = random_params(rng, model, N, R2, D, init_scale=0.2)
  batch = np.stack([rng.integers(0, N, B), rng.integers(0, R2, B), rng.integers(0, N, B)], axis=1)
  lam = float(rng.uniform(0.1, 1.0))
  h = activations.get_activation(act)
  got = train.batch_loss(params, jnp.asarray(batch, jnp.int32), model=models.canonical_model(model),
                         activation=h, lam=lam, num_sampled=K, pos_square=pos_square)
  want = np_batch_loss(model, params, batch, np_activation(act), lam, K, pos_square)
  np.testing.assert_allclose(float(got), want, rtol=2e-5)
