"""benchmarks.scale on a small power-law graph: the full epoch's memory on a sharded layout
(compiled against shapes only), and the timed epoch and ranking on one device."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import scale
from hale_jax import data as kgdata
from hale_jax import synthetic
from hale_jax.config import Config
from hale_jax.layout import Layout
from hale_jax.program import Program


@pytest.mark.slow
def test_sharded_memory_and_one_device_times():
  sharded = Config.make(dim=8, batch_size=256, mesh="data:2,model:4")
  row = scale.run_size(sharded, 1001, compile_only=True)
  assert (row["mesh"], row["devices"], row["entities"]) == ("data:2,model:4", 8, 1001)
  assert row["steps_per_epoch"] == row["training_queries"] // 256
  assert row["lse"] == "plain"  # a row-sharded table is never chunked
  assert row["epoch_argument_bytes"] > 0 and row["epoch_footprint_bytes"] > 0
  assert "step_s" not in row

  table = scale.markdown_table([row])
  assert "| 1,001 | data:2,model:4 | 8 |" in table and "| – | – | – |" in table

  # the timed parts on one device (run_size adds them to the row)
  one = Config.make(dim=8, batch_size=256, mesh="none", lse_chunk=0, eval_chunk=500)
  data = synthetic.power_law(1001)
  train = kgdata.with_reciprocals(data.train, data.num_relations).astype(np.int32)
  layout = Layout.for_run(one, 1001)
  program = Program.build(one, layout, data.num_relations)
  state, row = scale.time_epochs(program, train, 2, full_epoch=False)
  row.update(scale.time_evaluation(layout, one, data, state.params))
  for key in ("step_s", "loss", "epoch_s_projected", "eval_s", "test_mrr"):
    assert math.isfinite(row[key]) and row[key] >= 0, (key, row[key])
  assert row["eval_queries"] == 2000
