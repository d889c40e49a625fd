"""hale_jax.baselines (the §4.1.2 training strategies) against float64 NumPy computations."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations, baselines

FD_EPS = 1e-6
B, M, N, D = 5, 4, 7, 6


# ----------------------------------------------------------------------------------------------
# Float64 references, values and analytic gradients written from the docstrings' formulas.


def np_softplus(z):
  return np.logaddexp(0.0, z)


def np_sigmoid(z):
  return np.exp(-np.logaddexp(0.0, -z))


def np_logsumexp(a, axis=-1):
  m = np.max(a, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def np_softmax(a, axis=-1):
  return np.exp(a - np.expand_dims(np_logsumexp(a, axis), axis))


def np_samneg(pos, neg, margin=0.0):
  zp, zn = pos + margin, neg + margin
  count = zp.size + zn.size
  value = (np.sum(np_softplus(-zp)) + np.sum(np_softplus(zn))) / count
  return value, (-np_sigmoid(-zp) / count, np_sigmoid(zn) / count)


def np_advneg(pos, neg, temperature=1.0, margin=0.0):
  zp, zn = pos + margin, neg + margin
  b = zp.shape[0]
  w = np_softmax(temperature * zn)
  value = 0.5 * (np.mean(np_softplus(-zp)) + np.mean(np.sum(w * np_softplus(zn), axis=-1)))
  # the weights are constants: d/dz^- of -w log sigmoid(-z) is w sigmoid(z)
  return value, (-0.5 * np_sigmoid(-zp) / b, 0.5 * w * np_sigmoid(zn) / b)


def np_allneg(scores, targets, eps=0.0):
  b, n = scores.shape
  onehot = np.eye(n)[targets]
  per = np_logsumexp(scores) - (1 - eps) * scores[np.arange(b), targets] - eps * scores.mean(-1)
  grad = (np_softmax(scores) - (1 - eps) * onehot - eps / n) / b
  return np.mean(per), grad


def np_nonneg(pos, entity, reg_weight, radius=1.0, target=0.0):
  n = entity.shape[0]
  centred = entity - entity.mean(0)
  gap = np.sum(centred**2, -1) - radius**2
  value = np.mean((target - pos)**2) + reg_weight * np.mean(gap**2)
  u = reg_weight * 4.0 * gap[:, None] * centred / n
  return value, (-2.0 * (target - pos) / pos.size, u - u.mean(0))


def _sam_inputs(rng, b=B, m=M):
  return rng.normal(0.0, 2.0, b), rng.normal(0.0, 2.0, (b, m))


def _all_inputs(rng, b=B, n=N):
  return rng.normal(0.0, 2.0, (b, n)), rng.integers(0, n, b)


def _non_inputs(rng, b=B, n=N, d=D):
  return rng.normal(-1.0, 1.0, b), rng.normal(0.0, 0.5, (n, d))


def _every_input(rng):
  """The inputs of all four losses: ``pos, neg, scores, targets, npos, entity``."""
  return (*_sam_inputs(rng), *_all_inputs(rng), *_non_inputs(rng))


@functools.lru_cache(maxsize=None)
def _vg(f, argnums=0):
  """``jax.value_and_grad`` under ``jit`` (one compilation instead of many eager ops)."""
  return jax.jit(jax.value_and_grad(f, argnums=argnums))


def _f32(a):
  return a.astype(np.float32).astype(np.float64)


def _close(got, want, rtol, atol):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# Values and gradients against the references (float32 and float64).


@pytest.mark.parametrize("margin", [0.0, 1.5])
def test_samneg_matches_reference(rng, margin):
  pos, neg = _sam_inputs(rng)
  f = lambda p, n: baselines.samneg_loss(p, n, margin)  # noqa: E731
  got, grads = _vg(f, argnums=(0, 1))(jnp.float32(pos), jnp.float32(neg))
  assert got.shape == () and got.dtype == jnp.float32
  want, wgrads = np_samneg(_f32(pos), _f32(neg), margin)
  _close(got, want, 1e-5, 1e-6)
  for g, w in zip(grads, wgrads):
    _close(g, w, 1e-5, 1e-7)


@pytest.mark.parametrize("temperature,margin", [(1.0, 0.0), (0.5, 3.0), (0.0, 0.0)])
def test_advneg_matches_reference(rng, temperature, margin):
  pos, neg = _sam_inputs(rng)
  f = lambda p, n: baselines.advneg_loss(p, n, temperature, margin)  # noqa: E731
  got, grads = _vg(f, argnums=(0, 1))(jnp.float32(pos), jnp.float32(neg))
  assert got.shape == () and got.dtype == jnp.float32
  want, wgrads = np_advneg(_f32(pos), _f32(neg), temperature, margin)
  _close(got, want, 1e-5, 1e-6)
  for g, w in zip(grads, wgrads):
    _close(g, w, 1e-5, 1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_allneg_matches_reference(rng, eps):
  scores, targets = _all_inputs(rng)
  f = lambda s: baselines.allneg_loss(s, jnp.asarray(targets, jnp.int32), eps)  # noqa: E731
  got, grad = _vg(f)(jnp.float32(scores))
  assert got.shape == () and got.dtype == jnp.float32
  want, wgrad = np_allneg(_f32(scores), targets, eps)
  _close(got, want, 1e-5, 1e-6)
  _close(grad, wgrad, 1e-5, 1e-7)


@pytest.mark.parametrize("radius,target", [(1.0, 0.0), (0.7, 1.0), (0.0, 0.0)])
def test_nonneg_matches_reference(rng, radius, target):
  pos, entity = _non_inputs(rng)
  reg = float(rng.uniform(0.1, 1.0))
  f = lambda p, e: baselines.nonneg_loss(p, e, reg, radius, target)  # noqa: E731
  got, grads = _vg(f, argnums=(0, 1))(jnp.float32(pos), jnp.float32(entity))
  assert got.shape == () and got.dtype == jnp.float32
  want, wgrads = np_nonneg(_f32(pos), _f32(entity), reg, radius, target)
  _close(got, want, 1e-5, 1e-6)
  for g, w in zip(grads, wgrads):
    _close(g, w, 1e-4, 1e-6)


def test_float64_values_and_gradients_are_exact(rng, x64):
  pos, neg, scores, targets, npos, entity = _every_input(rng)
  cases = [
      (lambda p, n: baselines.samneg_loss(p, n, 0.5), (pos, neg), np_samneg(pos, neg, 0.5)),
      (lambda p, n: baselines.advneg_loss(p, n, 0.8, 2.0), (pos, neg),
       np_advneg(pos, neg, 0.8, 2.0)),
      (lambda s: baselines.allneg_loss(s, targets, 0.2), (scores,),
       (lambda v, g: (v, (g,)))(*np_allneg(scores, targets, 0.2))),
      (lambda p, e: baselines.nonneg_loss(p, e, 0.3, 0.9), (npos, entity),
       np_nonneg(npos, entity, 0.3, 0.9)),
  ]
  for f, args, (want, wgrads) in cases:
    args = tuple(jnp.asarray(a) for a in args)
    got, grads = _vg(f, argnums=tuple(range(len(args))))(*args)
    assert got.dtype == jnp.float64
    _close(got, want, 1e-12, 1e-14)
    for g, w in zip(grads, wgrads):
      _close(g, w, 1e-10, 1e-14)


def test_check_grads(rng, x64):
  pos, neg, scores, targets, npos, entity = _every_input(rng)
  pos, neg, scores, npos, entity = map(jnp.asarray, (pos, neg, scores, npos, entity))
  kw = dict(order=1, modes=("rev",), eps=FD_EPS)
  jit = jax.jit  # one compilation per loss instead of eager ops at every probe
  check_grads(jit(lambda p, n: baselines.samneg_loss(p, n, 0.5)), (pos, neg), **kw)
  # the adversarial weights are stop_gradient'ed, so finite differences agree with autodiff
  # only where the weights do not move: w.r.t. the positives, or at temperature 0
  check_grads(jit(lambda p: baselines.advneg_loss(p, neg, 1.0, 2.0)), (pos,), **kw)
  check_grads(jit(lambda p, n: baselines.advneg_loss(p, n, 0.0, 2.0)), (pos, neg), **kw)
  check_grads(jit(lambda s: baselines.allneg_loss(s, targets, 0.1)), (scores,), **kw)
  check_grads(jit(lambda p, e: baselines.nonneg_loss(p, e, 0.4, 1.2, 0.5)), (npos, entity), **kw)
  check_grads(jit(lambda e: baselines.entity_spread_penalty(e, 0.8)), (entity,), **kw)


def test_advneg_weights_carry_no_gradient(rng, x64):
  pos, neg = map(jnp.asarray, _sam_inputs(rng))
  temperature, margin = 1.3, 0.5
  got = jax.jit(jax.grad(baselines.advneg_loss, argnums=1))(pos, neg, temperature, margin)
  z = np.asarray(neg) + margin
  w = np_softmax(temperature * z)
  manual = 0.5 * w * np_sigmoid(z) / B  # weights held fixed
  _close(got, manual, 1e-12, 1e-15)

  # the same loss with the weights differentiated has a visibly different gradient
  def no_stop(p, n):
    zn = n + margin
    weights = jax.nn.softmax(temperature * zn, axis=-1)
    return 0.5 * (-jnp.mean(jax.nn.log_sigmoid(p + margin))
                  - jnp.mean(jnp.sum(weights * jax.nn.log_sigmoid(-zn), axis=-1)))

  assert float(jax.jit(no_stop)(pos, neg)) == pytest.approx(
      float(baselines.advneg_loss(pos, neg, temperature, margin)), rel=1e-12)
  full = jax.jit(jax.grad(no_stop, argnums=1))(pos, neg)
  assert np.max(np.abs(np.asarray(full) - manual)) > 1e-3


# ----------------------------------------------------------------------------------------------
# Hand-computed cases.


def test_samneg_hand_cases():
  assert float(baselines.samneg_loss(jnp.zeros(1), jnp.zeros((1, 3)))) == pytest.approx(
      math.log(2.0), rel=1e-6)
  assert float(baselines.samneg_loss(jnp.array([-1.0]), jnp.array([[-1.0]]), margin=1.0)) == \
      pytest.approx(math.log(2.0), rel=1e-6)
  # pos log 3 -> log(4/3); neg -log 3 -> log(4/3); one mean over the 2 terms
  l3 = math.log(3.0)
  assert float(baselines.samneg_loss(jnp.array([l3]), jnp.array([[-l3]]))) == pytest.approx(
      math.log(4.0 / 3.0), rel=1e-6)
  # KGEmb averaging: one positive (log 2) and three negatives at 0 (log 2) and at -log 3 / -log3
  # -> (log 2 + log 2 + 2 log(4/3)) / 4
  got = baselines.samneg_loss(jnp.array([0.0]), jnp.array([[0.0, -l3, -l3]]))
  assert float(got) == pytest.approx((2 * math.log(2.0) + 2 * math.log(4.0 / 3.0)) / 4, rel=1e-6)


def test_advneg_hand_case():
  l3 = math.log(3.0)
  # weights softmax([0, log 3]) = [1/4, 3/4]; -log s(log 3) = log(4/3);
  # -log s(-0) = log 2, -log s(-log 3) = log 4
  got = baselines.advneg_loss(jnp.array([l3]), jnp.array([[0.0, l3]]), 1.0)
  want = 0.5 * (math.log(4.0 / 3.0) + 0.25 * math.log(2.0) + 0.75 * math.log(4.0))
  assert float(got) == pytest.approx(want, rel=1e-6)
  # the margin shifts the logits, not the weights
  got = baselines.advneg_loss(jnp.array([l3 - 2.0]), jnp.array([[-2.0, l3 - 2.0]]), 1.0, 2.0)
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_advneg_at_zero_temperature_is_balanced_samneg(rng):
  pos, neg = _sam_inputs(rng)
  balanced = np.mean(np_softplus(-pos) + np.mean(np_softplus(neg), axis=-1))
  got = baselines.advneg_loss(jnp.float32(pos), jnp.float32(neg), 0.0)
  assert 2 * float(got) == pytest.approx(balanced, rel=1e-5)


def test_allneg_hand_cases():
  assert float(baselines.allneg_loss(jnp.zeros((1, 4)), jnp.array([0]))) == pytest.approx(
      math.log(4.0), rel=1e-6)
  scores = jnp.log(jnp.array([[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]]))
  got = baselines.allneg_loss(scores, jnp.array([2, 0]))
  assert float(got) == pytest.approx(0.5 * (math.log(8.0 / 5.0) + math.log(8.0)), rel=1e-6)
  # eps = 0.5 over [0, log 3], target 1: log 4 - 0.5 log 3 - 0.5 * mean(0, log 3)
  got = baselines.allneg_loss(jnp.array([[0.0, math.log(3.0)]]), jnp.array([1]), 0.5)
  assert float(got) == pytest.approx(math.log(4.0) - 0.75 * math.log(3.0), rel=1e-6)


def test_nonneg_hand_cases():
  pos = jnp.array([-1.0, -2.0])
  entity = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]) + 5.0  # centre (5, 5)
  # square loss (1 + 4) / 2; squared distances to the centre 1, 1, 9, 9; gaps 0, 0, 8, 8
  assert float(baselines.nonneg_loss(pos, entity, 0.1)) == pytest.approx(2.5 + 0.1 * 32.0,
                                                                        rel=1e-6)
  assert float(baselines.nonneg_loss(pos, entity, 0.1, radius=0.0)) == pytest.approx(
      2.5 + 0.1 * 41.0, rel=1e-6)
  assert float(baselines.nonneg_loss(pos, entity, 0.0, target=1.0)) == pytest.approx(
      (4.0 + 9.0) / 2, rel=1e-6)
  # entities on the circle of radius 2 around their centre: no penalty at radius 2
  ring = jnp.array([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
  assert float(baselines.entity_spread_penalty(ring, 2.0)) == pytest.approx(0.0, abs=1e-6)


def test_nonneg_regulariser_pushes_inner_entities_out_and_outer_in(rng):
  half = rng.normal(0.0, 1.0, (20, 3))
  half *= rng.uniform(0.05, 3.0, (20, 1)) / np.linalg.norm(half, axis=1, keepdims=True)
  # symmetric about 0: the centroid's own gradient cancels, so each entity's gradient is its
  # own term 4 gap_i (e_i - c) / N
  entity = np.concatenate([half, -half])
  grad = np.asarray(jax.grad(baselines.entity_spread_penalty)(jnp.float32(entity), 1.0))
  centred = entity - entity.mean(0)
  dist = np.linalg.norm(centred, axis=1)
  outward = np.sum(-grad * centred, axis=1)  # descent direction . (e_i - c)
  inner, outer = dist < 0.95, dist > 1.05
  assert inner.any() and outer.any()
  assert np.all(outward[inner] > 0) and np.all(outward[outer] < 0)


def test_scores_from_scaled_and_table5_variants(rng):
  x = rng.uniform(0.0, 3.0, (B, N)).astype(np.float32)
  h = activations.get_activation("hanon")
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x)), -x)
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x, h)),
                                -np.asarray(h(x)))
  ident = activations.get_activation("identity")
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x, ident)), -x)
  # "HA + AllNeg" is allneg_loss on activated scores
  targets = rng.integers(0, N, B)
  want, _ = np_allneg(-np.asarray(h(x), np.float64), targets)
  got = baselines.allneg_loss(baselines.scores_from_scaled(x, h), targets)
  assert float(got) == pytest.approx(want, rel=1e-5)
  # NonNeg's square loss on -h(x) with target 0 is HaLE's PosSquare alignment mean(h(x)^2)
  hx = np.asarray(h(x[:, 0]), np.float64)
  got = baselines.nonneg_loss(baselines.scores_from_scaled(x[:, 0], h), jnp.zeros((3, 2)), 0.0)
  assert float(got) == pytest.approx(np.mean(hx**2), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# jit, vmap, extreme inputs.


def _samneg_case(p, n):
  return baselines.samneg_loss(p, n, 1.0)


def _advneg_case(p, n):
  return baselines.advneg_loss(p, n, 1.0, 1.0)


def _allneg_case(s, t):
  return baselines.allneg_loss(s, t, 0.1)


def _nonneg_case(p, e):
  return baselines.nonneg_loss(p, e, 0.5, 1.0)


def _loss_cases(rng, scale=None):
  """(name, loss, args, differentiable argnums) with float32 inputs; ``scale`` gives +-scale."""
  pos, neg, scores, targets, npos, entity = _every_input(rng)
  if scale is not None:
    sign = lambda a: scale * np.where(rng.random(a.shape) < 0.5, -1.0, 1.0)  # noqa: E731
    pos, neg, scores, npos, entity = map(sign, (pos, neg, scores, npos, entity))
  f32 = jnp.float32
  return [
      ("samneg", _samneg_case, (f32(pos), f32(neg)), (0, 1)),
      ("advneg", _advneg_case, (f32(pos), f32(neg)), (0, 1)),
      ("allneg", _allneg_case, (f32(scores), jnp.asarray(targets, jnp.int32)), (0,)),
      ("nonneg", _nonneg_case, (f32(npos), f32(entity)), (0, 1)),
  ]


def test_jit_and_vmap(rng):
  cases = _loss_cases(rng)
  for name, f, args, _ in cases:
    eager = f(*args)
    np.testing.assert_allclose(float(jax.jit(f)(*args)), float(eager), rtol=1e-6, err_msg=name)
  # vmap over a leading axis of 3 independent problems
  stacks = [_loss_cases(rng) for _ in range(3)]
  for i, (name, f, _, argnums) in enumerate(cases):
    stacked = tuple(jnp.stack([s[i][2][k] for s in stacks]) for k in range(2))
    got, vgrad = jax.jit(jax.vmap(jax.value_and_grad(f, argnums=argnums)))(*stacked)
    single = _vg(f, argnums)
    for j, s in enumerate(stacks):
      want, g = single(*s[i][2])
      np.testing.assert_allclose(float(got[j]), float(want), rtol=1e-6, err_msg=name)
      for a, b in zip(vgrad, g):
        np.testing.assert_allclose(np.asarray(a[j]), np.asarray(b), rtol=1e-5, atol=1e-8,
                                   err_msg=name)


@pytest.mark.parametrize("scale", [1.0e4, 1.0e2])
def test_extreme_inputs_are_finite(rng, scale):
  for name, f, args, argnums in _loss_cases(rng, scale):
    value, grads = _vg(f, argnums=argnums)(*args)
    assert np.isfinite(float(value)), name
    for g in grads:
      assert np.all(np.isfinite(np.asarray(g))), name
  # temperature 0 and large temperatures too
  pos = jnp.float32([1e4, -1e4, 0.0])
  neg = jnp.float32([[1e4, -1e4], [-1e4, -1e4], [1e4, 1e4]])
  for t in (0.0, 1.0, 50.0):
    value, grads = _vg(baselines.advneg_loss, argnums=(0, 1))(pos, neg, t)
    assert np.isfinite(float(value)) and all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_extreme_values_match_reference(x64):
  pos = np.array([1e4, -1e4, 0.0])
  neg = np.array([[1e4, -1e4], [-1e4, -1e4], [1e4, 3.0]])
  for f, ref in ((baselines.samneg_loss, np_samneg), (baselines.advneg_loss, np_advneg)):
    value, grads = _vg(f, argnums=(0, 1))(jnp.asarray(pos), jnp.asarray(neg))
    want, wgrads = ref(pos, neg)
    _close(value, want, 1e-12, 1e-12)
    for g, w in zip(grads, wgrads):
      _close(g, w, 1e-12, 1e-15)
  scores = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]])
  targets = np.array([1, 2])
  value, grad = _vg(baselines.allneg_loss)(jnp.asarray(scores), targets, 0.1)
  want, wgrad = np_allneg(scores, targets, 0.1)
  _close(value, want, 1e-12, 1e-12)
  _close(grad, wgrad, 1e-12, 1e-15)
