"""Where the top-1 answer goes: per relation, filtered Hits@1 and how often the query's own
entity is the top-1 candidate ("self-ranking").

    python -m benchmarks.self_rank --workdirs=runs/a,runs/b [--split=test]

A query ``(h, r, ?)`` ranks every entity, ``h`` included; ``(h, r, h)`` is almost never a
true triple, yet a transform close to the identity puts ``Phi(h, r)`` next to ``h``.  The
filtered Hits@1 of such a model collapses while its Hits@10 stays (the target comes second).
This prints, for each run folder, the share of queries whose best filtered candidate is the
target (Hits@1, optimistic ties) and the share whose best is the query's own entity, overall
and for each relation with at least ``--min_queries`` queries (both directions pooled).

``--geometry`` adds, per relation id (reciprocals apart) with at least ``--min_queries``
training triples: the share of rotation planes at the identity (cos > 0.99), the translation's
norm, and the medians over the training pairs of ``c_r d^2(Phi(h, r), h)`` (query to its own
entity) and ``c_r d^2(Phi(h, r), t)`` (query to its target), ``d`` the model's distance.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Only when run as a command: importing this module (tests do) leaves absl's FLAGS alone."""
  flags.DEFINE_list("workdirs", None, "Run folders (hale_jax.launch --workdir).", required=True)
  flags.DEFINE_enum("split", "test", ["valid", "test"], "Which split's queries.")
  flags.DEFINE_integer("min_queries", 50, "Relations with fewer queries are pooled as 'other'.")
  flags.DEFINE_integer("chunk", 512, "Queries scored at a time.")
  flags.DEFINE_bool("geometry", False, "Also print the per-relation geometry of the training "
                    "pairs (rotation planes at the identity, distances to own entity and target).")


def top1_breakdown(workdir: str, split: str = "test", chunk: int = 512,
                   min_queries: int = 50) -> dict:
  """``{"queries", "hits@1", "self@1", "relations": {name: (n, hits@1, self@1)}}``."""
  import jax  # pylint: disable=import-outside-toplevel
  from hale_jax import ranking, trained_model  # pylint: disable=import-outside-toplevel
  from hale_jax.data import FilterIndex  # pylint: disable=import-outside-toplevel
  loaded = trained_model.load(workdir)
  data, params = loaded.data, loaded.params
  # one compiled function for every chunk: the last chunk is padded to the same shape
  distances = jax.jit(ranking.candidate_distances, static_argnums=(1, 4))
  model, activation = loaded.model, loaded.activation
  triples = data.split(split)
  nr = data.num_relations
  heads = np.concatenate([triples[:, 0], triples[:, 2]])
  rels = np.concatenate([triples[:, 1], triples[:, 1] + nr])
  targets = np.concatenate([triples[:, 2], triples[:, 0]])
  rows, cols = FilterIndex(data).answers(heads, rels)
  top = np.empty(len(heads), np.int64)
  for start in range(0, len(heads), chunk):
    stop = min(start + chunk, len(heads))
    pad = (0, chunk - (stop - start))
    d = np.array(distances(params, model, np.pad(heads[start:stop], pad),
                           np.pad(rels[start:stop], pad), activation))[:stop - start]
    mine = (rows >= start) & (rows < stop)
    r, c = rows[mine] - start, cols[mine]
    other = c != targets[start:stop][r]  # filter the other known answers, never the target
    d[r[other], c[other]] = np.inf
    top[start:stop] = np.argmin(d, axis=1)
  hit, own = top == targets, top == heads
  out = {"queries": len(heads), "hits@1": float(hit.mean()), "self@1": float(own.mean()),
         "relations": {}}
  base = rels % nr
  names = list(data.relations)
  small = np.zeros(len(heads), bool)
  for r in range(nr):
    m = base == r
    if m.sum() >= min_queries:
      out["relations"][names[r]] = (int(m.sum()), float(hit[m].mean()), float(own[m].mean()))
    else:
      small |= m
  if small.any():
    out["relations"]["other"] = (int(small.sum()), float(hit[small].mean()),
                                 float(own[small].mean()))
  return out


