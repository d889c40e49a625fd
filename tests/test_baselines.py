"""hale_jax.baselines (the §4.1.2 training strategies) against float64 NumPy computations."""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from hale_jax import activations, baselines
from reference import (FD_EPS, np_hanon, np_advneg, np_allneg, np_nonneg, np_samneg, np_sigmoid,
                       np_softmax, np_softplus, np_spread_penalty, seeded_rng)

B, M, N, D = 5, 4, 7, 6


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


def _close(got, want, rtol, atol):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# Values and gradients against the references (float32 and float64).


class _Checks:
  """Value-and-gradient checks shared by the test classes below (``self.variant`` is chex's)."""

  def _check(self, loss, args, reference, argnums, rtol=1e-5, grad_atol=1e-7):
    """``value_and_grad(loss)`` on float32 ``args`` against ``reference`` on their float64
    values: ``(value, gradients)``."""
    args32 = tuple(jnp.asarray(a, jnp.float32) if np.issubdtype(np.asarray(a).dtype, np.floating)
                   else jnp.asarray(a, jnp.int32) for a in args)
    got, grads = self.variant(jax.value_and_grad(loss, argnums=argnums))(*args32)
    chex.assert_shape(got, ())
    chex.assert_type(got, jnp.float32)
    want, wgrads = reference(*(np.asarray(a, np.float64) if a.dtype == jnp.float32
                               else np.asarray(a) for a in args32))
    chex.assert_trees_all_close(got, want, rtol=rtol, atol=1e-6)
    chex.assert_trees_all_close(tuple(grads), tuple(wgrads), rtol=rtol, atol=grad_atol)

  def _samneg(self, margin):
    rng = seeded_rng(self.id())
    self._check(lambda p, n: baselines.samneg_loss(p, n, margin), _sam_inputs(rng),
                lambda p, n: np_samneg(p, n, margin), (0, 1))

  def _advneg(self, temperature, margin):
    rng = seeded_rng(self.id())
    self._check(lambda p, n: baselines.advneg_loss(p, n, temperature, margin),
                _sam_inputs(rng), lambda p, n: np_advneg(p, n, temperature, margin), (0, 1))

  def _allneg(self):
    rng = seeded_rng(self.id())
    self._check(baselines.allneg_loss, _all_inputs(rng),
                lambda s, t: (lambda v, g: (v, (g,)))(*np_allneg(s, t)), (0,))

  def _nonneg(self):
    rng = seeded_rng(self.id())
    reg = float(rng.uniform(0.1, 1.0))
    self._check(lambda p, e: baselines.nonneg_loss(p, e, reg), _non_inputs(rng),
                lambda p, e: np_nonneg(p, e, reg), (0, 1), rtol=1e-4, grad_atol=1e-6)


class ReferenceTest(_Checks, chex.TestCase):
  """Each loss's value and gradient against the float64 references, jitted (quick tier)."""

  @chex.variants(with_jit=True)
  def test_samneg(self):
    self._samneg(1.5)

  @chex.variants(with_jit=True)
  def test_advneg(self):
    self._advneg(0.5, 3.0)

  @chex.variants(with_jit=True)
  def test_allneg(self):
    self._allneg()

  @chex.variants(with_jit=True)
  def test_nonneg(self):
    self._nonneg()


@pytest.mark.slow
class EagerReferenceTest(_Checks, chex.TestCase):
  """The same, not jitted (op by op)."""

  @chex.variants(without_jit=True)
  def test_samneg(self):
    self._samneg(1.5)

  @chex.variants(without_jit=True)
  def test_advneg(self):
    self._advneg(0.5, 3.0)

  @chex.variants(without_jit=True)
  def test_allneg(self):
    self._allneg()

  @chex.variants(without_jit=True)
  def test_nonneg(self):
    self._nonneg()


@pytest.mark.slow
class OtherSettingsTest(_Checks, chex.TestCase):
  """SamNeg without a margin; AdvNeg at temperatures 1 and 0 (uniform weights)."""

  @chex.variants(with_jit=True)
  def test_samneg_no_margin(self):
    self._samneg(0.0)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(("t1", 1.0, 0.0), ("t0", 0.0, 0.0))
  def test_advneg_temperatures(self, temperature, margin):
    self._advneg(temperature, margin)


