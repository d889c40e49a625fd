"""The outputs of ``benchmarks.reproduce``: one row per cell, the markdown table, the plots.

A row (:data:`ROW_FIELDS`) holds a cell's settings, our test and valid metrics, the paper's
numbers (``benchmarks.paper_tables``) and the cell's status (trained, cached, kept, not
available, error).  :func:`markdown` sets ours beside the paper's with the differences, then
HaLE against every other variant (:func:`versus_hale`) and each opt-in extension against its
rival (:func:`versus_extensions`).  :func:`write_outputs` writes ``results.csv``,
``results.json`` and ``table.md``; :func:`plot` the Fig. 2 curves.
"""

from __future__ import annotations

import csv
import datetime
import math
import os
from pathlib import Path
from typing import Any

from benchmarks.paper_tables import EXPERIMENTS, EXTENSION_AGAINST, paper_numbers

ROW_FIELDS = ("experiment", "dataset", "model", "variant", "dim", "loss", "activation",
              "pos_square", "rel_scale", "bias", "budget_s", "epochs", "train_s", "test_mrr",
              "test_hits@1", "test_hits@10", "test_mrr_pess", "test_hits@1_pess",
              "test_hits@10_pess", "valid_mrr", "paper_mrr", "paper_hits@10", "paper_hits@1",
              "device", "git_commit", "status", "note", "cell_id")


def make_row(cell: Any, config: Any, results: dict | None, status: str, note: str = "") -> dict:
  """The row of ``cell`` (a ``benchmarks.reproduce.Cell``) trained with ``config`` (a
  ``hale_jax.config.Config``), with its ``results.json`` when it finished."""
  flat = config.flat()
  row = dict.fromkeys(ROW_FIELDS)
  row.update(experiment=cell.experiment, dataset=cell.dataset, model=cell.model,
             variant=cell.variant.label, dim=cell.dim, budget_s=flat["max_seconds"],
             status=status, note=note or "", cell_id=cell.cell_id,
             **{k: flat[k] for k in ("loss", "activation", "pos_square", "rel_scale", "bias")})
  paper = paper_numbers(cell.dataset, cell.model, cell.dim, cell.variant)
  if paper:
    row.update({"paper_mrr": paper[0], "paper_hits@10": paper[1], "paper_hits@1": paper[2]})
  if results is not None:
    m, test = results["metrics"], results["metrics"]["test"]
    real, pess = test["realistic"], test["pessimistic"]
    row.update({"budget_s": results["config"].get("max_seconds", flat["max_seconds"]),
                "epochs": m["epochs"], "train_s": round(results["timings"]["train_seconds"], 2),
                "test_mrr": real["mrr"], "test_hits@1": real["hits@1"],
                "test_hits@10": real["hits@10"], "test_mrr_pess": pess["mrr"],
                "test_hits@1_pess": pess["hits@1"], "test_hits@10_pess": pess["hits@10"],
                "valid_mrr": m["valid"]["realistic"]["mrr"],
                "device": results.get("device", {}).get("kind"),
                "git_commit": results.get("git_commit")})
  return row