def relation_geometry(workdir: str, min_triples: int = 50) -> dict:
  """``{relation name (reciprocals "name^-1"): {"triples", "identity_planes", "translation_norm",
  "own_median", "target_median"}}`` over the training triples of relation ids with at least
  ``min_triples`` of them; ``identity_planes`` and ``translation_norm`` are None for models
  without those tables."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from hale_jax import distances, models, trained_model  # pylint: disable=import-outside-toplevel
  loaded = trained_model.load(workdir)
  data, params, model = loaded.data, loaded.params, loaded.model
  transform = jax.jit(models.transform, static_argnums=0)
  entity = np.asarray(params["entity"], np.float64)
  nr = data.num_relations
  names = list(data.relations)
  out = {}
  for rid in range(2 * nr):
    rows = data.train[data.train[:, 1] == rid % nr]
    if len(rows) < min_triples:
      continue
    heads, tails = (rows[:, 0], rows[:, 2]) if rid < nr else (rows[:, 2], rows[:, 0])
    ids = np.full(len(heads), rid)
    q = np.asarray(transform(model, params, heads, ids), np.float64)
    c = float(models.relation_scale(params, jnp.array([rid]))[0])
    ball = models.ball_curvature(params, ids)  # None for the Euclidean models

    def median(targets):
      if ball is None:
        d = np.sum((q - entity[targets]) ** 2, axis=1)
      else:  # the hyperbolic models' distance, in the parameters' dtype
        d = np.asarray(distances.pair_squared_distances(q, entity[targets], ball))
      return float(np.median(c * d))
    geo = {"triples": len(rows), "identity_planes": None, "translation_norm": None,
           "own_median": median(heads), "target_median": median(tails)}
    if "rotation" in params:
      pairs = np.asarray(params["rotation"][rid], np.float64).reshape(-1, 2)
      cos = pairs[:, 0] / np.maximum(np.linalg.norm(pairs, axis=1), 1e-15)
      geo["identity_planes"] = float(np.mean(cos > 0.99))
    if "translation" in params:
      geo["translation_norm"] = float(np.linalg.norm(np.asarray(params["translation"][rid])))
    out[names[rid % nr] + ("" if rid < nr else "^-1")] = geo
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from hale_jax.data import one_line  # pylint: disable=import-outside-toplevel
  for workdir in FLAGS.workdirs:
    try:
      b = top1_breakdown(workdir, FLAGS.split, FLAGS.chunk, FLAGS.min_queries)
    except (ValueError, FileNotFoundError) as err:
      print(f"error: {one_line(err)}", file=sys.stderr)
      sys.exit(2)
    print(f"{workdir} ({FLAGS.split}, {b['queries']} queries): Hits@1 {b['hits@1']:.3f}, "
          f"own entity first {b['self@1']:.3f}")
    print(f"| relation | queries | Hits@1 | own entity first |\n|---|---:|---:|---:|")
    for name, (n, h1, s1) in b["relations"].items():
      print(f"| {name} | {n} | {h1:.3f} | {s1:.3f} |")
    if FLAGS.geometry:
      fmt = lambda v: "—" if v is None else f"{v:.3f}"  # pylint: disable=unnecessary-lambda-assignment
      print("\n| relation (train) | triples | planes at identity | translation norm | "
            "median c·d²(query, own entity) | median c·d²(query, target) |\n"
            "|---|---:|---:|---:|---:|---:|")
      for name, g in relation_geometry(workdir, FLAGS.min_queries).items():
        print(f"| {name} | {g['triples']} | {fmt(g['identity_planes'])} | "
              f"{fmt(g['translation_norm'])} | {g['own_median']:.3f} | {g['target_median']:.3f} |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
