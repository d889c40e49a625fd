"""Scale runs: memory per device, epoch time and evaluation time on power-law graphs.

    python -m benchmarks.scale --entities=1000000,10000000 --mesh=none
    python -m benchmarks.scale --entities=10000000 --mesh=data:1,model:8 --compile_only
    python -m benchmarks.scale --entities=1000000 --steps=20 --output=scale.jsonl

For each size ``N`` in ``--entities`` it generates ``hale_jax.synthetic.power_law(N)``
(``10 N`` train triples, so ``20 N`` training queries with reciprocals; 1,000 valid and 1,000
test triples) and lays the run out as training does (``Layout.for_run`` with ``--mesh``:
``none`` is one device, ``auto`` training's choice, ``data:D,model:M`` a mesh; the row's
``mesh`` is ``layout.describe()``'s).  The epochs are ``program.epoch``, the state
``program.init_state`` (``hale_jax.program.Program``), the ranking ``ranking.Evaluator`` on
the same layout:

- **memory**: compiles the *full* epoch (all ``20 N / B`` steps, the whole training set as its
  argument) against shapes only, without running it, and reports
  ``compiled.memory_analysis()`` per device: arguments (state + training set), temporaries,
  and the footprint (argument + output + temp - donated alias).  On a GPU it also reports the
  allocator's ``peak_bytes_in_use`` after the timed runs.
- **epoch time**: times an epoch of ``--steps`` steps (the same epoch function over a training
  set of ``--steps * B`` queries) after one untimed run, and extrapolates linearly:
  ``epoch_s = step_s * 20 N / B``, plus the measured time of the epoch's
  ``jax.random.permutation`` of all ``20 N`` queries.  ``--full_epoch`` runs a real epoch too.
- **evaluation time**: filtered ranking of the 2,000 test queries against all ``N`` entities,
  after compiling; ``eval_per_1k_queries_s`` scales it.

One JSON line per size on stdout (also appended to ``--output``), then a markdown table.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jax
import numpy as np

from benchmarks.xla_analysis import memory_numbers
from hale_jax import data as kgdata
from hale_jax import objective, ranking, synthetic
from hale_jax.config import Config
from hale_jax.layout import Layout, to_host
from hale_jax.program import Program


def _device_peak() -> int | None:
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - CPU backends may not implement it
    return None
  return stats.get("peak_bytes_in_use")


def _timed(fn, *args):
  """``(fn(*args) ready, seconds)``."""
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - t0


def state_shapes(program: Program):
  """The shapes and shardings of ``program.init_state()``'s state, nothing allocated."""
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      jax.eval_shape(program.init), program.shardings)


