"""hale_jax.models against float64 NumPy references of the transforms in its docstring
(``reference.np_transform``); the hyperbolic models' distance and ball maths are in
test_hyperbolic.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import config, distances, models, rundir
from reference import FD_EPS, np_givens, np_softplus, np_transform, random_params, to_f64

MODELS = ("TransE", "DistMult", "RotatE", "RotE", "RotL", "RotH", "RefH", "AttH")
ROTATION_MODELS = ("RotatE", "RotE", "RotL", "RotH", "RefH", "AttH")  # Givens tables: d even
HYPERBOLIC = ("RotH", "RefH", "AttH")
# Quick tier: one Euclidean and one hyperbolic model for the costlier checks.
QUICK = ("TransE", "RotL", "AttH")
# One set of sizes for every test, so that compiled computations are shared between tests:
# N entities, NR = |R| relations (R2 = 2 |R| relation ids), D dimensions, B queries.
N, NR, D, B = 12, 3, 8, 16
R2 = 2 * NR

# models.transform compiled once per (model, shapes, dtype).
jit_transform = jax.jit(models.transform, static_argnums=0)

EXPECTED_KEYS = {
    "TransE": {"entity", "scale", "translation"},
    "DistMult": {"entity", "scale", "diagonal"},
    "RotatE": {"entity", "scale", "rotation"},
    "RotE": {"entity", "scale", "rotation", "translation"},
    "RotL": {"entity", "scale", "rotation", "translation", "alpha"},
    "RotH": {"entity", "scale", "curvature", "rotation", "pre_translation", "translation"},
    "RefH": {"entity", "scale", "curvature", "reflection", "translation"},
    "AttH": {"entity", "scale", "curvature", "rotation", "reflection", "context",
             "translation"},
}
VECTORS = {"scale", "alpha", "curvature"}  # the [R2] tables
UNIFORM = {"rotation", "reflection"}       # U(-1, 1) by default


@pytest.mark.parametrize("model", [m if m in ("TransE", "AttH")
                                   else pytest.param(m, marks=pytest.mark.slow) for m in MODELS])
def test_init_params_shapes_and_values(rng, model):
  n, r2, d = N, R2, D
  scale = 0.5
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  p = models.init_params(model, key, n, NR, d, scale)  # |R| relations: 2 |R| rows
  assert set(p) == EXPECTED_KEYS[model]
  for k, v in p.items():
    assert v.dtype == jnp.float32
    rows = n if k == "entity" else r2
    assert v.shape == ((rows, d) if k not in VECTORS else (rows,))
  np.testing.assert_allclose(np.asarray(models.relation_scale(p, np.arange(r2))), 1.0, rtol=1e-6)
  if model == "RotL":
    np.testing.assert_array_equal(np.asarray(p["alpha"]), 1.0)
  if model in HYPERBOLIC:  # KGEmb: the curvature parameter starts at 1, c = softplus(1)
    np.testing.assert_array_equal(np.asarray(p["curvature"]), 1.0)
    np.testing.assert_allclose(np.asarray(models.ball_curvature(p, np.arange(r2))),
                               np_softplus(1.0), rtol=1e-6)
  else:
    assert models.ball_curvature(p, np.arange(r2)) is None
  # the Gaussian tables really have standard deviation init_scale (loose: 88 or 48 draws);
  # the rotation and reflection tables are U(-1, 1) by default (std 1/sqrt(3))
  for k in EXPECTED_KEYS[model] - VECTORS - UNIFORM:
    std = float(np.std(np.asarray(p[k])))
    assert 0.3 * scale < std < 2.0 * scale, (k, std)
  for k in UNIFORM & set(p):
    rot = np.asarray(p[k])
    assert rot.min() >= -1.0 and rot.max() <= 1.0
    assert 0.4 < float(np.std(rot)) < 0.75
  # the same key gives the same parameters; the tables are drawn independently
  q = models.init_params(model.upper(), key, n, NR, d, scale)
  for k in p:
    np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(q[k]))
  tables = sorted(EXPECTED_KEYS[model] - VECTORS)
  for a in tables:
    for b in tables:
      if a < b:
        assert not np.allclose(np.asarray(p[a])[:r2], np.asarray(p[b])[:r2]), (a, b)


@pytest.mark.parametrize("model", MODELS)
def test_transform_matches_reference(rng, model):
  n, r2, d, b = N, R2, D, B
  params = random_params(rng, model, n, NR, d)
  heads = rng.integers(0, n, b)
  rels = rng.integers(0, r2, b)
  got = np.asarray(jit_transform(model, params, jnp.asarray(heads), jnp.asarray(rels)))
  assert got.shape == (b, d) and got.dtype == np.float32
  want = np_transform(model, params, heads, rels)
  scale = np.max(np.abs(want))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)


@pytest.mark.parametrize("model", MODELS)
def test_transform_float64_matches_reference_tightly(rng, x64, model):
  n, r2, d, b = N, R2, D, B
  params = random_params(rng, model, n, NR, d, dtype=jnp.float64)
  heads = rng.integers(0, n, b)
  rels = rng.integers(0, r2, b)
  got = np.asarray(jit_transform(model, params, heads, rels))
  assert got.dtype == np.float64
  np.testing.assert_allclose(got, np_transform(model, params, heads, rels), rtol=1e-12,
                             atol=1e-14)


def test_model_names_case_insensitive():
  for name in MODELS:
    assert models.canonical_model(name) == name.lower()
    assert models.canonical_model(name.upper()) == name.lower()
  assert tuple(models.MODEL_NAMES) == MODELS


def test_rotl_flexible_addition_clamps_denominator(x64):
  # entity 0 = (1, 0, 0.5, 0), identity rotation, translation -(2, 0, 0, 0): <x, y> = -2.
  params = {
      "entity": jnp.array([[1.0, 0.0, 0.5, 0.0], [0.3, -0.2, 0.1, 0.4]]),
      "rotation": jnp.array([[1.0, 0.0, 1.0, 0.0], [0.0, 2.0, 3.0, 4.0]]),
      "translation": jnp.array([[-2.0, 0.0, 0.0, 0.0], [0.1, 0.2, 0.3, 0.4]]),
      "alpha": jnp.array([1.5, 0.7]),
      "scale": jnp.zeros(2),
  }
  got = np.asarray(jit_transform("RotL", params, jnp.array([0, 1]), jnp.array([0, 1])))
  # clamped row: alpha (x + y) / 0.05
  np.testing.assert_allclose(got[0], 1.5 * np.array([-1.0, 0.0, 0.5, 0.0]) / 0.05, rtol=1e-12)
  # second row: rotation planes (0, 1) by 90 degrees, (3, 4)/5; formula exactly
  x = np.array([0.2, 0.3, (0.6 * 0.1 - 0.8 * 0.4), (0.8 * 0.1 + 0.6 * 0.4)])
  y = np.array([0.1, 0.2, 0.3, 0.4])
  np.testing.assert_allclose(got[1], 0.7 * (x + y) / (1.0 + x @ y), rtol=1e-12)
  np.testing.assert_allclose(got, np_transform("RotL", params, [0, 1], [0, 1]), rtol=1e-12)
  assert models.ROTL_MIN_DENOMINATOR == 0.05


def test_givens_zero_rotation_row_is_finite(x64):
  # A zero plane in the rotation row: the norm clamp keeps it finite (the plane maps to 0).
  rot = jnp.array([[0.0, 0.0, 3.0, 4.0]])
  x = jnp.array([[1.0, 2.0, 1.0, 0.0]])
  got = np.asarray(models.givens_rotate(rot, x))
  np.testing.assert_allclose(got, [[0.0, 0.0, 0.6, 0.8]], atol=1e-15)


def test_rotation_preserves_norms(rng):
  model = "RotatE"
  n, r2, d, b = N, R2, D, B
  params = random_params(rng, model, n, NR, d, init_scale=1.0)
  heads = rng.integers(0, n, b)
  rels = rng.integers(0, r2, b)
  q = np.asarray(jit_transform(model, params, heads, rels), np.float64)
  e = np.asarray(params["entity"], np.float64)[heads]
  np.testing.assert_allclose(np.linalg.norm(q, axis=1), np.linalg.norm(e, axis=1), rtol=1e-5)
  # plane by plane, too
  np.testing.assert_allclose(np.linalg.norm(q.reshape(b, -1, 2), axis=-1),
                             np.linalg.norm(e.reshape(b, -1, 2), axis=-1), rtol=1e-5, atol=1e-6)
  # ... and it is not the identity
  assert np.max(np.abs(q - e)) > 0.1
  # givens_rotate alone, with unnormalised rotation rows
  rot = rng.normal(size=(b, d)) * 7.0
  x = rng.normal(size=(b, d))
  y = np.asarray(models.givens_rotate(jnp.asarray(rot, jnp.float32), jnp.asarray(x, jnp.float32)))
  np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
  np.testing.assert_allclose(y, np_givens(rot, x), rtol=1e-5, atol=1e-5)


def test_relation_scale_is_softplus(rng):
  scale = rng.normal(0, 3, 9).astype(np.float32)
  scale[:3] = [-30.0, 0.0, 30.0]
  params = {"scale": jnp.asarray(scale)}
  rels = rng.integers(0, 9, 20)
  rels[:3] = [0, 1, 2]
  got = np.asarray(models.relation_scale(params, jnp.asarray(rels)))
  assert got.shape == (20,)
  assert (got > 0).all()
  np.testing.assert_allclose(got, np_softplus(scale[rels]), rtol=1e-5)


def test_squared_distances_matches_numpy(rng):
  q = rng.normal(size=(7, 6)).astype(np.float32)
  e = rng.normal(size=(11, 6)).astype(np.float32)
  got = np.asarray(distances.squared_distances(jnp.asarray(q), jnp.asarray(e)))
  want = np.sum((q[:, None, :].astype(np.float64) - e[None, :, :]) ** 2, axis=-1)
  assert got.shape == (7, 11)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  pair = np.asarray(distances.pair_squared_distances(jnp.asarray(q), jnp.asarray(e[:7])))
  assert pair.shape == (7,)
  np.testing.assert_allclose(pair, np.sum((q.astype(np.float64) - e[:7]) ** 2, axis=-1),
                             rtol=1e-6)
  np.testing.assert_allclose(pair, np.diag(got[:, :7]), rtol=1e-5, atol=1e-5)


def test_squared_distance_to_itself_is_clamped_at_zero(rng):
  # Large vectors: |q|^2 + |q|^2 - 2 q.q cancels catastrophically in float32.
  q = (1e3 + rng.normal(size=(64, 16)) * 50).astype(np.float32)
  qj = jnp.asarray(q)
  got = np.asarray(distances.squared_distances(qj, qj))
  assert (got >= 0).all()
  assert not np.isnan(got).any()
  # the self distances are cancellation noise: tiny next to |q|^2 (about 1.6e7)
  assert np.max(np.diag(got)) < 1e-3 * float(np.min(np.sum(q.astype(np.float64) ** 2, axis=1)))
  np.testing.assert_array_equal(np.asarray(distances.pair_squared_distances(qj, qj)), 0.0)
  # Guard that this input really exercises the clamp: without it some entries go negative.
  q2 = jnp.sum(qj * qj, axis=-1)
  raw = np.asarray(q2[:, None] + q2[None, :] - 2.0 * (qj @ qj.T))
  assert (raw < 0).any(), "inputs no longer produce cancellation; pick larger magnitudes"


def _kink_free_rows(model, params, heads, rels, margin=1e-2):
  """Rows of a RotL batch whose 1 + <x, y> is away from the 0.05 clamp."""
  if model != "RotL":
    return np.ones(len(heads), bool)
  p = to_f64(params)
  x = np_givens(p["rotation"][rels], p["entity"][heads])
  raw = 1.0 + np.sum(x * p["translation"][rels], axis=-1)
  return np.abs(raw - 0.05) > margin


# RotL (rotation, translation, flexible addition, scale) in the quick tier; the others,
# AttH with its attention, ball maps and curvature among them, in the full suite.
@pytest.mark.parametrize("model", [m if m == "RotL"
                                   else pytest.param(m, marks=pytest.mark.slow) for m in MODELS])
def test_transform_gradients(rng, x64, model):
  n, r2, d, b = N, R2, D, B
  # 0.3: the hyperbolic models' points stay clear of the projection at the ball's boundary
  params = random_params(rng, model, n, NR, d, 0.3, dtype=jnp.float64)
  heads = rng.integers(0, n, 8 * b)
  rels = rng.integers(0, r2, 8 * b)
  keep = _kink_free_rows(model, params, heads, rels)
  assert keep.sum() >= b
  heads, rels = jnp.asarray(heads[keep][:b]), jnp.asarray(rels[keep][:b])
  weights = jnp.asarray(rng.normal(size=(b, d)))

  @jax.jit  # one compilation instead of eager ops at every finite-difference probe
  def f(p):
    q = models.transform(model, p, heads, rels)
    c = models.relation_scale(p, rels)
    return jnp.sum(jnp.sin(q) * weights) + jnp.sum(c * jnp.sum(q * q, axis=-1))

  check_grads(f, (params,), order=1, modes=("rev",), eps=FD_EPS)
  # the gradient reaches every table the model uses (for the rows in the batch)
  grads = jax.grad(f)(params)  # reuses check_grads' compilations
  for k in EXPECTED_KEYS[model]:
    assert float(jnp.max(jnp.abs(grads[k]))) > 0, k


@pytest.mark.slow
def test_distance_gradients(rng, x64):
  q = jnp.asarray(rng.normal(size=(3, 4)))
  e = jnp.asarray(rng.normal(size=(5, 4)))
  check_grads(jax.jit(lambda a, b: jnp.sum(jnp.sin(distances.squared_distances(a, b)))), (q, e),
              order=1, modes=("rev", "fwd"), eps=FD_EPS)
  check_grads(jax.jit(lambda a, b: jnp.sum(jnp.sin(distances.pair_squared_distances(a, b)))),
              (q, e[:3]), order=1, modes=("rev", "fwd"), eps=FD_EPS)


@pytest.mark.parametrize("model", ROTATION_MODELS)
@pytest.mark.parametrize("dim", [1, 7, 33])
def test_odd_dimension_rejected_by_rotation_models(model, dim):
  with pytest.raises(ValueError, match="even"):
    models.init_params(model, jax.random.PRNGKey(0), 5, 1, dim)


@pytest.mark.parametrize("model", ("TransE", "DistMult"))
def test_odd_dimension_fine_for_other_models(rng, model):
  p = random_params(rng, model, N, NR, 7)
  heads, rels = rng.integers(0, N, B), rng.integers(0, R2, B)
  got = np.asarray(jit_transform(model, p, heads, rels))
  np.testing.assert_allclose(got, np_transform(model, to_f64(p), heads, rels), rtol=1e-5,
                             atol=1e-7)


@pytest.mark.parametrize("bad", ["MuRP", "transe2", "", "Rot-L"])
def test_unknown_model_raises(bad):
  with pytest.raises(ValueError, match="unknown model"):
    models.canonical_model(bad)
  with pytest.raises(ValueError, match="unknown model"):
    models.init_params(bad, jax.random.PRNGKey(0), 5, 1, 4)
  p = random_params(np.random.default_rng(0), "TransE", 5, 1, 4)
  with pytest.raises(ValueError, match="unknown model"):
    models.transform(bad, p, jnp.array([0]), jnp.array([0]))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["RotL"])  # one init for the three rotation models
def test_rotation_init_modes(rng, model):
  key = jax.random.PRNGKey(int(rng.integers(2**31)))
  scale = 1e-3
  uniform = models.init_params(model, key, 200, 20, 16, scale)  # 40 relation ids
  normal = models.init_params(model, key, 200, 20, 16, scale, rotation_init="normal")
  # only the rotation table differs; normal draws it like the other tables
  for k in uniform:
    if k != "rotation":
      np.testing.assert_array_equal(np.asarray(uniform[k]), np.asarray(normal[k]))
  u, g = np.asarray(uniform["rotation"]), np.asarray(normal["rotation"])
  assert np.all(np.abs(u) <= 1.0) and 0.5 < np.std(u) < 0.65  # U(-1, 1): std 0.577
  assert 0.8 * scale < np.std(g) < 1.2 * scale                  # 640 draws of scale * N(0, 1)
  # both give unit rotations whose angles cover the circle
  for table in (u, g):
    pairs = table.reshape(-1, 2)
    angles = np.arctan2(pairs[:, 1], pairs[:, 0])
    counts, _ = np.histogram(angles, bins=4, range=(-np.pi, np.pi))
    assert counts.min() > 0.15 * len(angles), counts


def test_rotation_init_unknown_raises():
  with pytest.raises(ValueError, match="unknown rotation_init 'zeros'; choose one of uniform, "
                     "normal"):
    models.init_params("RotE", jax.random.PRNGKey(0), 5, 1, 4, rotation_init="zeros")


def test_rotation_init_in_config_and_resume():
  with pytest.raises(ValueError, match="unknown rotation_init"):
    config.Config.make(rotation_init="zeros")
  assert config.Config.make(rotation_init="normal").model.rotation_init == "normal"
  assert config.Config().model.rotation_init == "uniform"
  # it decides the starting point, so a run may not resume under another value; and a spec
  # without the field (no resume shims any more) counts as different
  spec = {"config": config.Config.make(model="RotL").flat(), "vocab_sha256": "x"}
  other = {"config": config.Config.make(model="RotL", rotation_init="normal").flat(),
           "vocab_sha256": "x"}
  assert rundir.mismatch(spec, spec) == []
  assert rundir.mismatch(spec, other) == ["rotation_init ('uniform' vs 'normal')"]
  older = {"config": {k: v for k, v in spec["config"].items() if k != "rotation_init"},
           "vocab_sha256": "x"}
  assert rundir.mismatch(older, spec) == ["rotation_init (None vs 'uniform')"]


@pytest.mark.parametrize("mode,tables", [("none", []), ("tail", ["bias_tail"]),
                                         ("head_tail", ["bias_head", "bias_tail"])])
def test_init_params_entity_bias_tables(mode, tables):
  p = models.init_params("TransE", jax.random.PRNGKey(0), N, NR, D, 0.5, entity_bias=mode)
  assert sorted(k for k in p if k.startswith("bias")) == tables
  for k in tables:
    assert p[k].shape == (N,) and p[k].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(p[k]), 0.0)  # KGEmb starts them at 0
  assert models.has_entity_bias(p) == bool(tables)
  # the tables with one row per entity (the ones a mesh pads and shards by rows)
  assert {k for k in p if p[k].shape[0] == N and k != "scale"} <= set(models.ENTITY_TABLES)
  assert set(models.ENTITY_TABLES) == {"entity", "bias_head", "bias_tail"}
  # biases change nothing else: the same key draws the same tables
  plain = models.init_params("TransE", jax.random.PRNGKey(0), N, NR, D, 0.5)
  for k in plain:
    np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(plain[k]))


@pytest.mark.parametrize("bad", [True, "head", "learn"])
def test_init_params_rejects_unknown_entity_bias(bad):
  with pytest.raises(ValueError, match="unknown entity_bias"):
    models.init_params("TransE", jax.random.PRNGKey(0), 5, 1, 4, entity_bias=bad)


@pytest.mark.slow
def test_init_params_float64_is_the_float32_start(x64):
  key = jax.random.PRNGKey(3)
  p32 = models.init_params("RotL", key, N, NR, D, 0.5, entity_bias="head_tail")
  p64 = models.init_params("RotL", key, N, NR, D, 0.5, dtype=jnp.float64, entity_bias="head_tail")
  assert p64.keys() == p32.keys()
  for k in p32:
    assert p64[k].dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(p64[k]), np.asarray(p32[k], np.float64))
