"""The documentation runs: the tutorial's and the README's code blocks, the generated flag
reference, and the API reference build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hale_jax import options

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.S | re.M)


def code_blocks(path: Path) -> list[tuple[str, str]]:
  """``(language, code)`` of every python and bash block of a markdown file, in order."""
  return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(path.read_text(encoding="utf-8"))]


def _env() -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
  env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
  return env


def run_blocks(blocks: list[tuple[str, str]], folder: Path) -> None:
  """Runs the blocks in ``folder``: python in one shared namespace, bash with this Python's
  folder first on PATH (so ``python`` is the interpreter running the tests)."""
  namespace: dict = {"__name__": "__docs__"}
  cwd = os.getcwd()
  os.chdir(folder)
  try:
    for number, (language, code) in enumerate(blocks, start=1):
      if language == "python":
        exec(compile(code, f"<block {number}>", "exec"), namespace)  # pylint: disable=exec-used
      else:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], env=_env(),
                              capture_output=True, text=True)
        assert done.returncode == 0, f"block {number} failed:\n{code}\n{done.stderr[-3000:]}"
  finally:
    os.chdir(cwd)


@pytest.mark.slow
def test_tutorial_runs(tmp_path):
  blocks = code_blocks(REPO / "docs" / "tutorial.md")
  assert sum(lang == "python" for lang, _ in blocks) >= 4
  run_blocks(blocks, tmp_path)
  assert (tmp_path / "runs" / "family" / "results.json").is_file()


@pytest.mark.slow
def test_readme_blocks_run(tmp_path):
  """The README's Python and the trained-model commands (the install and benchmark lines,
  which need a fresh venv or the datasets, are run by CI and by hand)."""
  blocks = [(lang, code) for lang, code in code_blocks(REPO / "README.md")
            if lang == "python" or ("runs/demo" in code and "pip install" not in code)]
  assert len(blocks) >= 3
  # the prose before the trained-model block asks for this run (shortened here)
  blocks.insert(0, ("bash", "python -m hale_jax.launch --workdir=runs/demo --max_seconds=1"))
  run_blocks(blocks, tmp_path)


def test_flag_reference_is_current():
  assert (REPO / "docs" / "flags.md").read_text(encoding="utf-8") == options.flags_markdown(), (
      "docs/flags.md differs from the flag definitions: run python -m hale_jax.options > "
      "docs/flags.md")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("pdoc") is None and not
                    os.path.exists(Path(sys.executable).parent / "pdoc"), reason="pdoc missing")
def test_api_reference_builds(tmp_path):
  done = subprocess.run([sys.executable, "-m", "pdoc", "hale_jax", "-o", str(tmp_path)],
                        env=_env(), capture_output=True, text=True, cwd=REPO)
  assert done.returncode == 0, done.stderr[-3000:]
  warnings = [line for line in done.stderr.splitlines() if "warn" in line.lower()]
  assert not warnings, "\n".join(warnings)
  assert (tmp_path / "hale_jax.html").is_file() or (tmp_path / "hale_jax" / "index.html").is_file()
