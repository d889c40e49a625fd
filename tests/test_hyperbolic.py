"""The hyperbolic models' distance on every path, against float64 NumPy references.

``hale_jax.hyperbolic`` (the ball maths and the squared Poincaré distance as an elementwise map
of ``<q, e>``, ``|q|^2``, ``|e|^2``) is checked against ``reference.np_hyperbolic_distance2``,
written from the definition (the Möbius sum ``(-x) (+)_c expmap0(v, c)`` itself, ``np.tanh``,
``np.arctanh``): values and gradients, in float64 tightly and in float32 within tolerances.
Then every path that compares a query with all entities must give the same numbers: the plain,
chunked and fused (Pallas, interpreted) uniformity LSE, the HaLE, AllNeg and SamNeg objectives,
and the filtered ranking.  Last, float32 safety at the ball's boundary: no NaN or infinity in
values or gradients.  The transforms RotH, RefH and AttH are checked in test_models.py.
"""

from __future__ import annotations

import decimal
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import (activations, chunked, config, distances, ranking, hyperbolic, lse_kernel,
                      models, objective)
from hale_jax.data import from_named_triples
from reference import (FD_EPS, SPLITS, known_answers, np_activation, np_batch_loss,
                       np_biased_scores, np_allneg, np_expmap0, np_hyperbolic_distance2,
                       np_logsumexp, np_mobius_add, np_project, np_ranks, np_samneg,
                       np_transform, random_batch, random_params, rel_err, split_queries)

# k queries, N entities (ragged for chunks of 7 and blocks of 16), d dimensions.
K, N, D = 5, 23, 6


def _ball(rng, k, d, c, lo=0.0, hi=0.99):
  """``k`` points of the balls of curvature ``c [k]``, at radii ``U(lo, hi) / sqrt(c)``."""
  direction = rng.normal(size=(k, d))
  direction /= np.linalg.norm(direction, axis=1, keepdims=True)
  return direction * rng.uniform(lo, hi, (k, 1)) / np.sqrt(c)[:, None]


def _tangents(rng, n, d, lo=1e-3, hi=3.0):
  """``n`` tangent vectors with norms log-uniform in ``[lo, hi]``."""
  direction = rng.normal(size=(n, d))
  direction /= np.linalg.norm(direction, axis=1, keepdims=True)
  return direction * np.exp(rng.uniform(np.log(lo), np.log(hi), (n, 1)))


def _inputs(rng, k=K, n=N, d=D):
  """``(queries [k, d], entities [n, d], curvature [k])`` in float64 NumPy."""
  c = rng.uniform(0.3, 3.0, k)
  return _ball(rng, k, d, c), _tangents(rng, n, d), c


def _np_all_pairs(q, e, c):
  return np_hyperbolic_distance2(np.asarray(q)[:, None, :], np.asarray(e)[None, :, :],
                                 np.asarray(c)[:, None])


# ---------------------------------------------------------------------------------------------
# The ball maths and the distance.


def _decimal_ratios(s: float, dtype) -> tuple[float, float, float, float]:
  """``(tanh(x)/x, its d/ds, artanh(min(x, 1 - 1e-5))/x, its d/ds)`` at ``x = sqrt(s)`` from the
  definitions in 60-digit decimal arithmetic (``tanh`` and ``artanh`` from ``exp`` and ``ln``),
  the derivatives by central differences of relative step 1e-20 (the limits 1 and -+1/3 at 0).
  The clamp ``1 - 1e-5`` is taken as ``dtype`` holds it (artanh magnifies the difference)."""
  if s == 0:
    return 1.0, -1.0 / 3.0, 1.0, 1.0 / 3.0
  clamp = decimal.Decimal(float(np.asarray(1 - 1e-5, dtype)))

  def tanh_ratio(t):
    x = t.sqrt()
    e = (2 * x).exp()
    return (e - 1) / (e + 1) / x

  def artanh_ratio(t):
    x = t.sqrt()
    z = min(x, clamp)
    return ((1 + z) / (1 - z)).ln() / 2 / x

  with decimal.localcontext(decimal.Context(prec=60)):
    t = decimal.Decimal(float(s))
    h = t * decimal.Decimal("1e-20")
    return tuple(float(v) for f in (tanh_ratio, artanh_ratio)
                 for v in (f(t), (f(t + h) - f(t - h)) / (2 * h)))


