"""hale_jax.chunked against the plain [k, N] computation and a float64 NumPy reference."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from hale_jax import activations, chunked, config, distances, losses, objective, rundir
from reference import FD_EPS, np_activation, np_uniformity_lse, rel_err

ACTS = ["hanon", "halin", "xexp", "identity"]
# (N, chunk): chunk does not divide N, chunk > N, chunk = 1, chunk divides N, chunk = N.
LAYOUTS = [(37, 8), (23, 64), (13, 1), (40, 8), (29, 29)]


def _inputs(rng, k, n, d, dtype=np.float32, spread=0.3):
  """Queries, scales and entities whose scaled squared distances lie mostly in [0, 3]."""
  q = rng.normal(0.0, spread, (k, d))
  s = rng.uniform(0.5, 1.5, k)
  e = rng.normal(0.0, spread, (n, d))
  return tuple(jnp.asarray(a, dtype) for a in (q, s, e))


def plain_loss(pos, q, s, e, h, lam, pos_square=True):
  return losses.hale_loss(pos, s[:, None] * distances.squared_distances(q, e), h, lam, pos_square)


def chunked_loss(pos, q, s, e, h, lam, chunk, pos_square=True):
  """The HaLE loss with its uniformity term chunked (``hale_jax.objective``'s composition)."""
  return losses.combine(losses.alignment_terms(pos, h, pos_square),
                        chunked.uniformity_lse(q, s, e, h, chunk), lam)


# Each layout once, the activations spread over them (the chunk logic does not depend on h);
# the quick tier runs a chunk that does not divide N and chunks of one entity.
@pytest.mark.parametrize("act,n,chunk", [
    (ACTS[i % len(ACTS)], n, c) if (n, c) in ((37, 8), (13, 1))
    else pytest.param(ACTS[i % len(ACTS)], n, c, marks=pytest.mark.slow)
    for i, (n, c) in enumerate(LAYOUTS)])
def test_lse_loss_and_gradients_match_plain_and_numpy(rng, act, n, chunk):
  """Per query, the chunked LSE equals the plain one and the float64 reference; the loss built
  on it (``combine``) and its gradients equal those of the plain ``hale_loss``."""
  k, d, b = 5, 8, 11
  q, s, e = _inputs(rng, k, n, d)
  pos = jnp.asarray(rng.uniform(0.0, 2.0, b), jnp.float32)
  lam = float(rng.uniform(0.1, 1.0))
  pos_square = bool(rng.integers(2))
  h = activations.get_activation(act)

  def plain(q, s, e):  # (loss, per-query LSE)
    return (plain_loss(pos, q, s, e, h, lam, pos_square),
            jax.nn.logsumexp(-h(s[:, None] * distances.squared_distances(q, e)), axis=-1))

  def fused(q, s, e):
    return (chunked_loss(pos, q, s, e, h, lam, chunk, pos_square),
            chunked.uniformity_lse(q, s, e, h, chunk))

  f_plain, f_chunk = (jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))
                      for f in (plain, fused))
  ((v_plain, lse_plain), g_plain), ((v_chunk, lse_chunk), g_chunk) = (f_plain(q, s, e),
                                                                      f_chunk(q, s, e))
  assert lse_chunk.shape == (k,) and v_chunk.dtype == jnp.float32
  # atol: an LSE can land near 0, where float32 rounding (~1e-7 of the O(1) terms) is not
  # relatively small.
  np.testing.assert_allclose(np.asarray(lse_chunk), np.asarray(lse_plain), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(lse_chunk), np_uniformity_lse(q, s, e, np_activation(act)),
                             rtol=1e-5, atol=1e-6)
  assert rel_err(v_chunk, v_plain) < 1e-5
  for name, gc, gp in zip(("queries", "scale", "entities"), g_chunk, g_plain):
    assert gc.shape == gp.shape and gc.dtype == gp.dtype
    assert rel_err(gc, gp) < 1e-5, name


@pytest.mark.parametrize("n,chunk,matmul", [(37, 8, "float32"), (13, 1, "float32"),
                                            pytest.param(40, 8, "bf16", marks=pytest.mark.slow)])
