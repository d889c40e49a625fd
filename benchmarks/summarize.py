"""Prints markdown for RESULTS.md from one or more run folders (their results.json).

    python -m benchmarks.summarize runs/WN18RR-RotL-32d-* [--curve]

One row per run: the dataset, the model, the HaLE settings of its flat config (the field
names of ``hale_jax.config.Config``), valid and test metrics, epochs, timings, device, layout
and commit; ``--curve`` adds each run's validation curve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hale_jax import runfiles

HEADER = ("| dataset | model | λ | α | batch | lr | valid MRR | test MRR | test H@1 | "
          "test H@10 | test MRR (pess.) | epochs | train s | compile s | eval s | device | mesh | "
          "commit |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|")


def row(res: dict) -> str:
  """The table row of one ``results.json``."""
  c, m, t = res["config"], res["metrics"], res["timings"]
  real, pess = m["test"]["realistic"], m["test"]["pessimistic"]
  mesh = (res.get("layout") or {}).get("mesh") or "one device"
  return (f"| {res['dataset']['name']} | {c['model']}-{c['dim']} | {c['lam']} | {c['alpha']} | "
          f"{c['batch_size']} | {c['learning_rate']} | {m['valid']['realistic']['mrr']:.4f} | "
          f"{real['mrr']:.4f} | {real['hits@1']:.4f} | {real['hits@10']:.4f} | {pess['mrr']:.4f} | "
          f"{m['epochs']} | {t['train_seconds']:.0f} | {t['compile_seconds']:.1f} | "
          f"{t['eval_seconds']:.0f} | {res['device']['kind']} | {mesh} | "
          f"{(res.get('git_commit') or '?')[:7]} |")


def curve(res: dict) -> str:
  """The validation curve of one ``results.json`` as a table."""
  lines = ["| epoch | train s | loss | valid MRR | valid H@10 |", "|---:|---:|---:|---:|---:|"]
  for p in res["curve"]:
    lines.append(f"| {p['epoch']} | {p['train_seconds']:.0f} | {p['loss']:.4f} | "
                 f"{p['valid_mrr']:.4f} | {p['valid_hits@10']:.4f} |")
  return "\n".join(lines)


def read_results(workdir: str) -> dict:
  """A run folder's ``results.json``; exits with a one-line message when there is none."""
  path = Path(workdir) / runfiles.RESULTS
  if not path.is_file():
    sys.exit(f"error: {path}: missing; is {workdir} a finished run's --workdir?")
  return json.loads(path.read_text())


def main(argv: list[str]) -> None:
  if not argv or {"-h", "--help"} & set(argv):
    print(__doc__)
    return
  show_curve = "--curve" in argv
  runs = [read_results(a) for a in argv if a != "--curve"]
  print(HEADER)
  for res in runs:
    print(row(res))
  if show_curve:
    for res in runs:
      print(f"\n{res['dataset']['name']} {res['config']['model']}-{res['config']['dim']}:\n")
      print(curve(res))


if __name__ == "__main__":
  main(sys.argv[1:])
