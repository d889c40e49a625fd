"""Prints markdown for RESULTS.md from one or more run folders (their results.json).

    python benchmarks/summarize.py runs/WN18RR-RotL-32d-* [--curve]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def row(res: dict) -> str:
  c, m, t = res["config"], res["metrics"], res["timings"]
  real, pess = m["test"]["realistic"], m["test"]["pessimistic"]
  return (f"| {res['dataset']['name']} | {c['model']}-{c['dim']} | {c['lam']} | {c['alpha']} | "
          f"{c['batch_size']} | {c['learning_rate']} | {m['valid']['realistic']['mrr']:.4f} | "
          f"{real['mrr']:.4f} | {real['hits@1']:.4f} | {real['hits@10']:.4f} | {pess['mrr']:.4f} | "
          f"{m['epochs']} | {t['train_seconds']:.0f} | {t['compile_seconds']:.1f} | "
          f"{t['eval_seconds']:.0f} | {res['device']['kind']} | {(res.get('git_commit') or '?')[:7]} |")


HEADER = ("| dataset | model | λ | α | batch | lr | valid MRR | test MRR | test H@1 | test H@10 | "
          "test MRR (pess.) | epochs | train s | compile s | eval s | device | commit |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")


def curve(res: dict) -> str:
  lines = ["| epoch | train s | loss | valid MRR | valid H@10 |", "|---:|---:|---:|---:|---:|"]
  for p in res["curve"]:
    lines.append(f"| {p['epoch']} | {p['train_seconds']:.0f} | {p['loss']:.4f} | "
                 f"{p['valid_mrr']:.4f} | {p['valid_hits@10']:.4f} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  show_curve = "--curve" in argv
  runs = [json.loads((Path(a) / "results.json").read_text()) for a in argv if a != "--curve"]
  print(HEADER)
  for res in runs:
    print(row(res))
  if show_curve:
    for res in runs:
      print(f"\n{res['dataset']['name']} {res['config']['model']}-{res['config']['dim']}:\n")
      print(curve(res))


if __name__ == "__main__":
  main(sys.argv[1:])
