"""A finished run folder of any size in seconds, for measuring prediction and evaluation.

    python -m benchmarks.fake_run --workdir=/tmp/fake1m --entities=1000000 --queries=100000

:func:`write_fake_run` writes what a finished run leaves (``run.json``, the vocabularies, the
triples as ``triples/*.npy``, ``best_params.npz``) for a :func:`hale_jax.synthetic.power_law`
graph, with random parameters instead of trained ones: nothing is trained, so the folder of
a 1M-entity graph takes seconds, and ``hale_jax.load``, ``python -m hale_jax.predict`` and
``python -m hale_jax.evaluate`` work on it as on a trained run (the metrics mean nothing; the
time and memory do).  :func:`write_queries` writes a queries file for ``predict --queries``.
``run.json`` names no data source (``{"kind": "unknown"}``): the graph is generated with
settings of its own, kept in the dataset description only.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

from hale_jax import models, rundata, rundir, runfiles, synthetic
from hale_jax.config import Config
from hale_jax.data import KGData


def write_fake_run(workdir: str | os.PathLike, entities: int = 1_000_000,
                   triples_per_entity: float = 2.0, relations: int = 100, dim: int = 32,
                   model: str = "RotL", held_out: int = 1000, seed: int = 0) -> KGData:
  """Writes a finished run folder of a power-law graph with random parameters; returns the
  graph.

  ``workdir`` must not exist (FileExistsError).  The parameters are drawn as
  ``hale_jax.models.init_params`` lays them out (``entity [N, dim]`` and the model's relation
  tables), entity rows from ``N(0, 0.3^2)`` so that distances are spread, and ``scale`` around
  ``c_r = 1``.
  """
  workdir = Path(workdir)
  if workdir.exists():
    raise FileExistsError(f"{workdir}: exists; give a new folder")
  data = synthetic.power_law(entities, triples_per_entity, relations, held_out=held_out,
                             seed=seed)
  config = Config.make(model=model, dim=dim, max_epochs=1)
  workdir.mkdir(parents=True)
  rundir.write_run(workdir, rundir.run_spec(config, data, None))
  rundata.keep_data(workdir, data, None)
  runfiles.write_npz(workdir / runfiles.PARAMS, random_params(model, entities, relations, dim,
                                                              seed))
  return data


def random_params(model: str, entities: int, relations: int, dim: int,
                  seed: int = 0) -> dict[str, np.ndarray]:
  """Random float32 tables of ``model`` in ``hale_jax.models.init_params``' layout (no entity
  biases), drawn with NumPy (fast at millions of rows)."""
  shapes = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0), entities,
                                                     relations, dim))
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in shapes.items():
    if name == "entity":
      table = rng.standard_normal(shape.shape, np.float32) * np.float32(0.3)
    elif name == "scale":
      table = rng.normal(0.5, 0.3, shape.shape)
    elif name == "alpha":
      table = rng.uniform(0.5, 1.5, shape.shape)
    else:
      table = rng.normal(0.0, 0.3, shape.shape)
    out[name] = np.asarray(table, np.float32)
  return out


def write_queries(path: str | os.PathLike, data: KGData, count: int, seed: int = 0) -> Path:
  """Writes ``count`` queries for ``predict --queries``: heads and relations of random train
  triples, half asking for the tail (``h<TAB>r<TAB>?``), half for the head
  (``?<TAB>r<TAB>t``)."""
  path = Path(path)
  rng = np.random.default_rng(seed)
  rows = data.train[rng.integers(0, len(data.train), count)]
  tails = rng.random(count) < 0.5
  ents, rels = data.entities, data.relations
  with runfiles.atomic_write(path, "w") as f:
    for (h, r, t), tail in zip(rows.tolist(), tails.tolist()):
      f.write(f"{ents[h]}\t{rels[r]}\t?\n" if tail else f"?\t{rels[r]}\t{ents[t]}\n")
  return path


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "The run folder to write (must not exist).",
                      required=True)
  flags.DEFINE_integer("entities", 1_000_000, "Entities of the power-law graph.")
  flags.DEFINE_float("triples_per_entity", 2.0, "Train triples per entity.")
  flags.DEFINE_integer("relations", 100, "Relations of the graph.")
  flags.DEFINE_integer("dim", 32, "Embedding dimension.")
  flags.DEFINE_string("model", "RotL", "Model whose tables are drawn.")
  flags.DEFINE_integer("queries", 0, "Also write this many queries to <workdir>.queries.tsv.")
  flags.DEFINE_integer("seed", 0, "Seed of the graph, the parameters and the queries.")


def main(argv) -> None:
  del argv
  f = flags.FLAGS
  data = write_fake_run(f.workdir, f.entities, f.triples_per_entity, f.relations, f.dim,
                        f.model, seed=f.seed)
  print(f"wrote {f.workdir}: {data.num_entities:,} entities, {len(data.train):,} train triples")
  if f.queries:
    path = write_queries(f"{f.workdir.rstrip('/')}.queries.tsv", data, f.queries, f.seed)
    print(f"wrote {path}: {f.queries:,} queries")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
