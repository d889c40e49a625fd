"""Scale runs (issue 6): memory per device, epoch time and evaluation time on power-law graphs.

    python benchmarks/scale.py --entities=1000000,10000000 --mesh=none
    python benchmarks/scale.py --entities=10000000 --mesh=data:1,model:8 --compile_only
    python benchmarks/scale.py --entities=1000000 --steps=20 --output=scale.jsonl

For each size ``N`` in ``--entities`` it generates ``hale_jax.synthetic.power_law(N)``
(``10 N`` train triples, so ``20 N`` training queries with reciprocals; 1,000 valid and 1,000
test triples), and on the layout ``--mesh`` (``none``: one device, the plain ``train.train``
path with the chunked LSE; ``data:D,model:M``: the sharded path of ``hale_jax.sharding``):

- **memory**: compiles the *full* epoch (all ``20 N / B`` steps, the whole replicated training
  set as its argument) without running it and reports ``compiled.memory_analysis()`` per
  device: arguments (state + training set), temporaries, and the footprint (argument + output +
  temp - donated alias).  On a GPU it also reports the allocator's ``peak_bytes_in_use`` after
  the timed runs.
- **epoch time**: times an epoch of ``--steps`` steps (the same compiled step body, scanned
  ``--steps`` times over a training set of ``--steps * B`` queries) after one untimed run, and
  extrapolates linearly: ``epoch_s = step_s * 20 N / B``, plus the measured time of the epoch's
  ``jax.random.permutation`` of all ``20 N`` queries.  ``--full_epoch`` runs a real epoch too.
- **evaluation time**: filtered ranking of the 2,000 test queries against all ``N`` entities
  (``evaluation.Evaluator``), after compiling; ``eval_per_1k_queries_s`` scales it.

One JSON line per size on stdout (also appended to ``--output``), then a markdown table.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import hale_jax` work without install
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from hale_jax import data as kgdata  # noqa: E402
from hale_jax import evaluation, sharding, synthetic, train  # noqa: E402
from xla_analysis import memory_numbers  # noqa: E402  (beside this script)

FLAGS = flags.FLAGS
flags.DEFINE_list("entities", ["1000000"], "Graph sizes N (entities).")
flags.DEFINE_string("mesh", "none", "'none' (one device) or 'data:D,model:M'.")
flags.DEFINE_string("model", "RotL", "KGE model.")
flags.DEFINE_integer("dim", 32, "Embedding dimension d.")
flags.DEFINE_integer("batch_size", 1024, "Training queries per step B.")
flags.DEFINE_float("alpha", 0.1, "Query-sampling proportion; k = ceil(alpha * B).")
flags.DEFINE_integer("lse_chunk", 65536, "One device: entities per chunk of the LSE (0: plain).")
flags.DEFINE_integer("steps", 10, "Timed steps per size.")
flags.DEFINE_integer("eval_chunk", 256, "Queries ranked at a time.")
flags.DEFINE_bool("compile_only", False, "Only the memory analysis; run nothing.")
flags.DEFINE_bool("full_epoch", False, "Also run and time one full epoch.")
flags.DEFINE_string("output", None, "Append one JSON line per size to this file.")


def _device_peak() -> int | None:
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 - CPU backends may not implement it
    return None
  return stats.get("peak_bytes_in_use")


def _layout(config: train.Config, num_entities: int, num_queries: int):
  """``(mesh, epoch_fn, steps, state, put_train)`` for ``config.mesh``."""
  mesh = sharding.resolve_mesh(config, num_entities)
  if mesh is None:
    epoch_fn, steps = train.make_epoch_fn(config, num_queries)
    return mesh, epoch_fn, steps, jax.numpy.asarray
  epoch_fn, steps = sharding.make_sharded_epoch_fn(config, num_queries, mesh,
                                                   num_entities=num_entities)
  return mesh, epoch_fn, steps, lambda a: sharding.place_training_set(mesh, a)


def _init(config: train.Config, data: kgdata.KGData, mesh):
  if mesh is None:
    return train.init_state(config, data)
  return sharding.init_sharded_state(config, data, mesh)


def run_size(num_entities: int) -> dict[str, Any]:
  t0 = time.perf_counter()
  data = synthetic.power_law(num_entities)
  generate_s = time.perf_counter() - t0
  config = train.Config(model=FLAGS.model, dim=FLAGS.dim, batch_size=FLAGS.batch_size,
                        alpha=FLAGS.alpha, lse_chunk=FLAGS.lse_chunk, mesh=FLAGS.mesh,
                        eval_chunk=FLAGS.eval_chunk)
  config.validate()
  train_host = kgdata.with_reciprocals(data.train, data.num_relations).astype(np.int32)
  queries = train_host.shape[0]
  row = {"entities": num_entities, "train_triples": int(data.train.shape[0]),
         "training_queries": queries, "model": config.model, "dim": config.dim,
         "batch_size": config.batch_size, "mesh": FLAGS.mesh,
         "lse_chunk": config.lse_chunk if FLAGS.mesh == "none" else 0,
         "generate_s": round(generate_s, 2), "devices": jax.device_count(),
         "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform}

  # Memory of the full epoch: compiled against shapes only, nothing allocated.
  mesh, epoch_fn, steps, put = _layout(config, num_entities, queries)
  state_shape = jax.eval_shape(lambda: _init(config, data, mesh))
  if mesh is not None:
    shardings = sharding.state_shardings(mesh, train.make_optimizer(config),
                                         state_shape.params)
    state_shape = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                               state_shape, shardings)
    data_size = int(mesh.shape["data"])
    train_shape = jax.ShapeDtypeStruct((-(-queries // data_size) * data_size, 3), np.int32,
                                       sharding=sharding.training_set_sharding(mesh))
  else:
    train_shape = jax.ShapeDtypeStruct(train_host.shape, np.int32)
  t0 = time.perf_counter()
  compiled = epoch_fn.lower(state_shape, train_shape).compile()
  row["compile_full_epoch_s"] = round(time.perf_counter() - t0, 2)
  row["steps_per_epoch"] = steps
  row.update({f"epoch_{k}": v for k, v in memory_numbers(compiled).items()})
  del compiled
  if FLAGS.compile_only:
    return row

  # Epoch time: a --steps epoch, timed after one untimed run, extrapolated.
  short = FLAGS.steps * config.batch_size
  _, short_fn, short_steps, _ = _layout(config, num_entities, short)
  state = _init(config, data, mesh)
  subset = put(train_host[:short])
  t0 = time.perf_counter()
  compiled = short_fn.lower(state, subset).compile()
  row["compile_s"] = round(time.perf_counter() - t0, 2)
  state, loss = compiled(state, subset)
  jax.block_until_ready(loss)
  t0 = time.perf_counter()
  state, loss = compiled(state, subset)
  jax.block_until_ready(loss)
  row["step_s"] = (time.perf_counter() - t0) / short_steps
  row["loss"] = float(sharding.to_host(loss))
  perm = jax.jit(lambda k: jax.random.permutation(k, queries))
  jax.block_until_ready(perm(jax.random.PRNGKey(0)))
  t0 = time.perf_counter()
  jax.block_until_ready(perm(jax.random.PRNGKey(1)))
  row["permutation_s"] = round(time.perf_counter() - t0, 4)
  row["epoch_s_projected"] = round(row["step_s"] * steps + row["permutation_s"], 2)
  del subset

  if FLAGS.full_epoch:
    full = put(train_host)
    full_fn = epoch_fn.lower(state, full).compile()
    t0 = time.perf_counter()
    state, loss = full_fn(state, full)
    jax.block_until_ready(loss)
    row["epoch_s"] = round(time.perf_counter() - t0, 2)
    del full

  # Evaluation: the test split's 2,000 queries against all N entities.
  index = kgdata.FilterIndex(data)
  test_eval = evaluation.Evaluator(data, "test", config.model, config.eval_chunk, index, mesh)
  row["eval_compile_s"] = round(test_eval.compile(state.params), 2)
  t0 = time.perf_counter()
  metrics = test_eval(state.params)
  row["eval_s"] = round(time.perf_counter() - t0, 3)
  row["eval_queries"] = test_eval.num_queries
  row["eval_per_1k_queries_s"] = round(row["eval_s"] * 1000 / test_eval.num_queries, 3)
  row["test_mrr"] = round(metrics["realistic"]["mrr"], 5)
  row["device_peak_bytes"] = _device_peak()
  return row


def _gib(b) -> str:
  return "–" if b is None else f"{b / 2 ** 30:.2f}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
  head = ("| N | mesh | devices | device | state+train GiB/dev | temp GiB/dev | footprint GiB/dev "
          "| peak GiB (allocator) | step ms | epoch s (projected) | eval s / 1k queries |")
  lines = [head, "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    step = f"{r['step_s'] * 1e3:.1f}" if "step_s" in r else "–"
    lines.append(
        f"| {r['entities']:,} | {r['mesh']} | {r['devices']} | {r['device_kind']} | "
        f"{_gib(r['epoch_argument_bytes'])} | {_gib(r['epoch_temp_bytes'])} | "
        f"{_gib(r['epoch_footprint_bytes'])} | {_gib(r.get('device_peak_bytes'))} | {step} | "
        f"{r.get('epoch_s_projected', '–')} | {r.get('eval_per_1k_queries_s', '–')} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  del argv
  rows = []
  for n in FLAGS.entities:
    row = run_size(int(n.replace("_", "")))
    print(json.dumps(row), flush=True)
    if FLAGS.output:
      with open(FLAGS.output, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    rows.append(row)
  print(markdown_table(rows))


if __name__ == "__main__":
  app.run(main)