@pytest.mark.slow
def test_float64_values_and_gradients_are_exact(rng, x64):
  pos, neg, scores, targets, npos, entity = _every_input(rng)
  cases = [
      (lambda p, n: baselines.samneg_loss(p, n, 0.5), (pos, neg), np_samneg(pos, neg, 0.5)),
      (lambda p, n: baselines.advneg_loss(p, n, 0.8, 2.0), (pos, neg),
       np_advneg(pos, neg, 0.8, 2.0)),
      (lambda s: baselines.allneg_loss(s, targets), (scores,),
       (lambda v, g: (v, (g,)))(*np_allneg(scores, targets))),
      (lambda p, e: baselines.nonneg_loss(p, e, 0.3), (npos, entity),
       np_nonneg(npos, entity, 0.3)),
  ]
  for f, args, (want, wgrads) in cases:
    args = tuple(jnp.asarray(a) for a in args)
    got, grads = _vg(f, argnums=tuple(range(len(args))))(*args)
    assert got.dtype == jnp.float64
    _close(got, want, 1e-12, 1e-14)
    for g, w in zip(grads, wgrads):
      _close(g, w, 1e-10, 1e-14)
  _close(baselines.entity_spread_penalty(jnp.asarray(entity)), np_spread_penalty(entity), 1e-12,
         1e-14)


@pytest.mark.slow
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
  check_grads(jit(lambda s: baselines.allneg_loss(s, targets)), (scores,), **kw)
  check_grads(jit(lambda p, e: baselines.nonneg_loss(p, e, 0.4)), (npos, entity), **kw)
  check_grads(jit(baselines.entity_spread_penalty), (entity,), **kw)


@pytest.mark.slow
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
# Hand-computed cases (the losses jitted: one compilation per shape instead of one per op).

samneg_loss = jax.jit(baselines.samneg_loss)
advneg_loss = jax.jit(baselines.advneg_loss)
allneg_loss = jax.jit(baselines.allneg_loss)
nonneg_loss = jax.jit(baselines.nonneg_loss)
entity_spread_penalty = jax.jit(baselines.entity_spread_penalty)


def test_samneg_hand_cases():
  assert float(samneg_loss(jnp.zeros(1), jnp.zeros((1, 3)))) == pytest.approx(
      math.log(2.0), rel=1e-6)
  assert float(samneg_loss(jnp.array([-1.0]), jnp.array([[-1.0]]), margin=1.0)) == \
      pytest.approx(math.log(2.0), rel=1e-6)
  # pos log 3 -> log(4/3); neg -log 3 -> log(4/3); one mean over the 2 terms
  l3 = math.log(3.0)
  assert float(samneg_loss(jnp.array([l3]), jnp.array([[-l3]]))) == pytest.approx(
      math.log(4.0 / 3.0), rel=1e-6)
  # KGEmb averaging: one positive (log 2) and three negatives at 0 (log 2) and at -log 3 / -log3
  # -> (log 2 + log 2 + 2 log(4/3)) / 4
  got = samneg_loss(jnp.array([0.0]), jnp.array([[0.0, -l3, -l3]]))
  assert float(got) == pytest.approx((2 * math.log(2.0) + 2 * math.log(4.0 / 3.0)) / 4, rel=1e-6)


def test_advneg_hand_case():
  l3 = math.log(3.0)
  # weights softmax([0, log 3]) = [1/4, 3/4]; -log s(log 3) = log(4/3);
  # -log s(-0) = log 2, -log s(-log 3) = log 4
  got = advneg_loss(jnp.array([l3]), jnp.array([[0.0, l3]]), 1.0)
  want = 0.5 * (math.log(4.0 / 3.0) + 0.25 * math.log(2.0) + 0.75 * math.log(4.0))
  assert float(got) == pytest.approx(want, rel=1e-6)
  # the margin shifts the logits, not the weights
  got = advneg_loss(jnp.array([l3 - 2.0]), jnp.array([[-2.0, l3 - 2.0]]), 1.0, 2.0)
  assert float(got) == pytest.approx(want, rel=1e-6)


def test_advneg_at_zero_temperature_is_balanced_samneg(rng):
  pos, neg = _sam_inputs(rng)
  balanced = np.mean(np_softplus(-pos) + np.mean(np_softplus(neg), axis=-1))
  got = advneg_loss(jnp.float32(pos), jnp.float32(neg), 0.0)
  assert 2 * float(got) == pytest.approx(balanced, rel=1e-5)


def test_allneg_hand_cases():
  assert float(allneg_loss(jnp.zeros((1, 4)), jnp.array([0]))) == pytest.approx(
      math.log(4.0), rel=1e-6)
  scores = jnp.log(jnp.array([[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]]))
  got = allneg_loss(scores, jnp.array([2, 0]))
  assert float(got) == pytest.approx(0.5 * (math.log(8.0 / 5.0) + math.log(8.0)), rel=1e-6)
  # the target is in the softmax's denominator (Eq. 2): never below 0, 0 only in the limit
  got = allneg_loss(jnp.array([[0.0, math.log(3.0)]]), jnp.array([1]))
  assert float(got) == pytest.approx(math.log(4.0 / 3.0), rel=1e-6)


