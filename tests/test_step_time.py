"""benchmarks.step_time: the strict floor's arithmetic, the XLA floor, that it times training's
own epoch, and a tiny end-to-end run of the command (slow)."""

from __future__ import annotations

import json
import math

import pytest
from absl import flags

from benchmarks import step_time
from hale_jax.program import Program

POSITIVE = ("lower_s", "compile_s", "step_median_s", "step_p25_s", "step_p75_s", "step_min_s",
            "triples_per_s", "flops", "bytes_accessed", "footprint_bytes", "argument_bytes",
            "output_bytes", "device_peak_flops", "matmul_rate", "device_bandwidth", "floor_s",
            "ratio", "strict_flops", "strict_bytes", "strict_compute_s", "strict_memory_s",
            "strict_floor_s", "strict_ratio")
NON_NEGATIVE = ("step_iqr_s", "temp_bytes")


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_strict_floor_against_a_hand_count():
  # TransE, N = 10 entities, |R| = 2 (4 relation ids), d = 4, B = 8, alpha = 0.25: k = 2.
  config = step_time.make_config("TransE", "plain", dim=4, batch_size=8, alpha=0.25)
  assert config.num_sampled == 2
  cost = step_time.strict_cost(config, 10, 2)
  # FLOPs: the [2, 4] x [4, 10] product, 2*2*10*4 = 160 forward and 320 backward, and the 8
  # positive distances, 2*8*4 = 64 forward and 128 backward: 672.
  assert cost["strict_flops"] == 160 + 320 + 64 + 128 == 672
  # Bytes (float32): entity [10, 4] = 40 elements x 10 passes (LSE forward and backward reads,
  # gradient write, Adam's 4 reads and 3 writes); translation [4, 4] and scale [4] = 20
  # elements x 8 passes (no LSE reads).  4 * (400 + 160) = 2240.
  assert cost["strict_bytes"] == 4 * (40 * 10 + 20 * 8) == 2240
  floor = step_time.strict_floor(672, 2240, matmul_rate=1e3, bandwidth=1e2)
  assert floor == pytest.approx({"strict_compute_s": 0.672, "strict_memory_s": 22.4,
                                 "strict_floor_s": 23.072})
  # RotL with learned tail biases: bias_tail [10] is swept by the LSE like the entity table;
  # rotation, translation [4, 4] and scale, alpha [4] are not.  Adagrad keeps one moment, so
  # 8 and 6 passes.
  config = step_time.make_config("RotL", dim=4, batch_size=8, alpha=0.25, bias="learn",
                                 optimizer="adagrad")
  cost = step_time.strict_cost(config, 10, 2)
  assert cost["strict_flops"] == 672
  assert cost["strict_bytes"] == 4 * ((40 + 10) * 8 + (16 + 16 + 4 + 4) * 6)


def test_lse_modes_and_xla_floor():
  assert step_time.make_config("RotL", "plain").objective.lse_chunk == 0
  assert step_time.make_config("RotL", "chunked", 128).objective.lse_chunk == 128
  assert step_time.make_config("RotL", "auto", lse_chunk=77).objective.lse_chunk == 77
  assert step_time.make_config("RotL", "fused").objective.lse == "fused"
  with pytest.raises(ValueError, match="plain"):
    step_time.make_config("RotL", "sometimes")
  device = {"device_peak_flops": 100.0, "device_bandwidth": 10.0}
  assert step_time.xla_floor(1000.0, 50.0, device) == {
      "compute_floor_s": 10.0, "memory_floor_s": 5.0, "floor_s": 10.0, "bound": "compute"}
  assert step_time.xla_floor(None, 50.0, device)["bound"] == "memory"
  assert step_time.xla_floor(None, None, device)["floor_s"] is None


def test_epoch_is_the_programs_epoch(monkeypatch):
  """run_case times what Program.epoch returns (training's segment over an epoch), not a copy
  of its own."""
  seen = []

  def spy(self, num_queries):
    seen.append((self.config.model.model, num_queries))
    raise RuntimeError("stop here")

  monkeypatch.setattr(Program, "epoch", spy)
  config = step_time.make_config("RotL", "plain", batch_size=64)
  with pytest.raises(RuntimeError, match="stop here"):
    step_time.run_case(config, "tiny", {}, step_time.Timing(steps=3, repeats=1, warmup=0))
  assert seen == [("RotL", 3 * 64)]


@pytest.mark.slow
def test_command_tiny_chunked(tmp_path, capsys):
  """The command's main, in this process on flags of its own (``python -m benchmarks.step_time``
  calls the same with absl's)."""
  out = tmp_path / "steps.jsonl"
  fv = step_time._define_flags(flags.FlagValues())  # pylint: disable=protected-access
  fv(["step_time", "--sizes=tiny", "--models=TransE", "--lse=chunked", "--chunk=128",
      "--steps=2", "--repeats=2", "--warmup=1", "--matmul_n=128", "--copy_mib=4",
      f"--output={out}"])
  step_time.main(["step_time"], fv)
  stdout = capsys.readouterr().out
  (row,) = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
  assert [json.loads(line) for line in out.read_text().splitlines()] == [row]
  for key in POSITIVE:
    assert _finite(row[key]) and row[key] > 0, (key, row[key])
  for key in NON_NEGATIVE:
    assert _finite(row[key]) and row[key] >= 0, (key, row[key])
  assert _finite(row["loss"])
  assert (row["model"], row["size"], row["num_entities"], row["num_sampled"]) == (
      "TransE", "tiny", 500, 103)
  assert row["lse_form"] == "chunks of 128" and row["mesh"] is None
  assert row["cost_source"] == "one-step epoch, plain LSE"  # XLA counts a loop body once
  assert (row["steps"], row["repeats"], row["warmup"]) == (2, 2, 1)
  assert row["step_p25_s"] <= row["step_median_s"] <= row["step_p75_s"]
  # the one-step costs cover at least the strict floor's distance matmuls
  assert row["flops"] >= row["strict_flops"]
  assert math.isclose(row["floor_s"], max(row["flops"] / row["device_peak_flops"],
                                          row["bytes_accessed"] / row["device_bandwidth"]))
  assert math.isclose(row["strict_floor_s"], row["strict_flops"] / row["matmul_rate"]
                      + row["strict_bytes"] / row["device_bandwidth"])
  assert math.isclose(row["strict_ratio"], row["step_median_s"] / row["strict_floor_s"])
  assert "| TransE | tiny | 500 | chunks of 128 |" in stdout  # the markdown table
  assert "median / strict |" in stdout