SERIES_POINTS = np.array([0.0, 1e-12, 1e-7, 1e-4, 9e-3, 1.1e-2, 0.09, 0.11, 0.3, 0.99999, 2.0,
                          30.0])


def test_series_functions_match_their_definitions(x64):
  """``tanh(x) / x`` and ``artanh(x) / x`` at ``x = sqrt(s)`` and their derivatives on both
  sides of the series' switches (1e-2 in float64, 0.1 in float32) and of the artanh clamp, to
  a few units of each dtype's rounding."""
  fns = (hyperbolic.tanh_ratio, hyperbolic.artanh_ratio)
  for dtype, rtol in ((jnp.float64, 1e-13), (jnp.float32, 1e-5)):
    want = np.array([_decimal_ratios(s, dtype) for s in SERIES_POINTS]).T
    s = jnp.asarray(SERIES_POINTS, dtype)
    got = jax.jit(lambda s: [f(s) for fn in fns for f in (fn, jax.vmap(jax.grad(fn)))])(s)
    for g, w in zip(got, want):
      assert g.dtype == dtype
      np.testing.assert_allclose(np.asarray(g, np.float64), w, rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.slow
def test_ball_maps_match_reference(rng, x64):
  q, _, c = _inputs(rng)
  u = _tangents(rng, K, D, 1e-3, 8.0)
  y = _ball(rng, K, D, c)
  for dtype, rtol, eps in ((jnp.float64, 1e-13, 1e-5), (jnp.float32, 2e-6, 4e-3)):
    cast = lambda a, dt=dtype: jnp.asarray(a, dt)
    np.testing.assert_allclose(np.asarray(hyperbolic.expmap0(cast(u), cast(c))),
                               np_expmap0(u, c, eps), rtol=rtol, atol=rtol * 1e-3)
    np.testing.assert_allclose(np.asarray(hyperbolic.mobius_add(cast(q), cast(y), cast(c))),
                               np_mobius_add(q, y, c), rtol=10 * rtol, atol=10 * rtol)
    far = 2.0 * q  # half of these lie outside their ball
    np.testing.assert_allclose(np.asarray(hyperbolic.project(cast(far), cast(c))),
                               np_project(far, c, eps), rtol=rtol)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distance_matches_reference(rng, x64, dtype):
  """All pairs (the matmul form, as every LSE and ranking computes it) and row by row."""
  q, e, c = _inputs(rng)
  want = _np_all_pairs(q, e, c)
  dt = jnp.dtype(dtype)
  got = distances.squared_distances(jnp.asarray(q, dt), jnp.asarray(e, dt),
                                 curvature=jnp.asarray(c, dt))
  assert got.dtype == dt and got.shape == (K, N)
  pair = distances.pair_squared_distances(jnp.asarray(q, dt), jnp.asarray(e[:K], dt),
                                       jnp.asarray(c, dt))
  assert pair.shape == (K,)
  rtol = 1e-10 if dtype == "float64" else 2e-4
  np.testing.assert_allclose(np.asarray(got), want, rtol=rtol)
  np.testing.assert_allclose(np.asarray(pair), np.diag(want[:, :K]), rtol=rtol)
  # the reference itself: the Poincaré metric is at least twice the Euclidean one, so
  # d^2 >= 4 |x - y|^2, with equality only near the origin
  euclid = np.sum((q[:, None, :] - np_expmap0(e[None], c[:, None])) ** 2, -1)
  assert (want >= 4.0 * euclid * (1 - 1e-12)).all() and (want > 40.0 * euclid).any()


@pytest.mark.slow
def test_distance_gradients_float64(rng, x64):
  q, e, c = (jnp.asarray(a) for a in _inputs(rng, 3, 4, 4))
  w = jnp.asarray(rng.normal(size=(3, 4)))
  check_grads(jax.jit(lambda a, b, k: jnp.sum(w * distances.squared_distances(a, b, curvature=k))),
              (q, e, c), order=1, modes=("rev",), eps=FD_EPS)
  check_grads(jax.jit(lambda a, b, k: jnp.sum(w[:, 0] * distances.pair_squared_distances(a, b, k))),
              (q, e[:3], c), order=1, modes=("rev",), eps=FD_EPS)


def test_float32_gradients_at_the_initial_scale(rng, x64):
  """KGEmb initialises every table at ``1e-3 * N(0, 1)``: there ``tanh(x) / x`` differentiated
  by the quotient rule is off by about ``eps / x^2`` (a percent at these norms) in float32; the
  series keep the float32 gradients of the distance within 1e-4 of float64."""
  q, e = 1e-3 * rng.normal(size=(K, D)), 1e-3 * rng.normal(size=(N, D))
  c = rng.uniform(0.5, 2.0, K)
  w = rng.normal(size=(K, N))

  def grads(dtype):
    f = lambda a, b, k: jnp.sum(jnp.asarray(w, dtype) * distances.squared_distances(
        a, b, curvature=k))
    return jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*(jnp.asarray(a, dtype) for a in (q, e, c)))

  for got, want in zip(grads(jnp.float32), grads(jnp.float64)):
    assert rel_err(got, want) < 1e-4


