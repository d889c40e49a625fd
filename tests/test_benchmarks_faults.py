"""``benchmarks/faults.py``: SIGKILLs at random moments lose nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from benchmarks import faults
from tests import helpers


@pytest.mark.slow
def test_fault_injection_kills_lose_nothing(tmp_path):
  """benchmarks/faults.py with 2 SIGKILLs (the benchmark's default is 10)."""
  proc = subprocess.run([sys.executable, "-m", "benchmarks.faults", "--kills=2", "--seed=0",
                         f"--workdir={tmp_path}"], cwd=helpers.REPO, env=faults.launcher_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, (proc.stdout, proc.stderr[-3000:])
  last = proc.stdout.strip().splitlines()[-1]
  kills, resumes = (int(w) for w in re.match(
      r"^(\d+) kills, (\d+) resumes \(\d+ inside an epoch\), metrics identical, 0 files "
      r"lost$", last).groups())
  assert kills == 2 and resumes <= kills, proc.stdout
  assert "0 temporary files left" in proc.stdout
  assert len([l for l in proc.stdout.splitlines() if l.startswith("kill ")]) == 2
