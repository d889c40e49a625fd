"""``hale_jax.evaluate``, the command: its breakdown table.
"""

from __future__ import annotations




def test_relation_breakdown_shows_labels():
  from hale_jax import evaluate  # pylint: disable=import-outside-toplevel
  metrics = {"mrr": 0.5, "mr": 3.0, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0}
  groups = {"P1412": {"count": 4, "realistic": metrics},
            "P17": {"count": 2, "realistic": metrics}}
  rows = evaluate.format_breakdown(groups, "relation", {"P1412": "languages spoken"})
  lines = rows.splitlines()
  assert lines[1].startswith("P1412 (languages spoken) ") and lines[2].startswith("P17 ")
  assert len({len(l) for l in lines}) == 1  # one column width