# ---------------------------------------------------------------------------------------------
# Every path over all entities: plain, chunked, fused.


def _lse_args(rng, dtype):
  q, e, c = _inputs(rng)
  scale = rng.uniform(0.5, 2.0, K)
  bias = rng.normal(0.0, 0.5, N)
  return tuple(jnp.asarray(a, dtype) for a in (q, scale, e, bias, c)) + (
      jnp.asarray(rng.normal(size=K), dtype),)


def _plain(h):
  def loss(q, s, e, b, k, w):
    d = distances.squared_distances(q, e, curvature=k)
    return jnp.sum(w * jax.nn.logsumexp(b[None, :] - h(s[:, None] * d), axis=-1))
  return loss


def _chunked(h):
  return lambda q, s, e, b, k, w: jnp.sum(w * chunked.uniformity_lse(q, s, e, h, 7, entity_bias=b,
                                                                      curvature=k))


def _kept(h):
  """The chunked path keeping the forward pass's inner products for the backward pass."""
  return lambda q, s, e, b, k, w: jnp.sum(w * chunked.uniformity_lse(
      q, s, e, h, 7, entity_bias=b, curvature=k, keep_products=True))


def _fused(h):
  return lambda q, s, e, b, k, w: jnp.sum(w * lse_kernel.uniformity_lse_fused(
      q, s, e, h, entity_bias=b, curvature=k, block_k=16, block_n=16, num_splits=2))


def _value_and_grads(loss, args):
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2, 3, 4)))(*args)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["chunked", "kept", "fused"])
def test_lse_paths_equal_plain_float64(rng, x64, path):
  """Value and gradients (queries, scales, entities, biases, curvatures) to float64 rounding;
  the plain value against NumPy from the definition."""
  args = _lse_args(rng, jnp.float64)
  h = activations.get_activation("hanon")
  paths = {"chunked": _chunked, "kept": _kept, "fused": _fused}
  value, grads = _value_and_grads(paths[path](h), args)
  want_value, want_grads = _value_and_grads(_plain(h), args)
  q, s, e, b, c, w = (np.asarray(a) for a in args)
  np_value = np.sum(w * np_logsumexp(b[None, :] - np_activation("hanon")(
      s[:, None] * _np_all_pairs(q, e, c))))
  np.testing.assert_allclose(float(want_value), np_value, rtol=1e-12)
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
  for got, want in zip(grads, want_grads):
    assert rel_err(got, want) < 1e-10
  assert float(jnp.max(jnp.abs(grads[4]))) > 0  # the curvature gets a gradient


@pytest.mark.slow
@pytest.mark.parametrize("path", ["chunked", "fused"])
def test_lse_paths_equal_plain_float32(rng, path):
  args = _lse_args(rng, jnp.float32)
  h = activations.get_activation("hanon")
  value, grads = _value_and_grads({"chunked": _chunked, "fused": _fused}[path](h), args)
  want_value, want_grads = _value_and_grads(_plain(h), args)
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-5)
  for got, want in zip(grads, want_grads):
    assert rel_err(got, want) < 1e-5