def full_epoch_memory(program: Program, num_queries: int) -> dict[str, Any]:
  """Compiles the full epoch against shapes; its steps, compile time and memory analysis."""
  layout = program.layout
  epoch, steps = program.epoch(num_queries)
  data_size = int(layout.mesh.shape["data"])
  train = jax.ShapeDtypeStruct((-(-num_queries // data_size) * data_size, 3), np.int32,
                               sharding=layout.training_set_sharding())
  t0 = time.perf_counter()
  compiled = epoch.lower(state_shapes(program), train).compile()
  out = {"compile_full_epoch_s": round(time.perf_counter() - t0, 2), "steps_per_epoch": steps}
  out.update({f"epoch_{k}": v for k, v in memory_numbers(compiled).items()})
  return out


def time_epochs(program: Program, train_host: np.ndarray, steps: int, full_epoch: bool):
  """Times a ``steps``-step epoch (and a full one with ``full_epoch``); returns the state and
  the row's timing fields."""
  layout, b = program.layout, program.config.optim.batch_size
  short, short_steps = program.epoch(steps * b)
  state = program.init_state()
  subset = layout.place_training_set(train_host[:steps * b])
  t0 = time.perf_counter()
  compiled = short.lower(state, subset).compile()
  row: dict[str, Any] = {"compile_s": round(time.perf_counter() - t0, 2)}
  state, _ = compiled(state, subset)
  (state, loss), seconds = _timed(compiled, state, subset)
  row["step_s"] = seconds / short_steps
  row["loss"] = float(to_host(loss))
  queries = train_host.shape[0]
  perm = jax.jit(lambda k: jax.random.permutation(k, queries))
  jax.block_until_ready(perm(jax.random.PRNGKey(0)))
  row["permutation_s"] = round(_timed(perm, jax.random.PRNGKey(1))[1], 4)
  full_steps = queries // b
  row["epoch_s_projected"] = round(row["step_s"] * full_steps + row["permutation_s"], 2)
  del subset
  if full_epoch:
    epoch, _ = program.epoch(queries)
    train = layout.place_training_set(train_host)
    full = epoch.lower(state, train).compile()
    (state, _), seconds = _timed(full, state, train)
    row["epoch_s"] = round(seconds, 2)
  return state, row


def time_evaluation(layout: Layout, config: Config, data: kgdata.KGData,
                    params) -> dict[str, Any]:
  """Compiles and times the filtered ranking of the test split on ``layout``."""
  test_eval = ranking.Evaluator(data, "test", config.model.model, config.budget.eval_chunk,
                                   kgdata.FilterIndex(data), layout,
                                   objective.activation_of(config.objective))
  row: dict[str, Any] = {"eval_compile_s": round(test_eval.compile(params), 2)}
  metrics, seconds = _timed(test_eval, params)
  row["eval_s"] = round(seconds, 3)
  row["eval_queries"] = test_eval.num_queries
  row["eval_per_1k_queries_s"] = round(seconds * 1000 / test_eval.num_queries, 3)
  row["test_mrr"] = round(metrics["realistic"]["mrr"], 5)
  return row


def run_size(config: Config, num_entities: int, steps: int = 10, compile_only: bool = False,
             full_epoch: bool = False) -> dict[str, Any]:
  """One row: memory of the full epoch, then (unless ``compile_only``) epoch and ranking
  times on a power-law graph of ``num_entities`` entities."""
  t0 = time.perf_counter()
  data = synthetic.power_law(num_entities)
  generate_s = time.perf_counter() - t0
  train_host = kgdata.with_reciprocals(data.train, data.num_relations).astype(np.int32)
  layout = Layout.for_run(config, num_entities)
  program = Program.build(config, layout, data.num_relations)
  device = jax.devices()[0]
  row = {"entities": num_entities, "train_triples": int(data.train.shape[0]),
         "training_queries": int(train_host.shape[0]), "model": config.model.model,
         "dim": config.model.dim, "batch_size": config.optim.batch_size, **layout.describe(),
         "lse": program.lse_form, "generate_s": round(generate_s, 2),
         "devices": layout.mesh.size, "device_kind": device.device_kind,
         "platform": device.platform}
  row.update(full_epoch_memory(program, train_host.shape[0]))
  if compile_only:
    return row
  state, timing = time_epochs(program, train_host, steps, full_epoch)
  row.update(timing)
  row.update(time_evaluation(layout, config, data, state.params))
  row["device_peak_bytes"] = _device_peak()
  return row


def _gib(b) -> str:
  return "–" if b is None else f"{b / 2 ** 30:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
  """One line per size: memory per device, step and projected epoch time, ranking time."""
  head = ("| N | mesh | devices | device | state+train GiB/dev | temp GiB/dev | footprint GiB/dev "
          "| peak GiB (allocator) | step ms | epoch s (projected) | eval s / 1k queries |")
  lines = [head, "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    step_ms = f"{r['step_s'] * 1e3:.1f}" if "step_s" in r else "–"
    lines.append(
        f"| {r['entities']:,} | {r['mesh'] or 'one device'} | {r['devices']} | "
        f"{r['device_kind']} | {_gib(r['epoch_argument_bytes'])} | "
        f"{_gib(r['epoch_temp_bytes'])} | {_gib(r['epoch_footprint_bytes'])} | "
        f"{_gib(r.get('device_peak_bytes'))} | {step_ms} | "
        f"{r.get('epoch_s_projected', '–')} | {r.get('eval_per_1k_queries_s', '–')} |")
  return "\n".join(lines)


def _define_flags():
  """The command's flags (defined only when run as a command); training settings default to
  the config's defaults."""
  from absl import flags  # pylint: disable=import-outside-toplevel
  d = Config()
  flags.DEFINE_list("entities", ["1000000"], "Graph sizes N (entities).")
  flags.DEFINE_string("mesh", "none", "'none' (one device), 'auto' or 'data:D,model:M'.")
  flags.DEFINE_string("model", d.model.model, "KGE model.")
  flags.DEFINE_integer("dim", d.model.dim, "Embedding dimension d.")
  flags.DEFINE_integer("batch_size", d.optim.batch_size, "Training queries per step B.")
  flags.DEFINE_float("alpha", d.objective.alpha, "Query-sampling proportion; k = ceil(alpha B).")
  flags.DEFINE_integer("lse_chunk", None, "Entities per chunk of the LSE (0: plain; default: "
                       "training's for the backend). One device only: a sharded table is "
                       "never chunked.")
  flags.DEFINE_integer("steps", 10, "Timed steps per size.")
  flags.DEFINE_integer("eval_chunk", d.budget.eval_chunk, "Queries ranked at a time.")
  flags.DEFINE_bool("compile_only", False, "Only the memory analysis; run nothing.")
  flags.DEFINE_bool("full_epoch", False, "Also run and time one full epoch.")
  flags.DEFINE_string("output", None, "Append one JSON line per size to this file.")
  return flags.FLAGS


def main(argv: list[str], FLAGS) -> None:  # pylint: disable=invalid-name
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # keep jax's INFO lines out of the output
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = Config.make(model=FLAGS.model, dim=FLAGS.dim, batch_size=FLAGS.batch_size,
                         alpha=FLAGS.alpha, lse_chunk=FLAGS.lse_chunk, mesh=FLAGS.mesh,
                         eval_chunk=FLAGS.eval_chunk)
  except ValueError as err:
    raise app.UsageError(str(err))
  rows = []
  for n in FLAGS.entities:
    row = run_size(config, int(n.replace("_", "")), FLAGS.steps, FLAGS.compile_only,
                   FLAGS.full_epoch)
    print(json.dumps(row), flush=True)
    if FLAGS.output:
      with open(FLAGS.output, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    rows.append(row)
  print(markdown_table(rows))


if __name__ == "__main__":
  from absl import app as _app
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
