"""A small knowledge graph generated deterministically, with held-out triples one can infer.

The default run of ``python -m hale_jax.launch`` trains on it, offline.  Entities form a forest
of taxonomies (``num_trees`` trees of branching ``branching`` and depth ``depth``) plus one
``level_k`` entity per depth.  Relations:

- ``parent_of`` / ``child_of``  the hierarchy and its inverse (inverse pattern);
- ``grandparent_of``            ``parent_of`` composed with itself (composition pattern);
- ``sibling_of``                children of the same parent, both ways (symmetric pattern);
- ``at_level``                  each node to its depth's ``level_k`` entity (typing).

``parent_of`` and ``at_level`` triples all stay in train.  Of the ``child_of``,
``grandparent_of`` and ``sibling_of`` triples, ``holdout`` of each goes to valid and the same to
test, chosen at random; each of them can be inferred from train (its inverse, its two
``parent_of`` links, or its mirror triple ``sibling_of(b, a)``, which is kept in train).

:func:`power_law` makes graphs of millions of entities with power-law degrees and no pattern,
for scale runs (``--dataset=powerlaw:1000000``).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from hale_jax.data import KGData, from_named_triples


def generate(seed: int = 0, num_trees: int = 4, branching: int = 3, depth: int = 5,
             holdout: float = 0.1) -> KGData:
  """Builds the graph; the same arguments always give the same triples and ids."""
  rng = np.random.default_rng(seed)
  parent: dict[str, str] = {}
  level: dict[str, int] = {}
  for tree in range(num_trees):
    frontier = [f"t{tree}"]
    level[frontier[0]] = 0
    for lev in range(1, depth + 1):
      nxt = []
      for node in frontier:
        for c in range(branching):
          child = f"{node}.{c}"
          parent[child] = node
          level[child] = lev
          nxt.append(child)
      frontier = nxt
  children: dict[str, list[str]] = {}
  for c, p in parent.items():
    children.setdefault(p, []).append(c)

  fixed = [(p, "parent_of", c) for c, p in parent.items()]
  fixed += [(n, "at_level", f"level_{lev}") for n, lev in level.items()]
  inferable = {
      "child_of": [(c, "child_of", p) for c, p in parent.items()],
      "grandparent_of": [(parent[p], "grandparent_of", c) for c, p in parent.items()
                         if p in parent],
  }
  pairs = [(a, b) for sibs in children.values() for i, a in enumerate(sibs) for b in sibs[i + 1:]]
  splits = {"train": list(fixed), "valid": [], "test": []}
  for triples in inferable.values():
    order = rng.permutation(len(triples))
    n = int(round(holdout * len(triples)))
    splits["valid"] += [triples[i] for i in order[:n]]
    splits["test"] += [triples[i] for i in order[n:2 * n]]
    splits["train"] += [triples[i] for i in order[2 * n:]]
  # sibling_of: hold out one direction of a pair; its mirror stays in train.
  order = rng.permutation(len(pairs))
  n = int(round(holdout * len(pairs)))
  for rank, i in enumerate(order):
    a, b = pairs[i]
    if rng.random() < 0.5:
      a, b = b, a
    held = "valid" if rank < n else "test" if rank < 2 * n else "train"
    splits["train"].append((b, "sibling_of", a))
    splits[held].append((a, "sibling_of", b))
  desc = (f"generated: seed={seed} trees={num_trees} branching={branching} depth={depth} "
          f"holdout={holdout}")
  return from_named_triples("synthetic", splits, source=desc)


# ----------------------------------------------------------------------------- scale graphs

class NumberedNames(Sequence[str]):
  """``prefix0 .. prefix{n-1}`` without storing them: the vocabulary of a generated graph of
  millions of entities (a tuple of 10M strings would take ~1 GB)."""

  def __init__(self, prefix: str, count: int):
    self.prefix, self.count = prefix, int(count)

  def __len__(self) -> int:
    return self.count

  def __getitem__(self, i):
    if isinstance(i, slice):
      return [f"{self.prefix}{j}" for j in range(*i.indices(self.count))]
    i = int(i)
    if i < 0:
      i += self.count
    if not 0 <= i < self.count:
      raise IndexError(f"name {i} out of range [0, {self.count})")
    return f"{self.prefix}{i}"

  def __iter__(self) -> Iterator[str]:
    return (f"{self.prefix}{j}" for j in range(self.count))

  def __eq__(self, other) -> bool:
    return (isinstance(other, NumberedNames) and (self.prefix, self.count) ==
            (other.prefix, other.count)) or (isinstance(other, Sequence) and
                                            len(other) == self.count and list(self) == list(other))

  def __hash__(self) -> int:
    return hash((self.prefix, self.count))


def power_law(num_entities: int, triples_per_entity: float = 10.0, num_relations: int = 100,
              exponent: float = 0.8, held_out: int = 1000, seed: int = 0) -> KGData:
  """A random graph with power-law degrees, for measuring memory and speed at scale.

  ``round(triples_per_entity * num_entities)`` triples.  Entity ``i`` is drawn with probability
  about proportional to ``(i + 1) ** -exponent`` (Zipf-like, as entity frequencies of real KGs;
  sampled from the continuous law, ``exponent`` in ``(0, 1)``); the
  first ``num_entities`` heads are ``0 .. N-1`` so every entity occurs in train.  Relations are
  drawn the same way over ``num_relations``.  ``held_out`` further triples from the same law go
  to valid and as many to test.  The triples carry no pattern: MRR on this graph means nothing,
  only the time and memory do.  Names are ``e0 ..`` and ``r0 ..`` (:class:`NumberedNames`).
  """
  if (num_entities < 2 or num_relations < 1 or triples_per_entity <= 0 or held_out < 1
      or not 0 < exponent < 1):
    raise ValueError("power_law needs num_entities >= 2, num_relations >= 1, "
                     "triples_per_entity > 0, held_out >= 1 and 0 < exponent < 1")
  rng = np.random.default_rng(seed)
  total = int(round(triples_per_entity * num_entities)) + 2 * held_out

  def zipf(n: int, size: int) -> np.ndarray:
    # Inverse CDF of the continuous density x ** -exponent on [1, n + 1), floored: O(1) a draw
    # (a searchsorted in the discrete CDF took ~3 minutes for 10M entities).
    a = 1.0 - exponent
    x = (1.0 + rng.random(size) * ((n + 1.0) ** a - 1.0)) ** (1.0 / a)
    return np.minimum(x.astype(np.int64) - 1, n - 1).astype(np.int32)

  triples = np.empty((total, 3), np.int32)
  cover = min(num_entities, total - 2 * held_out)
  triples[:cover, 0] = rng.permutation(num_entities)[:cover]
  triples[cover:, 0] = zipf(num_entities, total - cover)
  triples[:, 1] = zipf(num_relations, total)
  triples[:, 2] = zipf(num_entities, total)
  # Relabel entities at random so id order says nothing about degree (as in real vocabularies).
  relabel = rng.permutation(num_entities).astype(np.int32)
  triples[:, 0], triples[:, 2] = relabel[triples[:, 0]], relabel[triples[:, 2]]
  train = triples[:total - 2 * held_out]
  valid, test = triples[total - 2 * held_out:total - held_out], triples[total - held_out:]
  desc = (f"generated power law: seed={seed} entities={num_entities} "
          f"triples_per_entity={triples_per_entity} relations={num_relations} "
          f"exponent={exponent} held_out={held_out}")
  return KGData(f"powerlaw-{num_entities}", NumberedNames("e", num_entities),
                NumberedNames("r", num_relations), train, valid, test, source=desc)
