"""hale_jax.lse_kernel and its kernels (Pallas, interpreted on the CPU) against float64 references.

Every case differentiates ``sum_j w_j lse_j`` (random weights, so the incoming cotangent is not
uniform) with respect to queries, scales, entities and biases.  Sizes are odd on purpose: ``d``
that needs padding, ``N`` not a multiple of ``block_n`` (the last block overlaps the previous
one), ``N < 16`` (padding rows), ``k = 1`` and ``k`` not a multiple of ``block_k``.  The Triton
lowering (what runs on a GPU) is checked by exporting for CUDA, which lowers every kernel to
Triton IR without a GPU.
"""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hale_jax import activations, chunked, distances, lse_kernel, lse_kernel_blocks

ACTS = sorted(activations.ACTIVATIONS)


def _inputs(rng, act, k, n, d, dtype, bias=True):
  """``(q, c, e, b, w)`` with ``c * ||q - e||^2`` mostly in ``act``'s interesting range.

  Rows ~ N(0, 1/(2d)) put ``||q - e||^2`` near 1; arctanh (domain < 1) gets smaller scales.
  """
  spread = np.sqrt(0.5 / d)
  lo, hi = (0.1, 0.6) if act == "two_arctanh" else (0.5, 2.0)
  arrays = (rng.normal(0.0, spread, (k, d)), rng.uniform(lo, hi, k),
            rng.normal(0.0, spread, (n, d)), rng.normal(0.0, 0.5, n) if bias else None,
            rng.uniform(0.5, 1.5, k))
  return tuple(None if a is None else jnp.asarray(a, dtype) for a in arrays)


def _reference_loss(h, matmul="float32"):
  """``sum_j w_j logsumexp_i(b_i - h(c_j d2_ji))``, the plain [k, N] form."""
  def loss(q, c, e, b, w):
    scores = -h(c[:, None] * distances.squared_distances(q, e, matmul))
    scores = scores if b is None else scores + b[None, :]
    return jnp.sum(w * jax.nn.logsumexp(scores, axis=-1))
  return loss


def _fused_loss(h, matmul="float32", **blocks):
  def loss(q, c, e, b, w):
    lse = lse_kernel.uniformity_lse_fused(q, c, e, h, matmul, b, **blocks)
    chex.assert_shape(lse, (q.shape[0],))
    return jnp.sum(w * lse)
  return loss


def _value_and_grads(loss, args, bias=True):
  argnums = (0, 1, 2, 3) if bias else (0, 1, 2)
  return jax.jit(jax.value_and_grad(loss, argnums=argnums))(*args)


def _assert_close(got, want, rtol):
  """Leaf by leaf: ``|got - want| <= rtol * (|want| + max |want|)``."""
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    chex.assert_equal_shape([g, w])
    w = np.asarray(w, np.float64)
    chex.assert_trees_all_close(np.asarray(g, np.float64), w, rtol=rtol,
                                atol=rtol * float(np.max(np.abs(w))))


@pytest.mark.parametrize("act", [a if a == "hanon" else pytest.param(a, marks=pytest.mark.slow)
                                 for a in ACTS])
def test_float32_matches_float64_reference(x64, rng, act):
  """float32 kernel, with biases, d = 8 (padded to 16), N = 37 over blocks of 16 (the last one
  overlaps), k = 5, two splits of the entity axis."""
  args = _inputs(rng, act, 5, 37, 8, jnp.float32)
  h = activations.get_activation(act)
  value, grads = _value_and_grads(_fused_loss(h, block_k=16, block_n=16, num_splits=2), args)
  args64 = tuple(a.astype(jnp.float64) for a in args)
  want_value, want_grads = _value_and_grads(_reference_loss(h), args64)
  assert value.dtype == jnp.float32
  chex.assert_trees_all_equal_dtypes(grads, args[:4])
  np.testing.assert_allclose(float(value), float(want_value), rtol=2e-6, atol=1e-5)
  _assert_close(grads, want_grads, rtol=2e-5)


