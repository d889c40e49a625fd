"""The fused uniformity kernel against the chunked and plain LSE: agreement, then timings.

    python -m benchmarks.fused_lse [--entities=1000000,10000000] [--k=103] [--dim=32]

First it checks values and gradients of ``lse_kernel.uniformity_lse_fused`` against
``chunked.uniformity_lse`` for every activation and matmul mode at ``--check_entities``
(relative L2 errors, one line each: about 1e-6 in float32, 1e-4 for tf32 and 1e-3 for bf16
are expected), then times the plain ``[k, N]`` form, the chunked scan and the kernel, forward
and forward+backward, at each entity count.  On a CPU the kernel runs in Pallas's interpreter:
only the check means anything there (use small sizes); the timings are for a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from hale_jax import activations, chunked, distances, lse_kernel


def inputs(k: int, n: int, d: int):
  """Queries, scales, entities and tail biases at the scales training sees."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  return (jax.random.normal(keys[0], (k, d)) * 0.125,
          jax.random.uniform(keys[1], (k,), minval=0.5, maxval=2.0),
          jax.random.normal(keys[2], (n, d)) * 0.125, jax.random.normal(keys[3], (n,)) * 0.5)


def forms(chunk: int):
  """``{name: lse(q, c, e, b, matmul, h)}`` of the three ways to compute the term."""
  return {
      "plain": lambda q, c, e, b, m, h: jax.nn.logsumexp(
          b - h(c[:, None] * distances.squared_distances(q, e, m)), -1),
      "chunked": lambda q, c, e, b, m, h: chunked.uniformity_lse(q, c, e, h, chunk, m, b),
      "fused": lambda q, c, e, b, m, h: lse_kernel.uniformity_lse_fused(q, c, e, h, m, b)}


def value_and_grads(fn, matmul: str, h):
  return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a, matmul, h)), argnums=(0, 1, 2, 3)))


def relative(a, b) -> float:
  return float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-30))


def check(k: int, n: int, d: int, chunk: int) -> list[dict]:
  """Fused against chunked: value and the four gradients, for every activation and mode."""
  x, f = inputs(k, n, d), forms(chunk)
  rows = []
  for act in activations.ACTIVATIONS:
    for mode in distances.MATMUL_MODES:
      h = activations.get_activation(act)
      (v1, g1), (v2, g2) = value_and_grads(f["fused"], mode, h)(*x), value_and_grads(
          f["chunked"], mode, h)(*x)
      rows.append({"check": act, "matmul": mode, "value": relative(v1, v2),
                   "grads": [relative(a, b) for a, b in zip(g1, g2)]})
      print(json.dumps(rows[-1]), flush=True)
  return rows


def timed(fn, args, repeats: int) -> float:
  """Milliseconds per call after one warm-up call."""
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats * 1e3


def timings(entities: list[int], k: int, d: int, chunk: int, repeats: int) -> list[dict]:
  h = activations.get_activation("hanon")
  rows = []
  for n in entities:
    x = inputs(k, n, d)
    for mode in distances.MATMUL_MODES:
      for name, fn in forms(chunk).items():
        row = {"entities": n, "k": k, "dim": d, "matmul": mode, "form": name,
               "device": jax.devices()[0].device_kind}
        try:
          forward = jax.jit(lambda *a, fn=fn, mode=mode: fn(*a, mode, h))
          row["forward_ms"] = timed(forward, x, repeats)
          row["forward_backward_ms"] = timed(value_and_grads(fn, mode, h), x, repeats)
        except Exception as err:  # pylint: disable=broad-except  # report, go on
          row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--entities", default="1000000,10000000")
  parser.add_argument("--check_entities", type=int, default=100_003)
  parser.add_argument("--k", type=int, default=103)
  parser.add_argument("--dim", type=int, default=32)
  parser.add_argument("--chunk", type=int, default=65536)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  print(jax.devices(), flush=True)
  check(args.k, args.check_entities, args.dim, args.chunk)
  timings([int(n) for n in args.entities.split(",") if n], args.k, args.dim, args.chunk,
          args.repeats)


if __name__ == "__main__":
  main()