def test_kept_products_give_the_recomputed_lse_and_gradients(rng, n, chunk, matmul):
  """``keep_products=True`` (the backward pass reuses the forward's inner products instead of
  recomputing them) gives the LSE and every gradient of the recomputing version, with tail
  biases and a generic cotangent; the LSE also equals the float64 reference."""
  k, d = 5, 8
  q, s, e = _inputs(rng, k, n, d)
  bias = jnp.asarray(rng.normal(0.0, 0.5, n), jnp.float32)
  weights = jnp.asarray(rng.normal(size=k), jnp.float32)
  h = activations.get_activation("hanon")

  def lse(q, s, e, b, keep):
    return chunked.uniformity_lse(q, s, e, h, chunk, matmul, entity_bias=b, keep_products=keep)

  results = {keep: jax.jit(jax.value_and_grad(lambda q, s, e, b: jnp.dot(weights, lse(
      q, s, e, b, keep)), argnums=(0, 1, 2, 3)))(q, s, e, bias) for keep in (False, True)}
  (v_kept, g_kept), (v_again, g_again) = results[True], results[False]
  assert rel_err(v_kept, v_again) < 1e-6
  for name, got, want in zip(("queries", "scale", "entities", "bias"), g_kept, g_again):
    assert got.shape == want.shape and rel_err(got, want) < 1e-6, name
  if matmul == "float32":
    np.testing.assert_allclose(np.asarray(jax.jit(lse, static_argnums=4)(q, s, e, bias, True)),
                               np_uniformity_lse(q, s, e, np_activation("hanon"), bias),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_kept_products_check_grads_float64(rng, x64):
  q, s, e = _inputs(rng, 3, 11, 4, np.float64)
  h = activations.get_activation("halin")
  weights = jnp.asarray(rng.normal(size=3))
  f = jax.jit(lambda q, s, e: jnp.dot(weights, chunked.uniformity_lse(q, s, e, h, 4,
                                                                      keep_products=True)))
  check_grads(f, (q, s, e), order=1, modes=("rev",), eps=FD_EPS)


@pytest.mark.parametrize("act", [a if a == "hanon" else pytest.param(a, marks=pytest.mark.slow)
                                 for a in ACTS])
def test_lse_float64_matches_numpy(rng, x64, act):
  k, n, d, chunk = 3, 41, 5, 6
  q, s, e = _inputs(rng, k, n, d, np.float64)
  got = chunked.uniformity_lse(q, s, e, activations.get_activation(act), chunk)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), np_uniformity_lse(q, s, e, np_activation(act)),
                             rtol=1e-12, atol=1e-12)


def test_online_lse_is_stable_for_large_scores(rng, x64):
  """Scores of -1e4 and spread over many chunks: the running max keeps everything finite."""
  k, n, d = 3, 50, 4
  q, _, e = _inputs(rng, k, n, d, np.float64, spread=3.0)
  s = jnp.full((k,), 500.0)
  h = activations.get_activation("identity")
  got = chunked.uniformity_lse(q, s, e, h, 7)
  assert np.all(np.isfinite(np.asarray(got)))
  np.testing.assert_allclose(np.asarray(got), np_uniformity_lse(q, s, e, np_activation("identity")),
                             rtol=1e-12)
  g = jax.grad(lambda q: jnp.sum(chunked.uniformity_lse(q, s, e, h, 7)))(q)
  assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.slow
def test_clamped_distance_gradient_matches_plain(rng):
  """A query equal to an entity hits the clamp at 0; both versions differentiate it alike."""
  k, n, d = 3, 10, 4
  q, s, e = _inputs(rng, k, n, d)
  q = q.at[1].set(e[7])
  h = activations.get_activation("halin")
  f_plain = jax.jit(jax.grad(lambda q, s, e: jnp.sum(jax.nn.logsumexp(
      -h(s[:, None] * distances.squared_distances(q, e)), axis=-1)), (0, 1, 2)))
  f_chunk = jax.jit(jax.grad(lambda q, s, e: jnp.sum(chunked.uniformity_lse(q, s, e, h, 3)),
                             (0, 1, 2)))
  for gc, gp in zip(f_chunk(q, s, e), f_plain(q, s, e)):
    assert rel_err(gc, gp) < 1e-5


@pytest.mark.parametrize("act,n,chunk", [("hanon", 11, 4),
                                         pytest.param("xexp", 5, 8, marks=pytest.mark.slow),
                                         pytest.param("identity", 6, 1, marks=pytest.mark.slow)])
def test_custom_vjp_check_grads_float64(rng, x64, act, n, chunk):
  k, d = 3, 4
  q, s, e = _inputs(rng, k, n, d, np.float64)
  h = activations.get_activation(act)
  weights = jnp.asarray(rng.normal(size=k))  # a generic cotangent, not just ones
  f = jax.jit(lambda q, s, e: jnp.dot(weights, chunked.uniformity_lse(q, s, e, h, chunk)))
  check_grads(f, (q, s, e), order=1, modes=("rev",), eps=FD_EPS)


@pytest.mark.slow
def test_second_order_reverse_float64(rng, x64):
  """The backward pass is itself differentiable (grad of grad)."""
  q, s, e = _inputs(rng, 2, 9, 4, np.float64)
  h = activations.get_activation("hanon")
  f = jax.jit(lambda q, s, e: jnp.sum(chunked.uniformity_lse(q, s, e, h, 4)))
  check_grads(f, (q, s, e), order=2, modes=("rev",), eps=1e-4, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_jit_vmap_and_static_arguments(rng):
  k, n, d = 4, 30, 6
  q, s, e = _inputs(rng, k, n, d)
  h = activations.get_activation("hanon")
  eager = chunked.uniformity_lse(q, s, e, h, 7)
  jitted = jax.jit(chunked.uniformity_lse, static_argnums=(3, 4))(q, s, e, h, 7)
  # atol: an LSE can land near 0, where one float32 ulp of its O(1) terms is not relatively small
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-6, atol=2e-7)
  g_jit = jax.jit(jax.grad(lambda e: jnp.sum(chunked.uniformity_lse(q, s, e, h, 7))))(e)
  g_eager = jax.grad(lambda e: jnp.sum(chunked.uniformity_lse(q, s, e, h, 7)))(e)
  assert rel_err(g_jit, g_eager) < 1e-5  # fusion may reorder float32 sums
  # vmap over a leading axis of query sets
  qs = jnp.stack([q, 2 * q])
  batched = jax.vmap(lambda q: chunked.uniformity_lse(q, s, e, h, 7))(qs)
  np.testing.assert_allclose(np.asarray(batched[1]),
                             np.asarray(chunked.uniformity_lse(2 * q, s, e, h, 7)), rtol=1e-6,
                             atol=2e-7)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True, None])
