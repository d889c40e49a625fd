"""``hale_jax.labels``: label files for a dataset folder's ids.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hale_jax import labels

from benchmarks import faults
from tests import helpers


def test_codex_labels_only_for_the_folders_ids(tmp_path):
  entities = tmp_path / "entities.json"
  entities.write_text(json.dumps({
      "Q1": {"label": "Universe", "description": "all"}, "Q2": {"label": "  Earth\tplanet "},
      "Q3": {"label": ""}, "Q4": {"description": "no label"}, "Q5": "not a dict"}))
  assert labels.codex_labels(entities) == {"Q1": "Universe", "Q2": "Earth planet"}
  folder = tmp_path / "codex"
  folder.mkdir()
  (folder / "train.txt").write_text("Q2\tP1\tQ9\n")
  assert labels.used_ids(folder) == {"Q2", "Q9"}
  assert labels.used_ids(tmp_path / "nowhere") is None
  target = labels.write_labels({"Q2": "Earth planet"}, folder)
  assert target.read_text() == "Q2\tEarth planet\n"
  with pytest.raises(FileExistsError, match="--overwrite"):
    labels.write_labels({}, folder)
  (tmp_path / "bad.json").write_text("[1, 2]")
  with pytest.raises(ValueError, match="expected a JSON object"):
    labels.codex_labels(tmp_path / "bad.json")


@pytest.mark.slow
def test_labels_command(tmp_path):
  folder = helpers.labelled_dataset(tmp_path / "codex")
  (folder / "entity_labels.tsv").unlink()
  entities = tmp_path / "entities.json"
  entities.write_text(json.dumps({"t0": {"label": "Root Zero"}, "t1.2": {"label": "T one two"},
                                  "Q999": {"label": "not in the folder"}}))
  cmd = [sys.executable, "-m", "hale_jax.labels", f"--codex_entities={entities}",
         f"--output={folder}"]
  env = faults.launcher_env()
  proc = subprocess.run(cmd, cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert "2 entity labels written" in proc.stdout
  assert (folder / "entity_labels.tsv").read_text() == "t0\tRoot Zero\nt1.2\tT one two\n"
