"""Training callbacks: the progress line, early stopping and the stall warning, alone and in a run.

The end-to-end tests (``slow``) share run folders with other test files through fixtures in
``tests/conftest.py``, built once per test run.
"""

from __future__ import annotations

import numpy as np
import pytest

from hale_jax import callbacks
from hale_jax.config import Config
from hale_jax.data import load_folder
from hale_jax.loop import train

from benchmarks import faults
from tests import helpers


def test_progress_line_shows_labelled_times_and_the_time_left():
  lines = []
  p = callbacks.ProgressPrinter(lines.append, test_fraction=1.0)
  p.on_start(helpers.make_start_info())
  p.on_validation(helpers.make_validation(2))  # 2 s per epoch, 8 epochs left; last eval 1 s, final 2 s
  assert lines[-1].endswith("| time left 18s"), lines
  assert "| train time 4.0s, eval time 1.0s | time left" in lines[-1], lines
  assert lines[-1].count("left") == 1 and "ETA" not in lines[-1]
  p.on_validation(helpers.make_validation(4, eval_seconds=1.5))  # last eval 0.5 s, final 1 s
  assert lines[-1].endswith("| time left 13s"), lines
  resumed = callbacks.ProgressPrinter(lines.append, test_fraction=2.0)
  resumed.on_start(helpers.make_start_info(epoch=8))
  resumed.on_validation(helpers.make_validation(9, max_epochs=0, max_seconds=100.0, train_seconds=30.0,
                                    eval_seconds=4.5))  # final: 0.5 s x 3
  assert lines[-1].endswith("| time left 1m12s"), lines
  p = callbacks.ProgressPrinter(lines.append)
  p.on_validation(helpers.make_validation(1, max_epochs=0, max_seconds=0.0))
  assert "left" not in lines[-1] and "ETA" not in lines[-1]
  assert callbacks.duration(3 * 3600 + 61) == "3h01m"


def test_early_stopping_counts_validations_without_gain():
  stop = callbacks.EarlyStopping(patience=2)
  stop.on_start(helpers.make_start_info())
  answers = [stop.on_validation(helpers.make_validation(i + 1, mrr)) for i, mrr in
             enumerate([0.1, 0.2, 0.2, 0.3, 0.25, 0.3])]
  assert answers[:5] == [None] * 5
  assert answers[5].startswith("early stopping: no valid MRR gain above 0 in 2 validations "
                               "(best 0.3000)")
  with_delta = callbacks.EarlyStopping(patience=2, min_delta=0.05)
  with_delta.on_start(helpers.make_start_info())
  answers = [with_delta.on_validation(helpers.make_validation(i + 1, mrr)) for i, mrr in
             enumerate([0.1, 0.12, 0.14])]
  assert answers[:2] == [None, None] and "above 0.05" in answers[2]
  # A resumed run replays its curve: one more flat validation ends it.
  resumed = callbacks.EarlyStopping(patience=2)
  resumed.on_start(helpers.make_start_info(3, [{"valid_mrr": 0.3}, {"valid_mrr": 0.2}]))
  assert resumed.on_validation(helpers.make_validation(4, 0.3)) is not None


def test_stall_warning_is_said_once():
  lines = []
  stall = callbacks.StallWarning(lines.append)
  for epoch, loss in enumerate([5.0, 4.0, 4.0, 4.0], start=1):
    stall.on_validation(helpers.make_validation(epoch, loss=loss))
  assert lines == []
  stall.on_validation(helpers.make_validation(5, loss=4.0))
  assert len(lines) == 1 and lines[0].startswith("warning: the training loss has stayed at 4 ")
  assert "--init_scale" in lines[0]
  stall.on_validation(helpers.make_validation(6, loss=4.0))
  assert len(lines) == 1


@pytest.mark.slow
def test_early_stopping_ends_training_and_tests_the_best(tracked):
  m = tracked.results["metrics"]
  assert m["epochs"] == 3
  assert m["stop_reason"].startswith("early stopping: no valid MRR gain above 1 in 2 "
                                     "validations")
  assert any(l.startswith("stopped after 3 epochs: early stopping") for l in tracked.lines)
  mrrs = [c["valid_mrr"] for c in tracked.results["curve"]]
  assert m["best_epoch"] == 1 + int(np.argmax(mrrs))
  assert m["valid"]["realistic"]["mrr"] == max(mrrs)  # the best-valid parameters were tested


@pytest.mark.slow
def test_progress_lines_of_a_run_show_left_and_eta(tracked):
  progress = [l for l in tracked.lines if l.startswith("epoch ")]
  assert len(progress) == 3
  assert all(" | time left " in l for l in progress), progress


@pytest.mark.slow
def test_stall_warning_for_a_saturated_activation(data_dir, cache, tmp_path):
  """--init_scale=1e3: every distance is far past where hanon is flat, so the loss never moves."""
  lines = []
  with faults.compilation_cache(cache):
    train(Config.make(**helpers.RUN, max_epochs=4, eval_every=1, init_scale=1e3), load_folder(data_dir),
          tmp_path / "run", log=lines.append)
  warnings = [l for l in lines if l.startswith("warning: the training loss")]
  assert len(warnings) == 1 and "has stalled" in warnings[0], lines
  assert "lower --init_scale" in warnings[0]
  assert lines.index(warnings[0]) > max(i for i, l in enumerate(lines) if l.startswith("epoch"))
