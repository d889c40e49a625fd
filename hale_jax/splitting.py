"""Splitting one list of triples into train, valid and test, seeded, so that valid and test use
only names that occur in train.

:func:`split_where` works on int id triples (millions of rows in a second or so);
:func:`split_triples` applies it to ``(head, relation, tail)`` name triples.  Both give the
same split for the same triples, fractions and seed (module :mod:`hale_jax.data_file` reads a
file and calls them).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from hale_jax.data import SPLITS, DataError

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
Triple = tuple[str, str, str]


def parse_fractions(fractions: str | Sequence[float] = DEFAULT_FRACTIONS
                    ) -> tuple[float, float, float]:
  """``(train, valid, test)`` fractions from ``"0.8,0.1,0.1"`` or a sequence; they must be
  3 finite non-negative numbers summing to 1 (within 1e-6)."""
  try:
    parts = fractions.split(",") if isinstance(fractions, str) else list(fractions)
    text = ",".join(str(p).strip() for p in parts)
    values = tuple(float(p) for p in parts)
  except (TypeError, ValueError):
    text, values = str(fractions), ()
  if (len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values)
      or abs(sum(values) - 1.0) > 1e-6):
    raise DataError(f"split {text!r}: expected 3 non-negative fractions for train, valid and "
                    f"test that sum to 1, e.g. 0.8,0.1,0.1")
  return values[0], values[1], values[2]


def split_where(triples: np.ndarray, fractions: str | Sequence[float] = DEFAULT_FRACTIONS,
                seed: int = 0) -> tuple[np.ndarray, int]:
  """Seeded split of ``[T, 3]`` id triples in which valid and test use only train's ids.

  ``fraction * T`` (rounded half up) triples are drawn for valid and for test, by a seeded
  permutation; then, in the drawn order, each valid or test triple whose head, tail or relation
  is not yet in train moves to train (which adds its ids to train).  Pass distinct triples: a
  duplicate could land in train and in test.

  Returns:
    ``(where, moved)``: ``where[i]`` is 0, 1 or 2 for train, valid or test; ``moved`` counts
    the triples moved to train.
  """
  fractions = parse_fractions(fractions)
  triples = np.asarray(triples).reshape(-1, 3)
  n = len(triples)
  n_valid = min(math.floor(fractions[1] * n + 0.5), n)
  n_test = min(math.floor(fractions[2] * n + 0.5), n - n_valid)
  order = np.random.default_rng(seed).permutation(n)
  where = np.zeros(n, np.int8)  # 0 train, 1 valid, 2 test
  where[order[:n_valid]] = 1
  where[order[n_valid:n_valid + n_test]] = 2
  if n == 0:
    return where, 0
  entities = np.zeros(int(triples[:, [0, 2]].max()) + 1, bool)
  relations = np.zeros(int(triples[:, 1].max()) + 1, bool)
  train = triples[where == 0]
  entities[train[:, 0]] = entities[train[:, 2]] = True
  relations[train[:, 1]] = True
  # A drawn triple whose ids are all in train already stays: train only grows.  The others
  # are decided one by one, in the drawn order.
  drawn = order[:n_valid + n_test]
  heads, rels, tails = triples[drawn, 0], triples[drawn, 1], triples[drawn, 2]
  candidates = drawn[~(entities[heads] & entities[tails] & relations[rels])]
  seen_entities, seen_relations = set(), set()
  moved = 0
  for i, (h, r, t) in zip(candidates.tolist(), triples[candidates].tolist()):
    if ((entities[h] or h in seen_entities) and (entities[t] or t in seen_entities)
        and (relations[r] or r in seen_relations)):
      continue
    where[i] = 0
    seen_entities.update((h, t))
    seen_relations.add(r)
    moved += 1
  return where, moved


def _ids(triples: Sequence[Triple]) -> np.ndarray:
  """``[T, 3]`` ids of name triples (any ids: one per distinct name)."""
  entities: dict[str, int] = {}
  relations: dict[str, int] = {}
  rows = [(entities.setdefault(h, len(entities)), relations.setdefault(r, len(relations)),
           entities.setdefault(t, len(entities))) for h, r, t in triples]
  return np.array(rows, np.int64).reshape(-1, 3)


def split_triples(triples: Sequence[Triple], fractions: str | Sequence[float] = DEFAULT_FRACTIONS,
                  seed: int = 0) -> tuple[dict[str, list[Triple]], int]:
  """:func:`split_where` for ``(head, relation, tail)`` name triples; each split keeps the
  input order.

  Returns:
    ``({"train": [...], "valid": [...], "test": [...]}, number of triples moved to train)``.
  """
  where, moved = split_where(_ids(triples), fractions, seed)
  splits = {s: [triples[i] for i in np.flatnonzero(where == k)] for k, s in enumerate(SPLITS)}
  return splits, moved
