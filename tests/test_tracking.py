"""Writers of a run's metrics: metrics.jsonl, TensorBoard and W&B, alone and in a run.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from hale_jax import tracking

from benchmarks import faults
from tests import helpers


def test_metrics_file_drops_lines_beyond_the_checkpoint(tmp_path):
  mf = tracking.MetricsFile(tmp_path)
  mf.on_start(helpers.make_start_info())  # no file yet
  for epoch in range(1, 6):
    mf.on_validation(helpers.make_validation(epoch, mrr=epoch / 10))
  records = [faults.strict_json(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
  assert records[1]["valid_mrr"] == 0.2 and records[1]["valid_pessimistic_mrr"] == 0.2
  assert records[1]["step"] == 26 and records[1]["learning_rate"] == 0.01
  tracking.MetricsFile(tmp_path).on_start(helpers.make_start_info(epoch=3))  # resumed from epoch 3
  kept = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["epoch"] for l in kept] == [1, 2, 3]


def _event_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
  """``{tag: [(step, value)]}`` from TensorBoard event files, reading the TFRecord framing
  (8-byte length, its masked crc32c, the data, its masked crc32c) and checking both crcs."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  from tensorboardX.record_writer import masked_crc32c  # pylint: disable=import-outside-toplevel
  out: dict[str, list[tuple[int, float]]] = {}
  files = sorted(logdir.rglob("events.out.tfevents.*"))
  assert files, f"no event file in {logdir}"
  for path in files:
    raw, pos = path.read_bytes(), 0
    while pos < len(raw):
      header = raw[pos:pos + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", raw[pos + 8:pos + 12])[0] == masked_crc32c(header)
      data = raw[pos + 12:pos + 12 + length]
      assert struct.unpack("<I", raw[pos + 12 + length:pos + 16 + length])[0] == \
          masked_crc32c(data)
      pos += 16 + length
      event = event_pb2.Event()
      event.ParseFromString(data)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_writer_events_read_back(tmp_path):
  tb = tracking.TensorBoardWriter(tmp_path / "tb")
  for epoch, mrr in ((1, 0.125), (2, 0.25)):
    tb.on_validation(helpers.make_validation(epoch, mrr=mrr, loss=3.0 / epoch))
  test = {mode: {"mrr": 0.5, "mr": 3.0, "hits@1": 0.25, "hits@3": 0.5, "hits@10": 1.0}
          for mode in ("realistic", "pessimistic")}
  tb.on_end({"metrics": {"test": test, "epochs": 2}})
  scalars = _event_scalars(tmp_path / "tb")
  assert scalars["valid/mrr"] == [(1, 0.125), (2, 0.25)]
  assert scalars["train/loss"] == [(1, 3.0), (2, 1.5)]
  assert scalars["valid/pessimistic_mrr"] == [(1, 0.125), (2, 0.25)]
  assert scalars["test_realistic/hits_3"] == [(2, 0.5)]  # tensorboardX writes @ as _
  assert "speed/triples_per_second" in scalars and "train/learning_rate" in scalars


def test_wandb_writer_calls_init_log_finish(monkeypatch):
  fake = helpers.FakeWandb()
  monkeypatch.setitem(sys.modules, "wandb", fake.module)
  w = tracking.WandbWriter("proj", {"lam": 0.3}, "run-1")
  w.on_validation(helpers.make_validation(1, mrr=0.25))
  w.on_end({"metrics": {"test": {"realistic": {"mrr": 0.5, "hits@1": 0.25}}}})
  assert fake.calls[0] == ("init", {"project": "proj", "config": {"lam": 0.3}, "name": "run-1"})
  assert fake.calls[1][0] == "log" and fake.calls[1][2] == 1
  assert fake.calls[1][1] == tracking.validation_record(helpers.make_validation(1, mrr=0.25))
  assert fake.calls[2:] == [("finish",)]
  assert fake.summary == {"test_mrr": 0.5, "test_hits@1": 0.25}


def test_missing_tracking_package_is_a_clear_error(monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import raises ImportError
  with pytest.raises(ValueError, match=r"wandb is not installed; pip install wandb"):
    tracking.WandbWriter("proj", {}, "x")


@pytest.mark.slow
def test_metrics_file_is_flushed_at_every_validation(tracked):
  t = tracked
  assert [(epoch, [r["epoch"] for r in records]) for epoch, records in t.reader.seen] == \
      [(1, [1]), (2, [1, 2]), (3, [1, 2, 3])]
  final = [faults.strict_json(l) for l in (t.workdir / "metrics.jsonl").read_text().splitlines()]
  assert final == t.reader.seen[-1][1]
  assert [r["valid_mrr"] for r in final] == [c["valid_mrr"] for c in t.results["curve"]]


@pytest.mark.slow
def test_tensorboard_events_equal_the_curve(tracked):
  scalars = _event_scalars(tracked.tb)
  curve = tracked.results["curve"]
  assert scalars["valid/mrr"] == [(c["epoch"], float(np.float32(c["valid_mrr"])))
                                  for c in curve]
  assert scalars["train/loss"] == [(c["epoch"], float(np.float32(c["loss"]))) for c in curve]
  test_mrr = tracked.results["metrics"]["test"]["realistic"]["mrr"]
  assert scalars["test_realistic/mrr"] == [(3, float(np.float32(test_mrr)))]


@pytest.mark.slow
def test_wandb_gets_init_log_and_finish(tracked):
  calls, results = tracked.wandb.calls, tracked.results
  assert [c[0] for c in calls] == ["init", "log", "log", "log", "finish"]
  assert calls[0][1] == {"project": "hale-test", "config": tracked.config.flat(),
                         "name": tracked.workdir.name}
  logged = [(c[2], c[1]["valid_mrr"]) for c in calls if c[0] == "log"]
  assert logged == [(c["epoch"], c["valid_mrr"]) for c in results["curve"]]
  assert tracked.wandb.summary["test_mrr"] == results["metrics"]["test"]["realistic"]["mrr"]
