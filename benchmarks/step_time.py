"""Times HaLE's training step per model and problem size, against two floors.

    python -m benchmarks.step_time --sizes=wn18rr,fb15k237 --models=RotL --lse=plain
    python -m benchmarks.step_time --sizes=synth1m --lse=chunked --chunk=8192 --output=steps.jsonl
    python -m benchmarks.step_time --sizes=tiny --models=RotL,TransE --steps=4 --repeats=3

What is timed is training's step loop: for every model in ``--models`` and size in
``--sizes`` the config (``hale_jax.config.Config``, defaults as in training) goes through
``Layout.for_run`` and ``Program.build`` (``program.epoch(steps * batch_size)``: training's
segment, ``step.segment_fn``, over a whole epoch in one call), the state comes from
``program.init_state`` and the training set, ``steps * batch_size`` random queries of the
size's ``N`` entities and ``2 |R|`` relation ids, from ``layout.place_training_set``.  Each
epoch shuffles it on the device and loops over ``--steps`` optax steps (loss, gradient, Adam).
``--lse`` picks the uniformity LSE: ``auto`` (training's default chunk for the backend),
``plain`` (the ``[k, N]`` block at once), ``chunked`` (``--chunk`` entities at a time) or
``fused`` (training's ``--lse=fused``: the Pallas kernel on a GPU, chunks elsewhere).

Reported per case (one JSON line on stdout, also appended to ``--output``):

- ``lower_s`` and ``compile_s``: tracing/lowering and XLA compilation of the epoch;
- ``step_median_s``, ``step_iqr_s`` (and the quartiles, min): ``--repeats`` epochs after
  ``--warmup`` untimed ones, each timed to ``block_until_ready`` and divided by its steps (so
  a step's share of the epoch's shuffle is included);
- ``flops`` and ``bytes_accessed`` of one step from ``compiled.cost_analysis()`` (XLA's static
  estimate; ``None`` where the backend gives none), taken from the same epoch compiled for one
  step: XLA counts a loop body once, not once per iteration, so a many-step epoch would be
  counted as one step on some backends and not on others, and a chunked LSE (a loop over
  chunks) as one chunk, and a Pallas kernel not at all.  With a chunked or fused LSE the
  one-step compile uses the plain LSE (``cost_source`` says which); from the timed epoch's ``compiled.memory_analysis()``:
  ``temp_bytes``, ``peak_bytes`` (``None`` where absent) and ``footprint_bytes`` = argument +
  output + temp - alias (``benchmarks.xla_analysis``);
- the device, measured once per run (:func:`measure_device`): ``device_peak_flops`` (best of a
  few ``n x n`` float32 matmuls at JAX's default precision, ``n`` = 4096 on GPU, 1024 on CPU),
  ``matmul_rate`` (the same for ``distances.squared_distances`` at the ``--matmul`` precision
  training uses: float32 exact, tf32 or bf16 inputs) and ``device_bandwidth`` (best of a few
  ``x + 1`` over 256 MiB on GPU / 64 MiB on CPU, counting a read and a write);
- the XLA floor ``floor_s = max(flops / device_peak_flops, bytes_accessed / device_bandwidth)``,
  ``bound`` (``compute`` or ``memory``, the larger term) and ``ratio = step_median_s /
  floor_s``;
- the strict floor ``strict_floor_s`` (:func:`strict_cost`) and ``strict_ratio =
  step_median_s / strict_floor_s``.

The strict floor is what a step cannot avoid, whatever the compiler does.  With ``N``
entities, ``d`` dimensions, batch ``B``, ``k`` sampled queries, ``s`` bytes per parameter::

    strict_flops = 6 d (k N + B)
    strict_bytes = s (10 E + 8 R)
    strict_floor_s = strict_flops / matmul_rate + strict_bytes / device_bandwidth

- FLOPs: the distance computations.  The uniformity term's ``[k, d] x [d, N]`` product is
  ``2 k N d`` forward and two products of the same size backward (the queries' and the
  entities' gradients), ``6 k N d``; each of the batch's ``B`` own (positive) distances is a
  ``d``-long product, ``6 B d`` likewise.  The models' transforms and the elementwise work
  are left out.
- Bytes: ``E`` counts the elements of the tables the LSE sweeps (``entity [N, d]``, and
  ``bias_tail [N]`` when a run learns it), ``R`` those of every other parameter table (the
  relation tables: negligible, but counted).  A swept table is read by the LSE forward and
  read again by its backward (2), its dense gradient is written (1), and Adam reads table,
  gradient and two moments and writes table and two moments (7): 10 passes.  Any other table
  has its gradient written and Adam's 7: 8 passes.  (Adagrad keeps one moment: 8 and 6.)
- The two terms add up rather than overlap: Adam's update, the memory-bound part, cannot start
  before the gradient, the compute-bound part, is complete.

A markdown table of all cases is printed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.xla_analysis import cost_numbers, memory_numbers
from hale_jax import distances, models, step
from hale_jax.config import Config
from hale_jax.layout import Layout, to_host
from hale_jax.program import Program

# name -> (entities N, relations |R|); relation ids incl. reciprocals are 2 |R|.
SIZES: dict[str, tuple[int, int]] = {
    "tiny": (500, 5),
    "wn18rr": (40_943, 11),
    "fb15k237": (14_541, 237),
    "codex_m": (17_050, 51),
    "synth100k": (100_000, 50),
    "synth1m": (1_000_000, 50),
}
LSE_MODES = ("auto", "plain", "chunked", "fused")
MOMENTS = {"adam": 2, "adagrad": 1}  # optimiser state tables per parameter table
SWEPT_TABLES = ("entity", "bias_tail")  # read whole by the uniformity LSE


@dataclasses.dataclass(frozen=True)
class Timing:
  """How a case is timed: ``repeats`` epochs of ``steps`` steps after ``warmup`` epochs."""
  steps: int = 10
  repeats: int = 20
  warmup: int = 2


# ------------------------------------------------------------------ the device

def _best_seconds(fn, *args, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*args))  # compile and warm up
  best = math.inf
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def _copy_bandwidth(mib: int) -> float:
  """Bytes per second of a donated ``x + 1`` (a read and a write)."""
  # ``+ 1`` rather than ``+ 0``, which XLA's simplifier could turn into a no-op; the input is
  # donated so the result reuses its buffer (as the donated training epoch does): a fresh
  # output buffer each call would also time the allocator and first-touch page faults (8x
  # slower on CPU).
  inc = jax.jit(lambda v: v + 1.0, donate_argnums=0)
  x = jax.block_until_ready(inc(jnp.ones((mib * 2 ** 20 // 4,), jnp.float32)))
  nbytes, best = x.nbytes, math.inf
  for _ in range(5):
    t0 = time.perf_counter()
    x = jax.block_until_ready(inc(x))
    best = min(best, time.perf_counter() - t0)
  return 2.0 * nbytes / best


def measure_device(matmul_n: int = 0, copy_mib: int = 0,
                   modes: tuple[str, ...] = ("float32",)) -> dict[str, Any]:
  """Measured matmul rates (FLOP/s) and device-to-device copy bandwidth (bytes/s).

  ``device_peak_flops`` is ``jnp.matmul`` of float32 at JAX's default precision;
  ``matmul_rates[mode]`` is ``distances.squared_distances`` at each training precision of
  ``modes`` (its ``2 n^3`` FLOPs; the norms and the sum add ``O(n^2)``).
  """
  dev = jax.devices()[0]
  gpu = dev.platform in ("gpu", "cuda", "rocm")
  n = matmul_n or (4096 if gpu else 1024)
  mib = copy_mib or (256 if gpu else 64)
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  flops = 2.0 * n ** 3
  peak = flops / _best_seconds(jax.jit(jnp.matmul), a, b)
  rates = {m: flops / _best_seconds(jax.jit(lambda x, y, m=m: distances.squared_distances(x, y, m)),
                                    a, b) for m in modes}
  del a, b
  return {"platform": dev.platform, "device_kind": dev.device_kind, "device_peak_flops": peak,
          "matmul_rates": rates, "device_bandwidth": _copy_bandwidth(mib), "matmul_n": n,
          "copy_mib": mib}


# ------------------------------------------------------------------ the floors

def strict_cost(config: Config, num_entities: int, num_relations: int) -> dict[str, float]:
  """``{"strict_flops", "strict_bytes"}`` of one HaLE step (the module docstring's formula),
  with the parameter tables of ``config``'s model at their real sizes."""
  d, n, b = config.model.dim, num_entities, config.optim.batch_size
  params = jax.eval_shape(step.init_fn(config, n, num_relations)).params
  swept = sum(math.prod(v.shape) for k, v in params.items() if k in SWEPT_TABLES)
  other = sum(math.prod(v.shape) for k, v in params.items() if k not in SWEPT_TABLES)
  update = 3 + 2 * MOMENTS[config.optim.optimizer]  # read table, gradient, moments; write back
  itemsize = np.dtype(config.model.dtype).itemsize
  return {"strict_flops": float(6 * d * (config.num_sampled * n + b)),
          "strict_bytes": float(itemsize * ((2 + 1 + update) * swept + (1 + update) * other))}


def strict_floor(strict_flops: float, strict_bytes: float, matmul_rate: float,
                 bandwidth: float) -> dict[str, float]:
  """The strict floor's two terms and their sum (seconds)."""
  compute, memory = strict_flops / matmul_rate, strict_bytes / bandwidth
  return {"strict_compute_s": compute, "strict_memory_s": memory,
          "strict_floor_s": compute + memory}


def xla_floor(flops: float | None, nbytes: float | None,
              device: dict[str, Any]) -> dict[str, Any]:
  """XLA's cost at the device's peak rate and bandwidth: the larger term is the floor."""
  compute_s = flops / device["device_peak_flops"] if flops else None
  memory_s = nbytes / device["device_bandwidth"] if nbytes else None
  terms = {name: v for name, v in (("compute", compute_s), ("memory", memory_s)) if v}
  bound = max(terms, key=terms.get) if terms else None
  return {"compute_floor_s": compute_s, "memory_floor_s": memory_s,
          "floor_s": terms[bound] if bound else None, "bound": bound}


# ------------------------------------------------------------------ one case

def make_config(model: str, lse: str = "auto", chunk: int = 4096, **fields: Any) -> Config:
  """The training config of a case: ``fields`` (flat config fields) over the defaults, and
  the LSE as ``lse`` says (``auto`` keeps ``fields``' ``lse_chunk``; ``fused`` sets the
  config's ``lse``)."""
  if lse == "plain":
    fields["lse_chunk"] = 0
  elif lse == "chunked":
    fields["lse_chunk"] = chunk
  elif lse == "fused":
    fields["lse"] = "fused"
  elif lse != "auto":
    raise ValueError(f"unknown lse {lse!r}; choose one of {', '.join(LSE_MODES)}")
  return Config.make(model=model, **fields)


def random_queries(rng: np.random.Generator, count: int, num_entities: int,
                   num_relation_ids: int) -> np.ndarray:
  """``[count, 3]`` int32 queries ``(head, relation id, tail)`` drawn uniformly."""
  return np.stack([rng.integers(0, num_entities, count), rng.integers(0, num_relation_ids, count),
                   rng.integers(0, num_entities, count)], axis=1).astype(np.int32)


def _time_epochs(compiled, state, train, timing: Timing, steps: int):
  """Runs ``warmup`` then ``repeats`` epochs; returns the last state and loss and the timed
  epochs' seconds per step."""
  loss = None
  for _ in range(timing.warmup):
    state, loss = compiled(state, train)
  jax.block_until_ready((state, loss))
  per_step = []
  for _ in range(timing.repeats):
    t0 = time.perf_counter()
    state, loss = compiled(state, train)
    jax.block_until_ready((state, loss))
    per_step.append((time.perf_counter() - t0) / steps)
  return state, loss, per_step


def _step_cost(program: Program, state, queries: np.ndarray):
  """``(flops, bytes, source)`` of one step: the epoch compiled for one step (plain LSE)."""
  config, layout = program.config, program.layout
  one = config.replace(lse_chunk=0, lse="auto")
  source = "one-step epoch" if program.lse_form == "plain" else "one-step epoch, plain LSE"
  plain = program if one == config else Program.build(one, layout, program.num_relations)
  epoch, _ = plain.epoch(config.optim.batch_size)
  train = layout.place_training_set(queries[:config.optim.batch_size])
  flops, nbytes = cost_numbers(epoch.lower(state, train).compile())
  return flops, nbytes, source


def epoch_case(config: Config, num_entities: int, num_relations: int, queries: np.ndarray):
  """``(program, epoch, steps, state, train)``: training's jitted epoch over ``queries`` (its
  number of steps), the initial state and the placed training set, as training builds them."""
  layout = Layout.for_run(config, num_entities)
  program = Program.build(config, layout, num_relations)
  epoch, steps = program.epoch(queries.shape[0])
  return program, epoch, steps, program.init_state(), layout.place_training_set(queries)


def run_case(config: Config, size: str, device: dict[str, Any], timing: Timing,
             seed: int = 0) -> dict[str, Any]:
  """Compiles and times ``config``'s epoch on a random graph of ``size``; one result row."""
  n, num_rel = SIZES[size]
  b = config.optim.batch_size
  queries = random_queries(np.random.default_rng(seed), timing.steps * b, n, 2 * num_rel)
  program, epoch, steps, state, train = epoch_case(config, n, num_rel, queries)
  layout = program.layout
  t0 = time.perf_counter()
  lowered = epoch.lower(state, train)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  state, loss, per_step = _time_epochs(compiled, state, train, timing, steps)
  p25, median, p75 = (float(v) for v in np.percentile(per_step, [25, 50, 75]))
  flops, nbytes, cost_source = _step_cost(program, state, queries)
  strict = strict_cost(config, n, num_rel)
  matmul = config.objective.matmul
  row = {
      "model": config.model.model, "size": size, "num_entities": n, "num_relations": num_rel,
      "dim": config.model.dim, "batch_size": b, "alpha": config.objective.alpha,
      "num_sampled": config.num_sampled, "activation": config.objective.activation,
      "lse_chunk": config.objective.lse_chunk, "lse_form": program.lse_form,
      "matmul": matmul, **layout.describe(), "platform": device["platform"],
      "device_kind": device["device_kind"], "jax_version": jax.__version__,
      "lower_s": t1 - t0, "compile_s": t2 - t1, **dataclasses.asdict(timing),
      "step_median_s": median, "step_iqr_s": p75 - p25, "step_p25_s": p25, "step_p75_s": p75,
      "step_min_s": float(min(per_step)), "triples_per_s": b / median,
      "flops": flops, "bytes_accessed": nbytes, "cost_source": cost_source,
      **memory_numbers(compiled), "device_peak_flops": device["device_peak_flops"],
      "matmul_rate": device["matmul_rates"][matmul],
      "device_bandwidth": device["device_bandwidth"], **xla_floor(flops, nbytes, device),
      **strict, **strict_floor(strict["strict_flops"], strict["strict_bytes"],
                               device["matmul_rates"][matmul], device["device_bandwidth"]),
      "loss": float(to_host(loss)),
  }
  row["ratio"] = median / row["floor_s"] if row["floor_s"] else None
  row["strict_ratio"] = median / row["strict_floor_s"]
  return row


# ------------------------------------------------------------------ output

def _fmt(value, scale=1.0, digits=2) -> str:
  return "n/a" if value is None else f"{value * scale:.{digits}f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """One line per case: times in ms, XLA's costs and floor, the strict floor."""
  lines = ["| model | size | N | lse | compile s | median ms | IQR ms | GFLOP | GB accessed | "
           "temp MB | footprint MB | floor ms | bound | median / floor | strict floor ms | "
           "median / strict |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
  for r in rows:
    lse = r["lse_form"] + (f", {r['matmul']}" if r["matmul"] != "float32" else "")
    lines.append(
        f"| {r['model']} | {r['size']} | {r['num_entities']} | {lse} | "
        f"{_fmt(r['lower_s'] + r['compile_s'])} | {_fmt(r['step_median_s'], 1e3)} | "
        f"{_fmt(r['step_iqr_s'], 1e3)} | {_fmt(r['flops'], 1e-9, 3)} | "
        f"{_fmt(r['bytes_accessed'], 1e-9, 3)} | {_fmt(r['temp_bytes'], 1e-6, 1)} | "
        f"{_fmt(r['footprint_bytes'], 1e-6, 1)} | {_fmt(r['floor_s'], 1e3, 3)} | "
        f"{r['bound'] or 'n/a'} | {_fmt(r['ratio'], 1.0, 1)} | "
        f"{_fmt(r['strict_floor_s'], 1e3, 3)} | {_fmt(r['strict_ratio'], 1.0, 1)} |")
  return "\n".join(lines)


# ------------------------------------------------------------------ command line

def _define_flags(fv=None):
  """The command's flags on ``fv`` (default: absl's FLAGS, only when run as a command, so
  importing this module leaves them alone); training settings default to the config's."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  fv = flags.FLAGS if fv is None else fv

  def define(kind: str, *args) -> None:
    getattr(flags, f"DEFINE_{kind}")(*args, flag_values=fv)

  d = Config()
  define("list", "models", list(models.PAPER_MODELS), "Models to time (any of "
         f"{', '.join(models.MODEL_NAMES)}).")
  define("list", "sizes", ["wn18rr", "fb15k237", "codex_m", "synth100k", "synth1m"],
         f"Problem sizes, from: {', '.join(SIZES)}.")
  define("integer", "dim", d.model.dim, "Embedding dimension d.")
  define("integer", "batch_size", d.optim.batch_size, "Training queries per step B.")
  define("float", "alpha", d.objective.alpha, "Query-sampling proportion; k = ceil(alpha B).")
  define("float", "lam", d.objective.lam, "Alignment weight lambda.")
  define("string", "activation", d.objective.activation, "Hardness-aware activation.")
  define("float", "learning_rate", d.optim.learning_rate, "Adam learning rate.")
  define("enum", "lse", "auto", list(LSE_MODES), "Uniformity LSE: training's default for the "
         "backend, the plain [k, N] block, chunks of --chunk entities, or the fused kernel.")
  define("integer", "chunk", 4096, "Entities per chunk with --lse=chunked.")
  define("enum", "matmul", d.objective.matmul, list(distances.MATMUL_MODES),
         "Precision of the distance matmuls (the strict floor uses its rate).")
  define("string", "mesh", d.run.mesh, "Device layout, as training's --mesh.")
  define("integer", "steps", Timing.steps, "Steps per timed epoch.")
  define("integer", "repeats", Timing.repeats, "Timed epochs per case.")
  define("integer", "warmup", Timing.warmup, "Untimed epochs per case before timing.")
  define("integer", "seed", d.optim.seed, "Seed for parameters and training sets.")
  define("string", "output", None, "Append one JSON line per case to this file.")
  define("integer", "matmul_n", 0, "Size of the peak-rate matmul; 0: 4096 on GPU, 1024 else.")
  define("integer", "copy_mib", 0, "MiB copied for the bandwidth; 0: 256 on GPU, 64 else.")
  return fv


def main(argv: list[str], FLAGS) -> None:  # pylint: disable=invalid-name
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # keep jax's INFO lines out of the output
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = [s for s in FLAGS.sizes if s not in SIZES]
  if unknown:
    raise app.UsageError(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
  if FLAGS.steps < 1 or FLAGS.repeats < 1 or FLAGS.warmup < 0 or FLAGS.chunk < 1:
    raise app.UsageError("need --steps >= 1, --repeats >= 1, --warmup >= 0, --chunk >= 1")
  fields = {k: FLAGS[k].value for k in ("dim", "batch_size", "alpha", "lam", "activation",
                                        "learning_rate", "matmul", "mesh", "seed")}
  try:
    configs = [make_config(m, FLAGS.lse, FLAGS.chunk, **fields) for m in FLAGS.models]
  except ValueError as err:
    raise app.UsageError(str(err))
  timing = Timing(FLAGS.steps, FLAGS.repeats, FLAGS.warmup)
  device = measure_device(FLAGS.matmul_n, FLAGS.copy_mib, (FLAGS.matmul,))
  print(f"# device {device['device_kind']} ({device['platform']}): "
        f"{device['device_peak_flops'] / 1e9:.1f} GFLOP/s f32 matmul, "
        f"{device['matmul_rates'][FLAGS.matmul] / 1e9:.1f} GFLOP/s {FLAGS.matmul} distances "
        f"({device['matmul_n']}^3), {device['device_bandwidth'] / 1e9:.1f} GB/s copy "
        f"({device['copy_mib']} MiB)", file=sys.stderr)
  rows = []
  for i, size in enumerate(FLAGS.sizes):
    for config in configs:
      row = run_case(config, size, device, timing, FLAGS.seed + 1000 * i)
      rows.append(row)
      line = json.dumps(row)
      print(line, flush=True)
      if FLAGS.output:
        with open(FLAGS.output, "a", encoding="utf-8") as f:
          f.write(line + "\n")
  print()
  print(markdown_table(rows))


if __name__ == "__main__":
  from absl import app as _app
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