def test_nonneg_hand_cases():
  pos = jnp.array([-1.0, -2.0])
  entity = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [0.0, -3.0]]) + 5.0  # centre (5, 5)
  # square loss (1 + 4) / 2; squared distances to the centre 1, 1, 9, 9; gaps 0, 0, 8, 8
  assert float(nonneg_loss(pos, entity, 0.1)) == pytest.approx(2.5 + 0.1 * 32.0,
                                                                        rel=1e-6)
  assert float(nonneg_loss(pos, entity, 0.0)) == pytest.approx(2.5, rel=1e-6)
  assert float(entity_spread_penalty(entity)) == pytest.approx(32.0, rel=1e-6)
  # entities on the unit circle around their centre: no penalty (the radius is 1)
  ring = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]) + 3.0
  assert float(entity_spread_penalty(ring)) == pytest.approx(0.0, abs=1e-6)
  assert float(entity_spread_penalty(2.0 * ring)) == pytest.approx(9.0, rel=1e-6)


def test_nonneg_regulariser_pushes_inner_entities_out_and_outer_in(rng):
  half = rng.normal(0.0, 1.0, (20, 3))
  half *= rng.uniform(0.05, 3.0, (20, 1)) / np.linalg.norm(half, axis=1, keepdims=True)
  # symmetric about 0: the centroid's own gradient cancels, so each entity's gradient is its
  # own term 4 gap_i (e_i - c) / N
  entity = np.concatenate([half, -half])
  grad = np.asarray(jax.jit(jax.grad(baselines.entity_spread_penalty))(jnp.float32(entity)))
  centred = entity - entity.mean(0)
  dist = np.linalg.norm(centred, axis=1)
  outward = np.sum(-grad * centred, axis=1)  # descent direction . (e_i - c)
  inner, outer = dist < 0.95, dist > 1.05
  assert inner.any() and outer.any()
  assert np.all(outward[inner] > 0) and np.all(outward[outer] < 0)


def test_scores_from_scaled_and_table5_variants(rng):
  x = rng.uniform(0.0, 3.0, (B, N)).astype(np.float32)
  h = activations.get_activation("hanon")
  # the default (and None) is Hanon, as everywhere; "identity" is the plain -x
  for default in (baselines.scores_from_scaled(x), baselines.scores_from_scaled(x, None)):
    np.testing.assert_allclose(np.asarray(default), -np_hanon(x.astype(np.float64)), rtol=2e-6)
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x, "identity")), -x)
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x, h)),
                                -np.asarray(h(x)))
  ident = activations.get_activation("identity")
  np.testing.assert_array_equal(np.asarray(baselines.scores_from_scaled(x, ident)), -x)
  # "HA + AllNeg" is allneg_loss on activated scores
  targets = rng.integers(0, N, B)
  want, _ = np_allneg(-np.asarray(h(x), np.float64), targets)
  got = allneg_loss(baselines.scores_from_scaled(x, h), targets)
  assert float(got) == pytest.approx(want, rel=1e-5)
  # NonNeg's square loss on -h(x) with target 0 is HaLE's PosSquare alignment mean(h(x)^2)
  hx = np.asarray(h(x[:, 0]), np.float64)
  got = nonneg_loss(baselines.scores_from_scaled(x[:, 0], h), jnp.zeros((3, 2)), 0.0)
  assert float(got) == pytest.approx(np.mean(hx**2), rel=1e-5)


# ----------------------------------------------------------------------------------------------
# jit, vmap, extreme inputs.


def _samneg_case(p, n):
  return baselines.samneg_loss(p, n, 1.0)


def _advneg_case(p, n):
  return baselines.advneg_loss(p, n, 1.0, 1.0)


def _allneg_case(s, t):
  return baselines.allneg_loss(s, t)


def _nonneg_case(p, e):
  return baselines.nonneg_loss(p, e, 0.5)


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


@pytest.mark.slow
def test_vmap(rng):
  """vmap over a leading axis of 3 independent problems gives each problem's value and
  gradient (jit and eager are compared with the references in ReferenceTest)."""
  cases = _loss_cases(rng)
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


@pytest.mark.parametrize("scale", [1.0e4, pytest.param(1.0e2, marks=pytest.mark.slow)])
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


@pytest.mark.slow
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
  value, grad = _vg(baselines.allneg_loss)(jnp.asarray(scores), targets)
  want, wgrad = np_allneg(scores, targets)
  _close(value, want, 1e-12, 1e-12)
  _close(grad, wgrad, 1e-12, 1e-15)