# (activation, k, N, d, bias, block_k, block_n): each activation once, with layouts that cover
# k = 1, k not a multiple of block_k, N a multiple of block_n, N ragged, N < 16, d padded.
FLOAT64_CASES = [
    ("hanon", 1, 48, 8, False, None, 16),
    ("halin", 20, 23, 16, True, 16, 16),
    ("xexp", 3, 5, 5, True, None, None),
    ("linear2x", 17, 64, 32, False, 16, 32),
    ("two_arctanh", 2, 50, 3, True, None, 16),
    ("identity", 33, 16, 20, False, 32, 16),
]


@pytest.mark.parametrize("act,k,n,d,bias,block_k,block_n",
                         [c if i == 0 else pytest.param(*c, marks=pytest.mark.slow)
                          for i, c in enumerate(FLOAT64_CASES)])
def test_float64_matches_reference(x64, rng, act, k, n, d, bias, block_k, block_n):
  args = _inputs(rng, act, k, n, d, jnp.float64, bias)
  h = activations.get_activation(act)
  fused = _fused_loss(h, block_k=block_k, block_n=block_n)
  value, grads = _value_and_grads(fused, args, bias)
  want_value, want_grads = _value_and_grads(_reference_loss(h), args, bias)
  assert value.dtype == jnp.float64
  np.testing.assert_allclose(float(value), float(want_value), rtol=1e-12)
  _assert_close(grads, want_grads, rtol=1e-10)


def np_round_mantissa(x, bits):
  """float32 ``x`` rounded to ``bits`` explicit mantissa bits (round half to even), in NumPy."""
  u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
  drop = 23 - bits
  u = (u + (1 << (drop - 1)) - 1 + ((u >> drop) & 1)) >> drop << drop
  return u.astype(np.uint32).view(np.float32)


def _np_lse(q, c, e, b, h_np, bits):
  """float64 NumPy ``logsumexp(b - h(c d2))`` with the matmul inputs rounded to ``bits``
  mantissa bits (None: exact)."""
  q64, e64 = np.asarray(q, np.float64), np.asarray(e, np.float64)
  qr, er = (q64, e64) if bits is None else (
      np_round_mantissa(x, bits).astype(np.float64) for x in (q, e))
  d2 = np.sum(q64 ** 2, -1)[:, None] + np.sum(e64 ** 2, -1)[None, :] - 2.0 * qr @ er.T
  s = np.asarray(b, np.float64)[None, :] - h_np(np.asarray(c, np.float64)[:, None]
                                              * np.maximum(d2, 0.0))
  m = np.max(s, axis=-1)
  return m + np.log(np.sum(np.exp(s - m[:, None]), axis=-1))


@pytest.mark.slow
@pytest.mark.parametrize("matmul,bits", [("tf32", 10), pytest.param("bf16", 7,
                                                                    marks=pytest.mark.slow)])
def test_reduced_precision_modes(rng, matmul, bits):
  """Value: a float64 reference whose matmul inputs are rounded the same way.  Gradients:
  ``chunked`` in the same mode, to the mode's rounding (both round the backward matmul's
  operands; chunked also rounds its result, the kernel does not)."""
  q, c, e, b, w = _inputs(rng, "hanon", 9, 70, 16, jnp.float32)
  h = activations.get_activation("hanon")
  lse = jax.jit(lambda *a: lse_kernel.uniformity_lse_fused(*a[:3], h, matmul, a[3],
                                                           block_n=16))(q, c, e, b)
  h_np = lambda x: 10.0 / (1.0 + np.exp(-(3.0 * (x - 0.5) - np.log(10.0))))
  want, exact = _np_lse(q, c, e, b, h_np, bits), _np_lse(q, c, e, b, h_np, None)
  _assert_close(lse, want, rtol=2e-6)
  assert np.max(np.abs(want - exact)) > 10 * np.max(np.abs(np.asarray(lse) - want))
  chunk = lambda q, c, e, b, w: jnp.sum(w * chunked.uniformity_lse(q, c, e, h, 16, matmul, b))
  _, grads = _value_and_grads(_fused_loss(h, matmul, block_n=16), (q, c, e, b, w))
  _, want_grads = _value_and_grads(chunk, (q, c, e, b, w))
  unit = 2.0 ** -bits
  for got, ref in zip(grads, want_grads):
    assert np.max(np.abs(got - ref)) <= 4 * unit * np.max(np.abs(ref))