def _f(x, digits=3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "—"
  return f"{x:.{digits}f}"


def _delta(ours, paper) -> str:
  if ours is None or paper is None:
    return "—"
  return f"{ours - paper:+.3f}"


def markdown(experiment: str, rows: list[dict], budget_scale: float) -> str:
  """``table.md``: every row beside the paper's numbers, notes, and the comparisons."""
  lines = [f"# {EXPERIMENTS[experiment]['title']}", "",
           "Ours: filtered test metrics of the best-valid parameters, realistic ties (MRR with "
           "pessimistic ties in its own column); paper: Tables 2, 3, 5 (PyTorch, GTX 1070). "
           f"Δ = ours − paper. Budget: Table 1 × {budget_scale:g} (training seconds; compile "
           "and validation excluded).", "",
           "| dataset | model | variant | budget s | epochs | MRR | paper | Δ | H@10 | paper | Δ "
           "| H@1 | paper | Δ | MRR pess. | device | status |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
  notes: dict[str, int] = {}  # note text -> its number; cells with the same reason share one
  for r in rows:
    status = r["status"]
    if r["note"]:
      text = f"{r['dataset']}: {r['note']}" if r["status"] == "not available" else (
          f"{r['dataset']} {r['model']}-{r['dim']} {r['variant']}: {r['note']}")
      status += f" [{notes.setdefault(text, len(notes) + 1)}]"
    budget = "—" if r["budget_s"] is None else f"{r['budget_s']:g}"
    lines.append(
        f"| {r['dataset']} | {r['model']}-{r['dim']} | {r['variant']} | {budget} | "
        f"{r['epochs'] if r['epochs'] is not None else '—'} | "
        f"{_f(r['test_mrr'])} | {_f(r['paper_mrr'])} | {_delta(r['test_mrr'], r['paper_mrr'])} | "
        f"{_f(r['test_hits@10'])} | {_f(r['paper_hits@10'])} | "
        f"{_delta(r['test_hits@10'], r['paper_hits@10'])} | "
        f"{_f(r['test_hits@1'])} | {_f(r['paper_hits@1'])} | "
        f"{_delta(r['test_hits@1'], r['paper_hits@1'])} | {_f(r['test_mrr_pess'])} | "
        f"{r['device'] or '—'} | {status} |")
  if notes:
    lines += ["", "Notes:", ""] + [f"{i}. {text}" for text, i in notes.items()]
  lines += versus_hale(experiment, rows)
  commits = sorted({r["git_commit"] for r in rows if r["git_commit"]})
  if commits:
    short = [c.split("-")[0][:7] + ("-dirty" if c.endswith("-dirty") else "") for c in commits]
    lines += ["", f"Commit(s): {', '.join(dict.fromkeys(short))}."]
  return "\n".join(lines) + "\n"


def versus_hale(experiment: str, rows: list[dict]) -> list[str]:
  """Markdown lines that set HaLE against every other variant of the same dataset and model.

  These are the paper's claims for Tables 2 and 3 (HaLE beats SamNeg in each pair) and Table 5
  (each removal hurts).  A comparison is listed once both cells have a test MRR; "HaLE ahead"
  means a strictly higher realistic test MRR, so a tie counts against HaLE.  Empty for the
  Fig. 2 experiments, whose claims are curves.
  """
  if experiment not in ("table2", "table3", "table5"):
    return []
  hale = {(r["dataset"], r["model"], r["dim"]): r for r in rows if r["variant"] == "HaLE"}
  body, ahead, paper_ahead = [], 0, 0
  for r in rows:
    ref = hale.get((r["dataset"], r["model"], r["dim"]))
    if (r["variant"] == "HaLE" or r["variant"] in EXTENSION_AGAINST or ref is None
        or r["test_mrr"] is None or ref["test_mrr"] is None):
      continue
    hale_ahead = ref["test_mrr"] > r["test_mrr"]
    ahead += hale_ahead
    paper_ahead += (ref["paper_mrr"] is not None and r["paper_mrr"] is not None
                    and ref["paper_mrr"] > r["paper_mrr"])
    body.append(f"| {r['dataset']} | {r['model']}-{r['dim']} | {r['variant']} | "
                f"{_delta(ref['test_mrr'], r['test_mrr'])} | "
                f"{_delta(ref['paper_mrr'], r['paper_mrr'])} | {'yes' if hale_ahead else 'no'} |")
  lines = [] if not body else [
      "", "HaLE against each other variant (test MRR of HaLE minus the variant's):", "",
      "| dataset | model | variant | ours | paper | HaLE ahead |",
      "|---|---|---|---:|---:|---|", *body, "",
      f"HaLE ahead in {ahead} of {len(body)} (the paper: {paper_ahead} of {len(body)})."]
  return lines + versus_extensions(rows)


def versus_extensions(rows: list[dict]) -> list[str]:
  """Markdown lines that set each opt-in extension (``EXTENSION_AGAINST``) against its rival
  variant of the same dataset and model, e.g. "HaLE + tail biases" against SamNeg.  The paper
  has no such rows, so there is no paper column."""
  by_cell = {(r["dataset"], r["model"], r["dim"], r["variant"]): r for r in rows}
  body, ahead = [], 0
  for r in rows:
    rival = by_cell.get((r["dataset"], r["model"], r["dim"], EXTENSION_AGAINST.get(r["variant"])))
    if rival is None or r["test_mrr"] is None or rival["test_mrr"] is None:
      continue
    lead = r["test_mrr"] > rival["test_mrr"]
    ahead += lead
    body.append(f"| {r['dataset']} | {r['model']}-{r['dim']} | {r['variant']} | "
                f"{rival['variant']} | {_delta(r['test_mrr'], rival['test_mrr'])} | "
                f"{'yes' if lead else 'no'} |")
  if not body:
    return []
  return ["", "Extensions beyond the paper against their rival (test MRR of the extension minus "
          "the rival's):", "", "| dataset | model | extension | rival | ours | ahead |",
          "|---|---|---|---|---:|---|", *body, "", f"Extension ahead in {ahead} of {len(body)}."]


def write_outputs(outdir: Path, experiment: str, rows: list[dict], budget_scale: float,
                  argv: list[str]) -> str:
  """Writes ``results.csv``, ``results.json`` and ``table.md`` into ``outdir``; returns the
  table."""
  from hale_jax import runfiles  # pylint: disable=import-outside-toplevel
  outdir.mkdir(parents=True, exist_ok=True)
  with open(outdir / "results.csv.tmp", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(outdir / "results.csv.tmp", outdir / "results.csv")
  doc = {"experiment": experiment, "budget_scale": budget_scale, "command": argv,
         "written": datetime.datetime.now().isoformat(timespec="seconds"), "rows": rows}
  runfiles.write_json(outdir / "results.json", doc)
  table = markdown(experiment, rows, budget_scale)
  (outdir / "table.md").write_text(table)
  return table


def plot(outdir: Path, experiment: str, curves: list[tuple[Any, list[dict]]]) -> Path | None:
  """Valid Hits@10 against training seconds, one panel per dataset; None without matplotlib."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError:
    print("plots skipped: matplotlib is not installed (pip install matplotlib)", flush=True)
    return None
  datasets_ = list(dict.fromkeys(c.dataset for c, _ in curves))
  if not datasets_:
    return None
  fig, axes = plt.subplots(1, len(datasets_), figsize=(4.5 * len(datasets_), 3.6), squeeze=False)
  for ax, dataset in zip(axes[0], datasets_):
    for cell, curve in curves:
      if cell.dataset != dataset or not curve:
        continue
      xs = [p["train_seconds"] for p in curve]
      ys = [p["valid_hits@10"] for p in curve]
      label = cell.variant.label if len({c.model for c, _ in curves}) == 1 else (
          f"{cell.model} {cell.variant.label}")
      ax.plot(xs, ys, marker=".", label=label)
    ax.set_title(f"{dataset}")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("valid Hits@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(EXPERIMENTS[experiment]["title"], fontsize=10)
  fig.tight_layout()
  path = outdir / f"{experiment}.png"
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


