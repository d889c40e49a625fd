"""benchmarks/RESULTS.md is generated from benchmarks/records/results/*.json: the committed file must
equal a rebuild, and every record must parse strictly and carry its provenance (no JAX needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import make_results

ROOT = Path(make_results.__file__).resolve().parent.parent
FILES = sorted(make_results.RECORDS.glob("*.json"))
PROVENANCE = ("device", "date", "commit", "command")


def _no_constants(name: str):
  raise ValueError(f"{name} in a record")


def _records(path: Path) -> list[dict]:
  return json.loads(path.read_text(), parse_constant=_no_constants)


def test_results_md_is_current():
  """The committed RESULTS.md is what the generator writes from the records."""
  expected = make_results.render(make_results.load())
  assert make_results.OUT.read_text() == expected, (
      "benchmarks/RESULTS.md differs from its records: run python -m benchmarks.make_results")


def test_results_md_is_short():
  """RESULTS.md stays within the acceptance's limit of lines (as `wc -l` counts them), so that a
  reader takes in the headline, scoreboard, tables and findings in a minute; probes go to notes."""
  lines = make_results.render(make_results.load()).count("\n")
  assert lines <= make_results.MAX_LINES == 250, (
      f"benchmarks/RESULTS.md would have {lines} lines, over {make_results.MAX_LINES}")


def test_findings_name_their_records():
  """Each finding's placeholders, shown (`lines`) or not (`detail`), name records in its `refs`,
  so the sources RESULTS.md cites for it are those of the numbers it prints."""
  records = {r["id"]: r for path in FILES for r in _records(path)}
  findings = [r for r in records.values() if r["kind"] == "finding"]
  assert findings
  for f in findings:
    text = " ".join(f["lines"] + f.get("detail", []))
    named = {m.split(".")[0] for m in make_results.PLACEHOLDER.findall(text)}
    assert named <= set(f["refs"]), (f["id"], sorted(named - set(f["refs"])))


def test_there_are_record_files():
  assert len(FILES) >= 5


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_records_parse_strictly_and_carry_provenance(path: Path):
  """Each record parses without NaN/Infinity, names an existing note and, unless it is a finding,
  states device, date, commit and command (null where the note does not state them)."""
  records = _records(path)
  assert isinstance(records, list) and records
  for r in records:
    assert r.get("id") and r.get("kind"), r
    assert (ROOT / r["note"]).is_file(), (r["id"], r["note"])
    if r["kind"] != "finding":
      missing = [k for k in PROVENANCE if k not in r]
      assert not missing, (r["id"], missing)
      assert r["device"], r["id"]


def test_ids_are_unique_and_references_resolve():
  """Ids are unique over all files; comparisons and findings name records that exist."""
  records = [r for path in FILES for r in _records(path)]
  ids = [r["id"] for r in records]
  assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
  for r in records:
    for ref in r.get("runs", []) + r.get("refs", []):
      assert ref in ids, (r["id"], ref)


def test_strict_parser_rejects_nan(tmp_path: Path):
  bad = tmp_path / "bad.json"
  bad.write_text('[{"id": "x", "metrics": {"test_mrr": NaN}}]')
  with pytest.raises(ValueError):
    _records(bad)
  with pytest.raises(ValueError):
    make_results.load(tmp_path)