def test_fused_lowers_to_triton_for_the_hyperbolic_distance():
  """The hyperbolic tiles (the map and its pullback inside the kernels) lower to Triton: three
  kernels for forward and backward, and no ``k x N`` array outside them."""
  k, n, d = 103, 1000, 32
  S = jax.ShapeDtypeStruct
  shapes = (S((k, d), jnp.float32), S((k,), jnp.float32), S((n, d), jnp.float32),
            S((k,), jnp.float32))
  h = activations.get_activation("hanon")
  loss = lambda q, c, e, kappa: jnp.sum(lse_kernel.uniformity_lse_fused(
      q, c, e, h, curvature=kappa, interpret=False))
  checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
  text = jax.export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3))), platforms=["cuda"],
                           disabled_checks=checks)(*shapes).mlir_module()
  assert text.count("__gpu$xla.gpu.triton") == 3
  dims = [tuple(map(int, t.split("x"))) for t in re.findall(r"tensor<([\dx]+)x\w+>", text)]
  assert not [s for s in dims if np.prod(s) >= k * n]


def test_curvature_shape_is_checked():
  h = activations.get_activation("hanon")
  q, s, e = jnp.ones((3, 4)), jnp.ones(3), jnp.ones((7, 4))
  with pytest.raises(ValueError, match="expected curvature"):
    chunked.uniformity_lse(q, s, e, h, 2, curvature=jnp.ones(7))
  with pytest.raises(ValueError, match="expected curvature"):
    lse_kernel.uniformity_lse_fused(q, s, e, h, curvature=jnp.ones(4))


# ---------------------------------------------------------------------------------------------
# The objectives and the ranking use it.

NR, B = 3, 12


def _config(**kw):
  return config.Config.make(**{"batch_size": B, "alpha": 0.25, "num_negatives": 7,
                               "max_epochs": 1, "max_seconds": 0, "dim": D, **kw})


@pytest.mark.parametrize("model", ["RotH", pytest.param("RefH", marks=pytest.mark.slow),
                                   pytest.param("AttH", marks=pytest.mark.slow)])
def test_hale_objective_matches_numpy_on_each_uniformity(rng, model):
  """HaLE through ``make_loss`` with the plain and the chunked uniformity term."""
  cfg = _config(model=model, lse_chunk=7)
  params = random_params(rng, model, N, NR, D, init_scale=0.3)
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  want = np_batch_loss(model, params, batch, np_activation("hanon"), cfg.objective.lam,
                       cfg.num_sampled)
  chunk_fn, form = objective.choose_uniformity(cfg.objective, N, allow_chunks=True)
  assert form == "chunks of 7"
  for uniformity in (None, chunk_fn):
    loss = objective.make_loss(cfg.objective, model, cfg.num_sampled, uniformity)
    np.testing.assert_allclose(float(jax.jit(loss)(params, batch, None)), want, rtol=2e-5)


@pytest.mark.parametrize("loss", ["allneg", pytest.param("samneg", marks=pytest.mark.slow)])
def test_baselines_use_the_hyperbolic_distance(rng, loss):
  model = "RefH" if loss == "allneg" else "RotH"
  cfg = _config(model=model, loss=loss, activation="identity")
  params = random_params(rng, model, N, NR, D, init_scale=0.3,
                         entity_bias=objective.bias_tables(loss, "auto"))
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  got = float(jax.jit(objective.make_loss(cfg.objective, model, cfg.num_sampled))(
      params, batch, key))
  h = np_activation("identity")
  if loss == "allneg":
    _, scores = np_biased_scores(model, params, batch, np.arange(N)[None, :], h)
    want = np_allneg(scores, np.asarray(batch)[:, 2])[0]
  else:
    negs = np.asarray(jax.random.randint(key, (B, 7), 0, N))
    want = np_samneg(*np_biased_scores(model, params, batch, negs, h))[0]
  np.testing.assert_allclose(got, want, rtol=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["AttH", "RotH"])
def test_evaluator_matches_brute_force(rng, model):
  data = from_named_triples("tiny", SPLITS)
  params = random_params(rng, model, data.num_entities, data.num_relations, 4, 1.0)
  opt, pess = ranking.Evaluator(data, "test", model, chunk=4).ranks(params)
  heads, rels, targets = split_queries(data, "test")
  q = np_transform(model, params, heads, rels)
  c = np.log1p(np.exp(np.asarray(params["curvature"], np.float64)[rels]))
  d = _np_all_pairs(q, np.asarray(params["entity"], np.float64), c)
  known = known_answers(data)
  want_opt, want_pess = np_ranks(d, targets, [known[(h, r)] - {t}
                                              for h, r, t in zip(heads, rels, targets)])
  np.testing.assert_array_equal(opt, want_opt)
  np.testing.assert_array_equal(pess, want_pess)
  # Most of these points lie near their ball's boundary, where float32 loses digits: a relative
  # error eps of z = sqrt(c) |(-x) (+) y| near 1 becomes eps / (1 - z) in artanh(z).
  got = ranking.candidate_distances(params, model, heads, rels)
  np.testing.assert_allclose(np.asarray(got), d, rtol=3e-3)