def test_round_tf32_is_reduce_precision(rng):
  """Bit for bit, on normals, subnormals, specials and random bit patterns (NaN stays NaN)."""
  x = np.concatenate([rng.normal(0, 1, 4096), rng.normal(0, 1e-39, 256),
                      [np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 0.0, -0.0,
                       1 + 2 ** -11, 1 + 3 * 2 ** -11]]).astype(np.float32)
  x = np.concatenate([x, rng.integers(0, 2 ** 32, 4096, dtype=np.uint64).astype(np.uint32)
                      .view(np.float32)])
  got = np.asarray(jax.jit(lse_kernel_blocks.round_tf32)(x))
  want = np.asarray(jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10))
  same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
  assert same.all(), x[~same][:5]


def _export_for_cuda(fn, *shapes):
  """Lowers ``fn`` for CUDA without a GPU: runs the Pallas Triton lowering of each kernel."""
  checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
  return jax.export.export(jax.jit(fn), platforms=["cuda"], disabled_checks=checks)(*shapes)


@pytest.mark.parametrize("matmul", [m if m == "float32" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in distances.MATMUL_MODES])
def test_lowers_to_triton_without_k_by_n_arrays(matmul):
  """Forward and backward of every activation lower to three Triton kernels, and no array of
  ``k x N`` elements (in any layout) exists outside them."""
  k, n, d = 103, 1000, 32
  S = jax.ShapeDtypeStruct
  shapes = (S((k, d), jnp.float32), S((k,), jnp.float32), S((n, d), jnp.float32),
            S((n,), jnp.float32))
  for act in ACTS:
    h = activations.get_activation(act)
    loss = lambda q, c, e, b: jnp.sum(
        lse_kernel.uniformity_lse_fused(q, c, e, h, matmul, b, interpret=False))
    text = _export_for_cuda(jax.grad(loss, argnums=(0, 1, 2, 3)), *shapes).mlir_module()
    assert text.count("__gpu$xla.gpu.triton") == 3, act
    dims = [tuple(map(int, t.split("x"))) for t in re.findall(r"tensor<([\dx]+)x\w+>", text)]
    assert not [s for s in dims if np.prod(s) >= k * n], (act, sorted(set(dims)))


def test_rejects_bad_arguments():
  h = activations.get_activation("hanon")
  q, c, e = jnp.ones((3, 4)), jnp.ones(3), jnp.ones((7, 4))
  with pytest.raises(ValueError, match="expected queries"):
    lse_kernel.uniformity_lse_fused(q, c, jnp.ones((7, 5)), h)
  with pytest.raises(ValueError, match="expected scale"):
    lse_kernel.uniformity_lse_fused(q, jnp.ones(4), e, h)
  with pytest.raises(ValueError, match="expected entity_bias"):
    lse_kernel.uniformity_lse_fused(q, c, e, h, entity_bias=jnp.ones(6))
  with pytest.raises(ValueError, match="unknown matmul"):
    lse_kernel.uniformity_lse_fused(q, c, e, h, "fp8")
  for blocks in ({"block_k": 24}, {"block_n": 8}, {"block_n": True}, {"num_splits": 0}):
    with pytest.raises(ValueError, match="block_k|block_n|num_splits"):
      lse_kernel.uniformity_lse_fused(q, c, e, h, **blocks)
