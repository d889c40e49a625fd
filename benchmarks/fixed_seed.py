"""Fixed-seed, epoch-budget runs whose metrics a refactor must leave unchanged.

``python -m benchmarks.fixed_seed --record`` runs each case of :data:`CASES` (CoDEx-S, RotL-32,
3 epochs, seed 5, one validation per epoch) and stores its valid and test metrics and its
validation curve in ``benchmarks/records/fixed_seed.json``; without ``--record`` it runs them
again and compares with the stored file: every metric to the digits a run prints (4 decimals)
and, with ``--exact``, bit for bit.  Needs ``$HALE_DATA_DIR`` (CoDEx-S).  About two minutes on
a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "records" / "fixed_seed.json"
BASE = ["--flagfile=launch/codex_s.flags", "--dim=32", "--max_epochs=3", "--max_seconds=0",
        "--seed=5", "--eval_every=1"]
CASES = {
    "hale": [],
    "samneg": ["--loss=samneg"],
    "mesh": ["--mesh=data:4,model:2"],
    "nosquare": ["--nopos_square"],
    "chunked": ["--lse_chunk=500"],
    "cosine_bias": ["--lr_schedule=cosine", "--bias=learn"],
    "allneg": ["--loss=allneg"],
    "advneg": ["--loss=advneg", "--model=RotE"],
    "nonneg": ["--loss=nonneg", "--model=TransE"],
}
EIGHT_DEVICES = "--xla_force_host_platform_device_count=8"


def run_case(name: str, workdir: Path) -> dict:
  """Runs one case in a fresh process; returns its metrics and curve."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if name == "mesh":
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {EIGHT_DEVICES}".strip()
  cmd = [sys.executable, "-m", "hale_jax.launch", *BASE, *CASES[name], f"--workdir={workdir}"]
  subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
  results = json.loads((workdir / "results.json").read_text())
  return {"valid": results["metrics"]["valid"], "test": results["metrics"]["test"],
          "curve": [[c["epoch"], c["loss"], c["valid_mrr"]] for c in results["curve"]],
          "command": " ".join(["python -m hale_jax.launch", *BASE, *CASES[name]]),
          "git_commit": results["git_commit"]}


def differences(old: dict, new: dict, exact: bool) -> list[str]:
  """The metrics of ``new`` that differ from ``old`` (printed digits, or bits with ``exact``)."""
  same = (lambda a, b: a == b) if exact else (lambda a, b: f"{a:.4f}" == f"{b:.4f}")
  found = []
  for split in ("valid", "test"):
    for mode, metrics in old[split].items():
      for key, value in metrics.items():
        if not same(value, new[split][mode][key]):
          found.append(f"{split} {mode} {key}: {value!r} -> {new[split][mode][key]!r}")
  for (epoch, loss, mrr), (_, loss2, mrr2) in zip(old["curve"], new["curve"]):
    if not (same(loss, loss2) and same(mrr, mrr2)):
      found.append(f"epoch {epoch}: loss {loss!r} -> {loss2!r}, valid MRR {mrr!r} -> {mrr2!r}")
  return found


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--record", action="store_true", help="store the metrics of this code")
  parser.add_argument("--exact", action="store_true", help="compare bit for bit")
  parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
  args = parser.parse_args()
  names = [n for n in args.cases.split(",") if n]
  stored = json.loads(RECORD.read_text()) if RECORD.exists() else {}
  failed = 0
  with tempfile.TemporaryDirectory() as tmp:
    for name in names:
      new = run_case(name, Path(tmp) / name)
      if args.record:
        stored[name] = new
        print(f"{name}: recorded test MRR {new['test']['realistic']['mrr']:.6f}")
        continue
      diffs = differences(stored[name], new, args.exact)
      failed += bool(diffs)
      print(f"{name}: {'identical' if not diffs else 'DIFFERENT'}"
            + "".join(f"\n  {d}" for d in diffs))
  if args.record:
    RECORD.write_text(json.dumps(stored, indent=1) + "\n")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
