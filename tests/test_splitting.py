"""hale_jax.splitting and the vectorised loading of one file: the same splits, duplicates and
ids as the line-by-line algorithm (kept here as the reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hale_jax import data as kgdata
from hale_jax import data_file, splitting


def reference_split(triples, fractions, seed):
  """The split as one loop over the drawn triples in Python sets (the original algorithm)."""
  fractions = splitting.parse_fractions(fractions)
  n = len(triples)
  n_valid = min(math.floor(fractions[1] * n + 0.5), n)
  n_test = min(math.floor(fractions[2] * n + 0.5), n - n_valid)
  order = np.random.default_rng(seed).permutation(n)
  where = np.zeros(n, np.int8)
  where[order[:n_valid]] = 1
  where[order[n_valid:n_valid + n_test]] = 2
  entities, relations = set(), set()
  for i in np.flatnonzero(where == 0):
    h, r, t = triples[i]
    entities.update((h, t))
    relations.add(r)
  moved = 0
  for i in order[:n_valid + n_test]:
    h, r, t = triples[i]
    if h not in entities or t not in entities or r not in relations:
      where[i] = 0
      entities.update((h, t))
      relations.add(r)
      moved += 1
  splits = {s: [triples[i] for i in np.flatnonzero(where == k)] for k, s in
            enumerate(kgdata.SPLITS)}
  return splits, moved, where


def _sparse_graph(rng, entities, relations, count):
  """Distinct random triples, many of whose names occur once (so that many triples move)."""
  triples = {(f"e{rng.integers(entities)}", f"r{rng.integers(relations)}",
              f"e{rng.integers(entities)}") for _ in range(count)}
  return sorted(triples, key=lambda t: rng.random())


@pytest.mark.parametrize("entities,relations,fractions,seed", [
    (40, 3, (0.8, 0.1, 0.1), 0), (400, 30, (0.6, 0.2, 0.2), 1), (2000, 5, (0.5, 0.25, 0.25), 7),
    (300, 300, (0.3, 0.4, 0.3), 2), (50, 2, (0.0, 0.5, 0.5), 3), (50, 2, (1.0, 0.0, 0.0), 4),
])
def test_split_matches_the_sequential_algorithm(rng, entities, relations, fractions, seed):
  triples = _sparse_graph(rng, entities, relations, 1500)
  want, want_moved, want_where = reference_split(triples, fractions, seed)
  got, moved = splitting.split_triples(triples, fractions, seed)
  assert got == want and moved == want_moved
  assert data_file.split_triples is splitting.split_triples
  # on ids (any numbering of the names gives the same split)
  names = sorted({x for h, _, t in triples for x in (h, t)}, key=lambda _: rng.random())
  eid = {n: i for i, n in enumerate(names)}
  rid = {r: i for i, r in enumerate(sorted({r for _, r, _ in triples}, reverse=True))}
  ids = np.array([(eid[h], rid[r], eid[t]) for h, r, t in triples], np.int32)
  where, moved = splitting.split_where(ids, fractions, seed)
  np.testing.assert_array_equal(where, want_where)
  assert moved == want_moved
  if fractions[0] < 0.6:
    assert moved > 0  # the case exercises the sequential moves


def test_split_where_edge_cases():
  where, moved = splitting.split_where(np.zeros((0, 3), np.int32), (0.8, 0.1, 0.1))
  assert where.shape == (0,) and moved == 0
  where, moved = splitting.split_where(np.array([[0, 0, 1]]), (0, 0.5, 0.5))
  assert where.tolist() == [0] and moved == 1
  with pytest.raises(kgdata.DataError, match="sum to 1"):
    splitting.split_where(np.array([[0, 0, 1]]), (0.5, 0.5, 0.5))


def test_first_copies_match_dict_order(rng):
  for size, distinct in ((200, 50), (300, 300), (1, 1), (0, 1)):
    keys = rng.integers(0, distinct * 3, size) if distinct < size else rng.permutation(size)
    first = kgdata.first_copies(keys)
    want = list(dict.fromkeys(keys.tolist()))
    if len(want) == size:
      assert first is None
    else:
      assert keys[first].tolist() == want


def reference_load(path, fractions, seed):
  """load_triples_file as the line-by-line original: names, dict dedup, reference split."""
  triples = data_file.read_triples_file(path)
  distinct = list(dict.fromkeys(triples))
  splits, moved, _ = reference_split(distinct, fractions, seed)
  return kgdata.from_named_triples("kg", splits), len(triples) - len(distinct), moved


@pytest.mark.parametrize("fractions,seed", [((0.8, 0.1, 0.1), 0), ((0.4, 0.3, 0.3), 5)])
def test_load_triples_file_matches_the_original(tmp_path, rng, fractions, seed):
  triples = _sparse_graph(rng, 800, 12, 900)
  triples += [triples[i] for i in rng.integers(0, len(triples), 60)]  # duplicates, anywhere
  triples = [triples[i] for i in rng.permutation(len(triples))]
  path = tmp_path / "kg.tsv"
  path.write_text("".join(f"{h}\t{r}\t{t}\n" for h, r, t in triples), encoding="utf-8")
  data, info = data_file.load_triples_file(path, fractions=fractions, seed=seed)
  want, duplicates, moved = reference_load(path, fractions, seed)
  assert data.entities == want.entities and data.relations == want.relations
  for s in kgdata.SPLITS:
    np.testing.assert_array_equal(data.split(s), want.split(s))
  assert (info.duplicates, info.moved, info.read) == (duplicates, moved, len(triples))
  assert duplicates > 0 and moved > 0
