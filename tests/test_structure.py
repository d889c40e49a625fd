"""The shape of the code: no import cycle, short functions and modules, and no stray words.

Static checks (``ast`` and ``git ls-files``); nothing is imported or run.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "hale_jax"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400
# Words that belong to the machinery around the project, not to the project; spelled in
# pieces so that this file does not match itself.
_STRAY = ("ses" + "sions?", "lea" + "ses?", "le" + "nt")
STRAY_WORDS = re.compile(r"\b(" + "|".join(_STRAY) + r")\b", re.IGNORECASE)


def _modules() -> dict[str, Path]:
  """``{module name: path}`` of ``hale_jax/*.py`` (``__init__`` for the package)."""
  return {p.stem: p for p in sorted(PACKAGE.glob("*.py"))}


def _imports(path: Path, modules: set[str]) -> set[str]:
  """The ``hale_jax`` modules ``path`` imports anywhere in the file (top level, inside
  functions, under ``if TYPE_CHECKING``): ``import hale_jax.x``, ``from hale_jax import x``,
  ``from hale_jax.x import y`` and their relative forms.  A name of ``from hale_jax import``
  that is not a module (``__version__``) is an import of the package's ``__init__``."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        parts = alias.name.split(".")
        if parts[0] == "hale_jax":
          found.add(parts[1] if len(parts) > 1 else "__init__")
    elif isinstance(node, ast.ImportFrom):
      if node.level > 1:
        continue  # outside the package
      base = (node.module or "") if node.level == 0 else "hale_jax." + (node.module or "")
      parts = base.rstrip(".").split(".")
      if parts[0] != "hale_jax":
        continue
      if len(parts) > 1:
        found.add(parts[1])
      else:
        found.update(a.name if a.name in modules else "__init__" for a in node.names)
  found.discard(path.stem)
  return found & modules


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []
  counter = [0]

  def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def _a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
  """One concrete cycle through the first module of a component, for the message."""
  start, members = component[0], set(component)
  paths = {start: [start]}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w in sorted(graph[v] & members):
        if w == start:
          return paths[v] + [start]
        if w not in paths:
          paths[w] = paths[v] + [w]
          nxt.append(w)
    frontier = nxt
  return component


def test_the_import_parser_sees_every_form(tmp_path):
  src = tmp_path / "probe.py"
  src.write_text("import hale_jax.models\nimport hale_jax.data as d\n"
                 "from hale_jax import losses, __version__\nfrom hale_jax.mesh import AXES\n"
                 "from . import step\nfrom .optim import make_optimizer\nimport numpy\n"
                 "def f():\n  from hale_jax import layout\n"
                 "if False:\n  from hale_jax.rundir import write_json\n")
  modules = {"models", "data", "losses", "mesh", "step", "optim", "layout", "rundir",
             "__init__", "unused"}
  assert _imports(src, modules) == modules - {"unused"}
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_modules():
  """Counting imports inside functions too: a function-level import hides a cycle from
  Python's loader but not from a reader."""
  modules = _modules()
  graph = {name: _imports(path, set(modules)) for name, path in modules.items()}
  cycles = [" -> ".join(_a_cycle(graph, c)) for c in _cycles(graph)]
  assert not cycles, "import cycles: " + "; ".join(cycles)


def _long_functions(path: Path) -> list[str]:
  tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
  out = []
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      first = min([node.lineno] + [d.lineno for d in node.decorator_list])
      lines = node.end_lineno - first + 1
      if lines > MAX_FUNCTION_LINES:
        out.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
  return out


def test_no_function_over_80_lines():
  long = [entry for path in _modules().values() for entry in _long_functions(path)]
  assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_module_over_400_lines():
  long = {name: n for name, path in _modules().items()
          if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
  assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def _tracked_files() -> list[Path]:
  if shutil.which("git") is None:
    pytest.skip("git is not installed")
  try:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=60)
  except (OSError, subprocess.SubprocessError) as err:
    pytest.skip(f"git ls-files failed: {err}")
  if out.returncode != 0:
    pytest.skip("not a git checkout")
  return [REPO / name for name in out.stdout.decode("utf-8", "replace").split("\0") if name]


def _text(path: Path) -> str | None:
  """The file's text, or None for a binary file (a NUL byte, or not UTF-8) or a missing one
  (deleted in the working tree)."""
  try:
    data = path.read_bytes()
  except (FileNotFoundError, IsADirectoryError):
    return None
  if b"\0" in data[:8192]:
    return None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    return None


def test_no_tracked_file_mentions_the_words():
  hits = []
  for path in _tracked_files():
    rel = path.relative_to(REPO).as_posix()
    if STRAY_WORDS.search(rel):
      hits.append(f"{rel} (its name)")
    text = _text(path)
    if text is None:
      continue
    for number, line in enumerate(text.splitlines(), 1):
      m = STRAY_WORDS.search(line)
      if m:
        hits.append(f"{rel}:{number}: {m.group(0)!r}")
  assert not hits, f"{len(hits)} mentions:\n" + "\n".join(hits[:50])


def test_the_word_check_matches_words_only():
  assert STRAY_WORDS.search("in the last " + _STRAY[0][:-2] + ",")
  for text in ("equival" + "ent", "sil" + "ent", "gpu_" + "ses" + "sion.sh", "rel" + "ease"):
    assert not STRAY_WORDS.search(text), text
  assert STRAY_WORDS.search("one " + "LEA" + "SE")
