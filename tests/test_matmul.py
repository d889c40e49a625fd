"""Precision of the distance matmuls (``--matmul``): exact float32 by default, TF32 / bfloat16
inputs with float32 sums as options.  References round the inputs in NumPy (bit arithmetic,
round half to even) and multiply in float64."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import activations, chunked, config, distances, models, objective
from reference import np_round_mantissa, np_squared_distances, random_batch, random_params

K, N, D = 9, 70, 16


def test_np_round_mantissa_reference():
  # 1 + 2^-8 is a tie between 1 and 1 + 2^-7 at 7 mantissa bits: even wins (1); 1 + 3 * 2^-8
  # is a tie between 1 + 2^-7 and 1 + 2^-6: even wins (1 + 2^-6)
  x = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, -3.0], np.float32)
  np.testing.assert_array_equal(np_round_mantissa(x, 7), [1.0, 1 + 2 ** -6, 1.0, -3.0])
  np.testing.assert_array_equal(np_round_mantissa(x, 7),
                                np.asarray(jnp.asarray(x).astype(jnp.bfloat16), np.float32))


@pytest.mark.parametrize("matmul,bits", [("float32", None), ("tf32", 10), ("bf16", 7)])
def test_squared_distances_per_mode(rng, matmul, bits):
  q = rng.normal(0, 1, (K, D)).astype(np.float32)
  e = rng.normal(0, 1, (N, D)).astype(np.float32)
  got = np.asarray(distances.squared_distances(q, e, matmul))
  want = np_squared_distances(q, e, bits)
  # float32 sums of D products of size ~1: a few ulps of |q|^2 + |e|^2 ~ 2 D
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * 2 * D)
  if bits is not None:  # the rounding is real: exact inputs would be measurably off
    assert np.max(np.abs(np_squared_distances(q, e) - want)) > 1e3 * 2 ** -23


def test_default_asks_for_highest_precision():
  """On a GPU the default precision may round float32 inputs to TF32; ranking and the default
  training matmul must ask for HIGHEST (checked in the jaxpr, as the CPU computes f32 anyway)."""
  q, e = jnp.ones((3, 4)), jnp.ones((5, 4))
  jaxpr = str(jax.make_jaxpr(distances.squared_distances)(q, e))
  assert "HIGHEST" in jaxpr
  params = random_params(np.random.default_rng(0), "TransE", 5, 1, 4)
  ranking = str(jax.make_jaxpr(models.ranking_distances)(params, q, jnp.zeros(3, jnp.int32)))
  assert "HIGHEST" in ranking
  bf16 = str(jax.make_jaxpr(functools.partial(distances.squared_distances, matmul="bf16"))(q, e))
  assert "bf16" in bf16 and "preferred_element_type=float32" in bf16


def test_unknown_mode_is_refused():
  with pytest.raises(ValueError, match="unknown matmul mode"):
    distances.squared_distances(jnp.ones((2, 2)), jnp.ones((3, 2)), "fp8")
  with pytest.raises(ValueError, match="unknown matmul"):
    config.Config.make(matmul="half")
  with pytest.raises(ValueError, match="unknown matmul mode"):
    chunked.uniformity_lse(jnp.ones((2, 2)), jnp.ones(2), jnp.ones((3, 2)),
                           activations.get_activation("hanon"), 2, "fp8")


@pytest.mark.slow
@pytest.mark.parametrize("matmul", ["tf32", "bf16"])
def test_chunked_lse_matches_plain_in_each_mode(rng, matmul):
  """The chunked uniformity term computes the plain one's numbers in every mode: the value to
  1e-5; the gradient to the mode's own rounding, since the cotangents of the rounded inputs
  are rounded too (tensor cores do the same in the backward matmuls) and the two forms sum in
  different orders before that rounding.  A reduced-precision mode stays close to float32."""
  q = jnp.asarray(rng.normal(0, 0.5, (K, D)), jnp.float32)
  e = jnp.asarray(rng.normal(0, 0.5, (N, D)), jnp.float32)
  c = jnp.asarray(rng.uniform(0.5, 2.0, K), jnp.float32)
  h = activations.get_activation("hanon")

  def plain(q, c, e, mode=matmul):
    return jnp.sum(jax.nn.logsumexp(-h(c[:, None] * distances.squared_distances(q, e, mode)), -1))

  def fused(q, c, e):
    return jnp.sum(chunked.uniformity_lse(q, c, e, h, chunk=16, matmul=matmul))

  v_plain, g_plain = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2)))(q, c, e)
  v_fused, g_fused = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))(q, c, e)
  np.testing.assert_allclose(float(v_fused), float(v_plain), rtol=1e-5)
  unit = {"tf32": 2.0 ** -10, "bf16": 2.0 ** -7}[matmul]
  for a, b in zip(g_fused, g_plain):
    a, b = np.asarray(a), np.asarray(b)
    assert np.max(np.abs(a - b)) <= 4 * unit * np.max(np.abs(b))
  exact = float(jax.jit(functools.partial(plain, mode="float32"))(q, c, e))
  tol = 2e-2 if matmul == "bf16" else 5e-3
  assert abs(float(v_plain) - exact) <= tol * abs(exact)


def _objective_loss(rng, loss_name="hale"):
  """``(matmul, lse_chunk) -> loss value`` of one batch (``objective.make_loss``; the model
  does not matter here, so the cheapest)."""
  params = random_params(rng, "TransE", 40, 3, 8, 0.5)
  batch = jnp.asarray(random_batch(rng, 40, 3, 16))

  def loss(matmul, lse_chunk=0):
    cfg = config.Config.make(model="TransE", loss=loss_name, matmul=matmul,
                             lse_chunk=lse_chunk, batch_size=16, alpha=0.25)
    fn, form = objective.choose_uniformity(cfg.objective, 40, allow_chunks=True)
    assert form == ("plain" if lse_chunk == 0 else f"chunks of {lse_chunk}")
    return float(jax.jit(objective.make_loss(cfg.objective, "TransE", cfg.num_sampled, fn))(
        params, batch, None))
  return loss


def test_objective_takes_the_mode(rng):
  """HaLE's loss computes its distances in the configured mode, plain or chunked."""
  loss = _objective_loss(rng)
  values = {m: loss(m) for m in ("float32", "bf16")}
  assert values["bf16"] != values["float32"]
  assert abs(values["bf16"] - values["float32"]) < 1e-2 * abs(values["float32"])
  np.testing.assert_allclose(loss("bf16", lse_chunk=8), values["bf16"], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["hale", "allneg"])
def test_objective_takes_every_mode(rng, loss_name):
  loss = _objective_loss(rng, loss_name)
  values = {m: loss(m) for m in distances.MATMUL_MODES}
  assert values["tf32"] != values["float32"] != values["bf16"]
  for m in ("tf32", "bf16"):
    assert abs(values[m] - values["float32"]) < 1e-2 * abs(values["float32"])
