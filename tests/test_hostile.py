"""The run folder against a hostile user: every case of ``benchmarks/hostile_cases.py`` ends
with the verdict the benchmark expects (refused in one line with nothing changed, recovered
with a warning and the right answer, or simply working)."""

from __future__ import annotations

import pytest

from benchmarks import hostile, hostile_cases
from tests import helpers


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
  """All cases, run once, two at a time, with a shared compilation cache."""
  root = tmp_path_factory.mktemp("hostile")
  lab = hostile.Lab(root, cache=helpers.compile_cache_dir(tmp_path_factory))
  return hostile.run_all(lab, hostile_cases.CASES, jobs=2, report=lambda line: None)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(hostile_cases.CASES))
def test_case_ends_with_its_verdict(verdicts, name):
  assert verdicts[name] == hostile_cases.CASES[name][0]
