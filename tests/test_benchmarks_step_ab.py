"""benchmarks.step_ab: variants built as the launcher builds them, timed in turn, compared."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import step_ab

WN18RR = str(Path(__file__).resolve().parents[1] / "launch" / "wn18rr.flags")


def test_parse_fields():
  assert step_ab.parse_fields("") == {}
  assert step_ab.parse_fields("lse_keep_mib=0, lse_chunk=8192") == {"lse_keep_mib": "0",
                                                                    "lse_chunk": "8192"}
  with pytest.raises(ValueError, match="name=value"):
    step_ab.parse_fields("lse_keep_mib")


def test_variant_config_is_the_flagfile_with_the_fields_on_top():
  config, dataset = step_ab.variant_config(WN18RR, {"lse_keep_mib": "0"})
  assert dataset == "WN18RR"
  assert (config.objective.lse_keep_mib, config.objective.lam, config.budget.max_seconds) == (
      0, 2.0, 600.0)


@pytest.mark.slow
def test_same_variants_end_in_the_same_state_and_others_do_not():
  """Two equal variants train to the same state; a different learning rate does not (so the
  comparison can fail), and every timing is a positive number of seconds."""
  same = step_ab.run_pair(WN18RR, {"lse_keep_mib": "0"}, {"lse_keep_mib": "0"},
                          steps=2, rounds=2, warmup=0, size="tiny")
  assert same["same_state"] is True
  for name in ("a", "b"):
    assert 0 < same[f"{name}_p25_s"] <= same[f"{name}_step_s"] <= same[f"{name}_p75_s"]
  assert same["steps_per_epoch"] == math.ceil(2 * 86_835 / 1024)
  assert same["ratio"] > 0
  other = step_ab.run_pair(WN18RR, {}, {"learning_rate": "0.01"}, steps=2,
                           rounds=1, warmup=0, size="tiny")
  assert other["same_state"] is False
  assert "A " in step_ab.summary_line(other) and "same state: False" in step_ab.summary_line(other)


def test_unknown_dataset_is_refused(tmp_path):
  flagfile = tmp_path / "x.flags"
  flagfile.write_text("--dataset=CoDEx-S\n")
  with pytest.raises(ValueError, match="no size known"):
    step_ab.run_pair(str(flagfile), {}, {}, steps=1, rounds=1, warmup=0)
