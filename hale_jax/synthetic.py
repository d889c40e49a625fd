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
"""

from __future__ import annotations

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