# ---------------------------------------------------------------------------------------------
# float32 at the boundary of the ball.


def _boundary_inputs(rng):
  """float32 queries on the projection's radius ``(1 - 4e-3) / sqrt(c)`` (and one at 0),
  entities with huge tangent norms (``tanh`` saturates: ``y`` on the boundary), zero and tiny
  ones (distance 0 to the query at 0), one mapped onto a boundary query (distance ~0 by
  cancellation), curvatures from 1e-3 to 1e3."""
  c = np.array([1e-3, 0.5, 1.0, 3.0, 1e3, 1.0], np.float32)
  q = np.array(hyperbolic.project(jnp.asarray(_ball(rng, 6, D, c, 1.0, 1.0) * 1.5,
                                               jnp.float32), c))
  q[5] = 0.0
  e = _tangents(rng, N, D, 1e-4, 1e4).astype(np.float32)
  e[0], e[1] = 0.0, 1e-30
  q2 = np.asarray(q[2], np.float64)  # e[2] = logmap0(q[2]): expmap0(e[2]) is q[2]
  r = np.linalg.norm(q2)
  e[2] = np.arctanh(np.sqrt(c[2]) * r) / np.sqrt(c[2]) * q2 / r
  return jnp.asarray(q), jnp.asarray(e), jnp.asarray(c)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["plain", "chunked", "fused"])
def test_float32_boundary_values_and_gradients_are_finite(rng, path):
  q, e, c = _boundary_inputs(rng)
  assert np.allclose(np.linalg.norm(np.asarray(q[:5]), axis=1) * np.sqrt(np.asarray(c[:5])),
                     1 - 4e-3, rtol=1e-6)
  h = activations.get_activation("hanon")
  w = jnp.asarray(rng.normal(size=6), jnp.float32)
  fn = {"plain": _plain, "chunked": _chunked, "fused": _fused}[path](h)
  value, grads = _value_and_grads(fn, (q, jnp.ones(6), e, jnp.zeros(N), c, w))
  assert np.isfinite(float(value))
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  if path != "plain":
    return
  pair = lambda a, b, k: jnp.sum(distances.pair_squared_distances(a, b, k))
  value, grads = jax.jit(jax.value_and_grad(pair, argnums=(0, 1, 2)))(q, e[:6], c)
  assert np.isfinite(float(value)) and all(np.isfinite(np.asarray(g)).all() for g in grads)
  d = np.asarray(distances.squared_distances(q, e, curvature=c))
  assert (d >= 0).all() and np.isfinite(d).all()
  # the saturated entities are at the artanh clamp's distance, no farther
  assert d.max() <= 4.0 / float(c.min()) * np.arctanh(np.float32(1 - 1e-5)) ** 2 * (1 + 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["AttH", "RotH", "RefH"])
def test_transforms_stay_in_the_ball_with_finite_gradients(rng, model):
  """Huge tangent vectors: every query is projected inside its ball (float32), and the HaLE
  loss keeps finite gradients."""
  params = random_params(rng, model, N, NR, D, init_scale=50.0)
  batch = jnp.asarray(random_batch(rng, N, NR, B))
  q = models.transform(model, params, batch[:, 0], batch[:, 1])
  c = models.ball_curvature(params, batch[:, 1])
  radius = np.linalg.norm(np.asarray(q, np.float64), axis=1) * np.sqrt(np.asarray(c))
  assert (radius <= 1 - 4e-3 + 1e-6).all() and radius.max() > 0.99
  cfg = _config(model=model)
  loss = objective.make_loss(cfg.objective, model, cfg.num_sampled)
  value, grads = jax.jit(jax.value_and_grad(loss))(params, batch, None)
  assert np.isfinite(float(value))
  for key, g in grads.items():
    assert np.isfinite(np.asarray(g)).all(), key
