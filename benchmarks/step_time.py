"""Times one HaLE training step (loss, gradient, Adam update) per model and problem size.

    python benchmarks/step_time.py --sizes=wn18rr,fb15k237 --models=RotL --lse=plain
    python benchmarks/step_time.py --sizes=synth1m --lse=chunked --chunk=8192 --output=steps.jsonl
    python benchmarks/step_time.py --sizes=tiny --models=RotL,TransE --repeats=3 --warmup=1

For every model in ``--models`` and size in ``--sizes`` it builds random parameters
(``models.init_params``) and a jitted step with the training state donated, exactly the body of
``train.make_epoch_fn``'s scan: ``value_and_grad`` of ``train.batch_loss`` (``--lse=plain``,
which materialises the ``[k, N]`` distance matrix) or of it with ``lse_chunk``
(``--lse=chunked``, ``O(k * chunk)`` memory), ``optimizer.update``, ``optax.apply_updates``.

Reported per case (one JSON line on stdout, also appended to ``--output``):

- ``lower_s`` and ``compile_s``: tracing/lowering and XLA compilation, timed apart;
- ``step_median_s``, ``step_iqr_s`` (and the quartiles, min): ``--repeats`` steps after
  ``--warmup`` steps, each on a fresh random batch of int32 triples put on the device in
  advance, each timed to ``block_until_ready``;
- ``flops`` and ``bytes_accessed`` from ``compiled.cost_analysis()`` (XLA's static estimate;
  ``None`` where the backend gives none); from ``compiled.memory_analysis()``: ``temp_bytes``,
  ``peak_bytes`` (the backend's own peak, ``None`` where absent; on CPU it leaves the
  temporaries out) and ``footprint_bytes`` = argument + output + temp - alias (what the step
  holds at most, the state being donated);
- ``device_peak_flops`` (best of a few ``n x n`` float32 matmuls, ``n`` = 4096 on GPU, 1024 on
  CPU) and ``device_bandwidth`` (best of a few ``x + 1`` over 256 MiB on GPU / 64 MiB on CPU,
  counting a read and a write), measured once per run;
- ``floor_s = max(flops / device_peak_flops, bytes_accessed / device_bandwidth)``, ``bound``
  (``compute`` or ``memory``, whichever term is larger) and ``ratio = step_median_s /
  floor_s``.

XLA's cost analysis counts the body of a loop once, not once per iteration, so for
``--lse=chunked`` (a ``lax.scan`` over ``ceil(N / chunk)`` chunks) ``flops`` and
``bytes_accessed`` come from a second compile of the same step with ``chunk = N`` (one
iteration, the same operations in total; ``cost_source`` says which compile was used).
``analytic_uniformity_flops`` is the expected count of the ``[k, N]`` distance matmuls alone.

A markdown table of all cases is printed at the end.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import hale_jax` work without install
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from absl import app, flags  # noqa: E402

from hale_jax import activations, chunked, losses, models, train  # noqa: E402
from xla_analysis import cost_numbers, memory_numbers  # noqa: E402  (beside this script)

# name -> (entities N, relations |R|); relation ids incl. reciprocals are 2 |R|.
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (500, 5),
    "wn18rr": (40_943, 11),
    "fb15k237": (14_541, 237),
    "codex_m": (17_050, 51),
    "synth100k": (100_000, 50),
    "synth1m": (1_000_000, 50),
}

FLAGS = flags.FLAGS
flags.DEFINE_list("models", list(models.MODEL_NAMES), "Models to time.")
flags.DEFINE_list("sizes", ["wn18rr", "fb15k237", "codex_m", "synth100k", "synth1m"],
                  f"Problem sizes, from: {', '.join(SIZES)}.")
flags.DEFINE_integer("dim", 32, "Embedding dimension d.")
flags.DEFINE_integer("batch_size", 1024, "Training queries per step B.")
flags.DEFINE_float("alpha", 0.1, "Query-sampling proportion; k = ceil(alpha * B).")
flags.DEFINE_float("lam", 0.3, "Alignment weight lambda.")
flags.DEFINE_string("activation", "hanon", "Hardness-aware activation.")
flags.DEFINE_float("learning_rate", 5e-3, "Adam learning rate.")
flags.DEFINE_enum("lse", "plain", ["plain", "chunked"],
                  "Uniformity term: plain [k, N] matrix, or chunked.uniformity_lse.")
flags.DEFINE_integer("chunk", 4096, "Entities per chunk with --lse=chunked.")
flags.DEFINE_enum("matmul", "float32", ["float32", "tf32", "bf16"],
                  "Precision of the distance matmuls (train.Config.matmul); the floor still "
                  "uses the float32 peak rate.")
flags.DEFINE_integer("repeats", 20, "Timed steps per case.")
flags.DEFINE_integer("warmup", 3, "Untimed steps per case before timing.")
flags.DEFINE_integer("seed", 0, "Seed for parameters and batches.")
flags.DEFINE_string("output", None, "Append one JSON line per case to this file.")
flags.DEFINE_integer("matmul_n", 0, "Size of the peak-rate matmul; 0: 4096 on GPU, 1024 else.")
flags.DEFINE_integer("copy_mib", 0, "MiB copied for the bandwidth; 0: 256 on GPU, 64 else.")


def _best_seconds(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def measure_device(matmul_n: int = 0, copy_mib: int = 0) -> dict[str, Any]:
  """Measured float32 matmul rate (FLOP/s) and device-to-device copy bandwidth (bytes/s)."""
  dev = jax.devices()[0]
  gpu = dev.platform in ("gpu", "cuda", "rocm")
  n = matmul_n or (4096 if gpu else 1024)
  mib = copy_mib or (256 if gpu else 64)
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  peak = 2.0 * n ** 3 / _best_seconds(jax.jit(jnp.matmul), a, b)
  del a, b
  # ``+ 1`` rather than ``+ 0``, which XLA's simplifier could turn into a no-op; the input is
  # donated so the result reuses its buffer (as the donated training step does): a fresh output
  # buffer each call would also time the allocator and first-touch page faults (8x slower on
  # CPU).
  inc = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  x = jax.block_until_ready(inc(jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)))
  nbytes, best = x.nbytes, math.inf
  for _ in range(5):
    t0 = time.perf_counter()
    x = jax.block_until_ready(inc(x))
    best = min(best, time.perf_counter() - t0)
  del x
  bandwidth = 2.0 * nbytes / best
  return {"platform": dev.platform, "device_kind": dev.device_kind, "device_peak_flops": peak,
          "device_bandwidth": bandwidth, "matmul_n": n, "copy_mib": mib}


def make_step(model: str, num_sampled: int, lse: str, chunk: int):
  optimizer = optax.adam(FLAGS.learning_rate)
  kw = dict(model=models.canonical_model(model),
            activation=activations.get_activation(FLAGS.activation), lam=FLAGS.lam,
            num_sampled=num_sampled, matmul=FLAGS.matmul)
  if lse == "chunked":
    grad_fn = jax.value_and_grad(lambda p, b: train.batch_loss(p, b, lse_chunk=chunk, **kw))
  else:
    grad_fn = jax.value_and_grad(lambda p, b: train.batch_loss(p, b, **kw))

  def step(state, batch):
    params, opt_state = state
    loss, grads = grad_fn(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  return optimizer, jax.jit(step, donate_argnums=0)


def random_batches(rng: np.random.Generator, count: int, batch: int, n: int, r2: int):
  out = []
  for _ in range(count):
    triples = np.stack([rng.integers(0, n, batch), rng.integers(0, r2, batch),
                        rng.integers(0, n, batch)], axis=1).astype(np.int32)
    out.append(jax.device_put(triples))
  return jax.block_until_ready(out)


def run_case(model: str, size: str, device: dict[str, Any], seed: int) -> dict[str, Any]:
  n, num_rel = SIZES[size]
  r2, d, b = 2 * num_rel, FLAGS.dim, FLAGS.batch_size
  k = losses.num_sampled_queries(b, FLAGS.alpha)
  optimizer, step = make_step(model, k, FLAGS.lse, FLAGS.chunk)
  params = models.init_params(jax.random.PRNGKey(seed), model, n, r2, d)
  state = jax.block_until_ready((params, optimizer.init(params)))
  rng = np.random.default_rng(seed)
  batches = random_batches(rng, FLAGS.warmup + FLAGS.repeats, b, n, r2)

  t0 = time.perf_counter()
  lowered = step.lower(state, batches[0])
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()

  loss = None
  for batch in batches[:FLAGS.warmup]:
    state, loss = compiled(state, batch)
  jax.block_until_ready((state, loss))
  times = []
  for batch in batches[FLAGS.warmup:]:
    start = time.perf_counter()
    state, loss = compiled(state, batch)
    jax.block_until_ready((state, loss))
    times.append(time.perf_counter() - start)

  p25, median, p75 = (float(v) for v in np.percentile(times, [25, 50, 75]))
  if FLAGS.lse == "chunked" and FLAGS.chunk < n:
    # XLA counts a loop body once: take the costs from the same step done in a single chunk.
    _, one_chunk = make_step(model, k, "chunked", n)
    flops, nbytes = cost_numbers(one_chunk.lower(state, batches[0]).compile())
    cost_source = "one-chunk compile"
  else:
    flops, nbytes = cost_numbers(compiled)
    cost_source = "compiled step"
  compute_s = flops / device["device_peak_flops"] if flops else None
  memory_s = nbytes / device["device_bandwidth"] if nbytes else None
  terms = {name: v for name, v in (("compute", compute_s), ("memory", memory_s)) if v}
  bound = max(terms, key=terms.get) if terms else None
  floor = terms[bound] if bound else None
  return {
      "model": model, "size": size, "num_entities": n, "num_relations": num_rel, "dim": d,
      "batch_size": b, "alpha": FLAGS.alpha, "num_sampled": k, "activation": FLAGS.activation,
      "lse": FLAGS.lse, "chunk": FLAGS.chunk if FLAGS.lse == "chunked" else None,
      "matmul": FLAGS.matmul, "platform": device["platform"], "device_kind": device["device_kind"],
      "jax_version": jax.__version__,
      "lower_s": t1 - t0, "compile_s": t2 - t1,
      "warmup": FLAGS.warmup, "repeats": FLAGS.repeats,
      "step_median_s": median, "step_iqr_s": p75 - p25, "step_p25_s": p25, "step_p75_s": p75,
      "step_min_s": float(min(times)), "triples_per_s": b / median,
      "flops": flops, "bytes_accessed": nbytes, "cost_source": cost_source,
      # the [k, N] distance matmul: 2 k N d forward, 4 k N d backward (dq and de), plus one
      # forward recomputation in the chunked backward pass.
      "analytic_uniformity_flops": float((8 if FLAGS.lse == "chunked" else 6) * k * n * d),
      **memory_numbers(compiled),
      "device_peak_flops": device["device_peak_flops"],
      "device_bandwidth": device["device_bandwidth"],
      "compute_floor_s": compute_s, "memory_floor_s": memory_s,
      "floor_s": floor, "bound": bound, "ratio": median / floor if floor else None,
      "loss": float(loss),
  }


def _fmt(value, scale=1.0, digits=2) -> str:
  return "n/a" if value is None else f"{value * scale:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
  lines = ["| model | size | N | lse | compile s | median ms | IQR ms | GFLOP | GB accessed | "
           "temp MB | footprint MB | floor ms | bound | median / floor |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
  for r in rows:
    lse = r["lse"] + (f" ({r['chunk']})" if r["chunk"] else "")
    if r.get("matmul", "float32") != "float32":
      lse += f", {r['matmul']}"
    lines.append(
        f"| {r['model']} | {r['size']} | {r['num_entities']} | {lse} | "
        f"{_fmt(r['lower_s'] + r['compile_s'])} | {_fmt(r['step_median_s'], 1e3)} | "
        f"{_fmt(r['step_iqr_s'], 1e3)} | {_fmt(r['flops'], 1e-9, 3)} | "
        f"{_fmt(r['bytes_accessed'], 1e-9, 3)} | {_fmt(r['temp_bytes'], 1e-6, 1)} | "
        f"{_fmt(r['footprint_bytes'], 1e-6, 1)} | {_fmt(r['floor_s'], 1e3, 3)} | "
        f"{r['bound'] or 'n/a'} | {_fmt(r['ratio'], 1.0, 1)} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [s for s in FLAGS.sizes if s not in SIZES]
  if unknown:
    raise app.UsageError(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
  for m in FLAGS.models:
    models.canonical_model(m)
  if FLAGS.repeats < 1 or FLAGS.warmup < 0 or FLAGS.chunk < 1:
    raise app.UsageError("need --repeats >= 1, --warmup >= 0, --chunk >= 1")

  device = measure_device(FLAGS.matmul_n, FLAGS.copy_mib)
  print(f"# device {device['device_kind']} ({device['platform']}): "
        f"{device['device_peak_flops'] / 1e9:.1f} GFLOP/s f32 matmul ({device['matmul_n']}^3), "
        f"{device['device_bandwidth'] / 1e9:.1f} GB/s copy ({device['copy_mib']} MiB)",
        file=sys.stderr)
  rows = []
  for i, size in enumerate(FLAGS.sizes):
    for j, model in enumerate(FLAGS.models):
      row = run_case(model, size, device, FLAGS.seed + 1000 * i + j)
      rows.append(row)
      line = json.dumps(row)
      print(line, flush=True)
      if FLAGS.output:
        with open(FLAGS.output, "a") as f:
          f.write(line + "\n")
  print()
  print(markdown_table(rows))


if __name__ == "__main__":
  app.run(main)
