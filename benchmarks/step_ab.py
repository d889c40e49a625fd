"""Times two variants of a flagfile's training step side by side, epochs interleaved.

    python -m benchmarks.step_ab --flagfiles=launch/wn18rr.flags,launch/fb15k237.flags \\
        --a=lse_keep_mib=0 --b=lse_keep_mib=64 --steps=20 --rounds=30

On a shared or noisy machine two timings taken minutes apart cannot be compared: the copy
bandwidth of the 2-core CPU has been seen to move by a factor of 1.8 within minutes.  This
command compiles both variants first, then alternates them epoch by epoch (A, B, B, A, ... so
neither always runs first), so whatever the machine does affects both alike, and reports each
variant's median seconds per step, their quartiles and the median of the per-round ratios B / A.

Each flagfile gives the training config (``hale_jax.options.parse_flagfile``: what
``hale_jax.launch --flagfile=...`` would train); ``--a`` and ``--b`` put flat config fields on
top (``name=value,name=value``; empty: the flagfile as it is).  The data are
``--steps * batch_size`` random queries of the flagfile dataset's size (``benchmarks.step_time``
sizes), so no dataset is read.  Each epoch is training's jitted segment over the whole epoch
(``Program.epoch``: shuffle, ``--steps`` optax steps), timed to ``block_until_ready``.

Reported per flagfile (one JSON line, also appended to ``--output``): ``a_step_s``, ``b_step_s``
(medians), their 25th and 75th percentiles, ``ratio`` (median per-round B / A), the steps per
epoch of the real dataset (reciprocal queries over the batch) and the epochs either variant
fits into the flagfile's ``--max_seconds`` at its median step time (training's other per-epoch
work, validation included, not counted).  The final states of A and B after the same epochs
are compared too (``same_state``): variants meant to give the same numbers must give them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

import jax
import numpy as np

from benchmarks import step_time
from hale_jax import options

# dataset name as flagfiles give it -> (step_time size, training triples)
DATASETS: dict[str, tuple[str, int]] = {
    "WN18RR": ("wn18rr", 86_835),
    "FB15k-237": ("fb15k237", 272_115),
    "CoDEx-M": ("codex_m", 185_584),
}


def parse_fields(text: str) -> dict[str, str]:
  """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}`` (empty text: no fields)."""
  fields = {}
  for item in filter(None, (t.strip() for t in text.split(","))):
    name, sep, value = item.partition("=")
    if not sep or not name:
      raise ValueError(f"expected name=value, got {item!r}")
    fields[name.strip()] = value.strip()
  return fields


def variant_config(flagfile: str, fields: dict[str, str]):
  """The config ``hale_jax.launch --flagfile=flagfile --name=value ...`` would train."""
  fv = options.parse_flagfile(flagfile, [f"--{k}={v}" for k, v in fields.items()])
  return options.config_from_flags(fv), fv["dataset"].value


def _compiled(config, num_entities: int, num_relations: int, queries: np.ndarray):
  _, epoch, steps, state, train = step_time.epoch_case(config, num_entities, num_relations,
                                                       queries)
  return epoch.lower(state, train).compile(), state, train, steps


def run_pair(flagfile: str, a: dict[str, str], b: dict[str, str], steps: int, rounds: int,
             warmup: int, seed: int = 0, size: str | None = None) -> dict[str, Any]:
  """Compiles A and B for ``flagfile`` and times ``rounds`` interleaved epochs of each
  (``size``: a ``step_time`` size instead of the flagfile dataset's, for tests)."""
  (config_a, dataset), (config_b, _) = variant_config(flagfile, a), variant_config(flagfile, b)
  if dataset not in DATASETS:
    raise ValueError(f"{flagfile}: no size known for dataset {dataset!r}; one of "
                     f"{', '.join(DATASETS)}")
  size, triples = (DATASETS[dataset][0] if size is None else size), DATASETS[dataset][1]
  n, num_rel = step_time.SIZES[size]
  batch = config_a.optim.batch_size
  queries = step_time.random_queries(np.random.default_rng(seed), steps * batch, n, 2 * num_rel)
  variants = {"a": _compiled(config_a, n, num_rel, queries),
              "b": _compiled(config_b, n, num_rel, queries)}
  states = {name: v[1] for name, v in variants.items()}
  per_step: dict[str, list[float]] = {"a": [], "b": []}
  for r in range(warmup + rounds):
    for name in ("a", "b") if r % 2 == 0 else ("b", "a"):
      compiled, _, train, epoch_steps = variants[name]
      t0 = time.perf_counter()
      states[name], loss = compiled(states[name], train)
      jax.block_until_ready((states[name], loss))
      if r >= warmup:
        per_step[name].append((time.perf_counter() - t0) / epoch_steps)
  same = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
             zip(jax.tree_util.tree_leaves(states["a"]), jax.tree_util.tree_leaves(states["b"])))
  real_steps = math.ceil(2 * triples / batch)
  budget = config_a.budget.max_seconds
  row: dict[str, Any] = {"flagfile": flagfile, "dataset": dataset, "a": a, "b": b,
                         "steps": steps, "rounds": rounds, "warmup": warmup,
                         "device_kind": jax.devices()[0].device_kind,
                         "jax_version": jax.__version__, "steps_per_epoch": real_steps,
                         "max_seconds": budget, "same_state": same}
  for name, times in per_step.items():
    p25, median, p75 = (float(v) for v in np.percentile(times, [25, 50, 75]))
    row.update({f"{name}_step_s": median, f"{name}_p25_s": p25, f"{name}_p75_s": p75,
                f"{name}_epochs_in_budget": budget / (median * real_steps) if budget else None})
  row["ratio"] = float(np.median(np.array(per_step["b"]) / np.array(per_step["a"])))
  return row


