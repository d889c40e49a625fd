"""``hale_jax.options``: flags checked before anything runs.
"""

from __future__ import annotations

import pytest
from absl import flags

from hale_jax import options
from hale_jax.data import DataError


def test_split_not_summing_to_one_is_one_line(tmp_path):
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  fv(["launch", f"--data_file={tmp_path / 'kg.csv'}", "--split=0.8,0.1,0.2"])
  with pytest.raises(DataError) as err:
    options.data_spec_from_flags(fv)
  assert "\n" not in str(err.value) and "'0.8,0.1,0.2'" in str(err.value)
  assert "sum to 1" in str(err.value)