def test_rejects_bad_chunk(rng, chunk):
  q, s, e = _inputs(rng, 2, 5, 3)
  with pytest.raises(ValueError, match="chunk"):
    chunked.uniformity_lse(q, s, e, activations.get_activation("hanon"), chunk)


def test_rejects_bad_shapes(rng):
  q, s, e = _inputs(rng, 2, 5, 3)
  h = activations.get_activation("hanon")
  with pytest.raises(ValueError):
    chunked.uniformity_lse(q, s[:1], e, h, 2)
  with pytest.raises(ValueError):
    chunked.uniformity_lse(q, s, e[:, :2], h, 2)


@pytest.mark.slow
def test_chunked_gradient_needs_far_less_temporary_memory():
  """Compiled jit(grad(loss)) at k=64, N=200_000, d=16: temporaries of O(k chunk), not O(k N)."""
  k, n, d, chunk, b = 64, 200_000, 16, 4096, 256
  h = activations.get_activation("hanon")
  specs = (jax.ShapeDtypeStruct((b,), jnp.float32), jax.ShapeDtypeStruct((k, d), jnp.float32),
           jax.ShapeDtypeStruct((k,), jnp.float32), jax.ShapeDtypeStruct((n, d), jnp.float32))
  plain = functools.partial(plain_loss, h=h, lam=0.3)
  fused = lambda pos, q, s, e: chunked_loss(pos, q, s, e, h, 0.3, chunk)  # noqa: E731
  temps = {}
  for name, fn in (("plain", plain), ("chunked", fused)):
    compiled = jax.jit(jax.grad(fn, argnums=(1, 2, 3))).lower(*specs).compile()
    stats = compiled.memory_analysis()
    if stats is None or getattr(stats, "temp_size_in_bytes", None) is None:
      pytest.skip(f"compiled.memory_analysis() gives no temp size on {jax.default_backend()}")
    temps[name] = stats.temp_size_in_bytes
  full = k * n * 4  # one float32 [k, N] matrix
  assert temps["plain"] >= full, temps
  assert temps["chunked"] < full / 8, temps
  assert temps["chunked"] < 16 * k * chunk * 4, temps  # a handful of [k, chunk] blocks


@pytest.mark.slow
def test_objective_keeps_the_products_only_within_its_limit():
  """``objective.chunked_uniformity`` keeps the ``[k, N]`` inner products (one more [k, N]
  temporary) when they fit in ``keep_mib`` MiB, and stays at O(k chunk) otherwise."""
  k, n, d, chunk = 64, 200_000, 16, 4096
  full = k * n * 4  # 51.2 MB
  h = activations.get_activation("hanon")
  specs = (jax.ShapeDtypeStruct((k, d), jnp.float32), jax.ShapeDtypeStruct((k,), jnp.float32),
           jax.ShapeDtypeStruct((n, d), jnp.float32))
  temps = {}
  for keep_mib in (0, 48, 49):  # 48 MiB < 51.2 MB <= 49 MiB
    lse = objective.chunked_uniformity(h, "float32", chunk, keep_mib)
    loss = lambda q, s, e: jnp.sum(lse(q, s, e, None, None))  # noqa: E731
    stats = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*specs).compile().memory_analysis()
    if stats is None or getattr(stats, "temp_size_in_bytes", None) is None:
      pytest.skip(f"compiled.memory_analysis() gives no temp size on {jax.default_backend()}")
    temps[keep_mib] = stats.temp_size_in_bytes
  assert temps[0] < full / 8 and temps[48] < full / 8, temps
  assert full <= temps[49] < full + 16 * k * chunk * 4, temps


def test_a_run_resumes_under_another_lse_chunk():
  """The chunk is how the loss is computed, not what it is: a run resumes under any other
  chunk (``lse_chunk`` is resumable), but not under another lambda."""
  spec = {"config": config.Config.make(lse_chunk=4096).flat(), "vocab_sha256": "x"}
  for chunk in (None, 0, 65536):
    new = {"config": config.Config.make(lse_chunk=chunk).flat(), "vocab_sha256": "x"}
    assert rundir.mismatch(spec, new) == []
  assert "lse_chunk" in config.resumable_fields()
  other = {"config": config.Config.make(lse_chunk=None, lam=2.0).flat(), "vocab_sha256": "x"}
  assert rundir.mismatch(spec, other) == ["lam (0.3 vs 2.0)"]
