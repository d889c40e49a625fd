"""benchmarks/step_time.py runs end to end on a tiny case and reports sane numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

POSITIVE = ("lower_s", "compile_s", "step_median_s", "step_p25_s", "step_p75_s", "step_min_s",
            "triples_per_s", "flops", "bytes_accessed", "analytic_uniformity_flops",
            "footprint_bytes", "argument_bytes", "output_bytes", "device_peak_flops",
            "device_bandwidth", "floor_s", "ratio")
NON_NEGATIVE = ("step_iqr_s", "temp_bytes")
OTHER = ("model", "size", "num_entities", "num_relations", "dim", "batch_size", "alpha",
         "num_sampled", "activation", "lse", "chunk", "platform", "device_kind", "jax_version",
         "warmup", "repeats", "cost_source", "peak_bytes", "alias_bytes", "compute_floor_s",
         "memory_floor_s", "bound", "loss")


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_step_time_tiny(tmp_path):
  out = tmp_path / "steps.jsonl"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  cmd = [sys.executable, "benchmarks/step_time.py", "--sizes=tiny", "--models=RotL,TransE",
         "--repeats=3", "--warmup=1", f"--output={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-4000:]
  rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert [(r["model"], r["size"]) for r in rows] == [("RotL", "tiny"), ("TransE", "tiny")]
  assert [json.loads(line) for line in out.read_text().splitlines()] == rows
  for row in rows:
    missing = set(POSITIVE + NON_NEGATIVE + OTHER) - row.keys()
    assert not missing, missing
    for key in POSITIVE:
      assert _finite(row[key]) and row[key] > 0, (key, row[key])
    for key in NON_NEGATIVE:
      assert _finite(row[key]) and row[key] >= 0, (key, row[key])
    assert _finite(row["loss"])
    assert row["num_entities"] == 500 and row["num_relations"] == 5
    assert row["num_sampled"] == 103 and row["lse"] == "plain" and row["chunk"] is None
    assert row["step_p25_s"] <= row["step_median_s"] <= row["step_p75_s"]
    assert row["bound"] in ("compute", "memory")
    assert math.isclose(row["floor_s"], max(row["flops"] / row["device_peak_flops"],
                                            row["bytes_accessed"] / row["device_bandwidth"]))
    assert math.isclose(row["ratio"], row["step_median_s"] / row["floor_s"])
  assert "| model | size |" in proc.stdout  # the markdown table
  assert "| RotL | tiny | 500 | plain |" in proc.stdout


def test_step_time_tiny_chunked():
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  cmd = [sys.executable, "benchmarks/step_time.py", "--sizes=tiny", "--models=TransE",
         "--lse=chunked", "--chunk=128", "--repeats=2", "--warmup=1"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-4000:]
  (row,) = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert row["lse"] == "chunked" and row["chunk"] == 128
  assert row["cost_source"] == "one-chunk compile"  # XLA counts a scan body only once
  for key in POSITIVE:
    assert _finite(row[key]) and row[key] > 0, (key, row[key])
  # the one-chunk costs cover at least the forward and backward distance matmuls
  assert row["flops"] >= 0.5 * row["analytic_uniformity_flops"]