def summary_line(row: dict[str, Any]) -> str:
  ms = lambda name: f"{row[f'{name}_step_s'] * 1e3:.2f} ms ({row[f'{name}_p25_s'] * 1e3:.2f}-" \
                    f"{row[f'{name}_p75_s'] * 1e3:.2f})"
  return (f"{row['dataset']}: A {ms('a')}, B {ms('b')}, B/A {row['ratio']:.3f}; epochs in "
          f"{row['max_seconds']} s: A {row['a_epochs_in_budget']:.1f}, B "
          f"{row['b_epochs_in_budget']:.1f}; same state: {row['same_state']}")


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_list("flagfiles", ["launch/wn18rr.flags", "launch/fb15k237.flags"],
                    "Launcher flagfiles whose training step is timed.")
  flags.DEFINE_string("a", "", "Variant A: config fields over the flagfile, name=value,...")
  flags.DEFINE_string("b", "", "Variant B: config fields over the flagfile, name=value,...")
  flags.DEFINE_integer("steps", 20, "Steps per timed epoch.")
  flags.DEFINE_integer("rounds", 30, "Timed epochs of each variant.")
  flags.DEFINE_integer("warmup", 2, "Untimed epochs of each variant first.")
  flags.DEFINE_string("output", None, "Append one JSON line per flagfile to this file.")
  return flags.FLAGS


def main(argv: list[str], FLAGS) -> None:  # pylint: disable=invalid-name
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.steps < 1 or FLAGS.rounds < 1 or FLAGS.warmup < 0:
    raise app.UsageError("need --steps >= 1, --rounds >= 1, --warmup >= 0")
  try:
    a, b = parse_fields(FLAGS.a), parse_fields(FLAGS.b)
    for flagfile in FLAGS.flagfiles:
      row = run_pair(flagfile, a, b, FLAGS.steps, FLAGS.rounds, FLAGS.warmup)
      print(json.dumps(row), flush=True)
      print(summary_line(row), file=sys.stderr, flush=True)
      if FLAGS.output:
        with open(FLAGS.output, "a", encoding="utf-8") as f:
          f.write(json.dumps(row) + "\n")
  except ValueError as err:
    raise app.UsageError(str(err))


if __name__ == "__main__":
  from absl import app as _app
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
