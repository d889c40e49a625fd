"""Reproduces the paper's experiments (Tables 2, 3, 5 and Fig. 2), one training run per cell.

    python benchmarks/reproduce.py --experiment=table2
    python benchmarks/reproduce.py --experiment=table3 --models=RotL,RotE --budget_scale=0.5
    python benchmarks/reproduce.py --experiment=table5 --datasets=synthetic --max_epochs=2 \\
        --budget_scale=0.001 --dim_override=8 --outdir=/tmp/t5

Experiments (paper: Wang, Liu & Sheng, WWW '22):

- ``table2``: {TransE, DistMult, RotatE, RotE, RotL} x {FB15k-237, WN18RR} x {SamNeg, HaLE}, 32d;
- ``table3``: the same five models x {CoDEx-S, CoDEx-M, CoDEx-L} x {SamNeg, HaLE}, 256d;
- ``table5``: RotL-32 on {CoDEx-M, FB15k-237, WN18RR} x the ablations of Appendix A.3
  (HaLE, w/o Activation, w/o PosSquare, w/o RelRatio, HA + SamNeg, HA + AllNeg);
- ``fig2_losses``: RotE-32 on {WN18RR, FB15k-237, CoDEx-M} x {SamNeg, AdvNeg, AllNeg, NonNeg,
  HaLE}; the plain baselines score with the identity activation;
- ``fig2_activations``: RotE-32 HaLE on the same datasets x {Hanon, Halin, xe^x, 2x, 2Arctanh}.

``table2`` and ``table3`` also offer the opt-in variant ``hale-bias``
(``--variants=hale,samneg,hale-bias``): HaLE with a learned bias per tail entity
(``--bias=learn``), an extension beyond the paper whose rows are set against SamNeg, not HaLE.

SamNeg means ``--loss=samneg --activation=identity`` (KGEmb's negative sampling: 256 uniform
tail negatives per query, binary cross-entropy, learned entity biases ``b_h + b_t`` in the score
and margin 0, the defaults of ``--loss=samneg``); HaLE means ``--loss=hale --activation=hanon``.  Hyperparameters (lam,
alpha, gamma, batch_size, learning_rate, lr_schedule) come from ``launch/<dataset>.flags`` for every cell of
a dataset, baselines included (the paper grid-searched the baselines separately; we do not).
Every strategy trains in the same jit-compiled on-device epoch, so a time budget buys each as
many epochs as its own step cost allows.  The paper's limited-time baselines ran in PyTorch
on a GTX 1070, so their epochs per budget (and the gap to HaLE) need not carry over.
The training budget is Table 1's (FB15k-237 1200 s, WN18RR 600 s, CoDEx-S 300 s, CoDEx-M and
CoDEx-L 1200 s; the generated ``synthetic`` graph 30 s) times ``--budget_scale``; compilation
and validation are not counted.

Every cell trains in ``<outdir>/cells/<cell-id>`` through ``hale_jax.train.train``.  A cell
whose ``results.json`` is there is not trained again (nor is its data loaded): rerunning the
same command only rebuilds the outputs.  An interrupted cell (SIGTERM, SIGINT) is checkpointed
and resumes on the next run.  A dataset that cannot be found or downloaded (``DataError``) is
reported as "not available" with the reason; the other datasets still run.

Outputs in ``--outdir`` (default ``benchmarks/out/<experiment>``), rewritten after every cell:
``results.csv`` and ``results.json`` (one row per cell), ``table.md`` (ours beside the paper's
Tables 2/3/5 numbers and the difference, then HaLE's test MRR set against every other
variant's, ours and the paper's, with a count of where HaLE is ahead) and, for ``fig2_*``,
``<experiment>.png`` (valid Hits@10 against training seconds, one panel per dataset) when
matplotlib is installed.  The tables list the current command's cells and, with the status
``kept``, every other finished cell of the same experiment, dimension and seed found in
``<outdir>/cells`` (the experiment's datasets and models and the command's), so a narrower
rerun (e.g. ``--models=TransE``) does not drop the rows an earlier, wider command produced.
A kept cell whose stored config differs from what this command would train (other
hyperparameters or data) is left out; one with another budget is listed with a note.  Rows
follow the experiment's order (dataset, model, variant) whatever the command's order.  The
Fig. 2 plots show the current command's cells only.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import hale_jax` work without install
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROOT = Path(__file__).resolve().parents[1]

MODELS = ("TransE", "DistMult", "RotatE", "RotE", "RotL")
SYNTHETIC = "synthetic"

# Table 1 training budgets (seconds); the generated graph gets the launcher's default.
BUDGET_SECONDS = {"FB15k-237": 1200.0, "WN18RR": 600.0, "CoDEx-S": 300.0, "CoDEx-M": 1200.0,
                  "CoDEx-L": 1200.0, SYNTHETIC: 30.0}
FLAGFILES = {"FB15k-237": "fb15k237", "WN18RR": "wn18rr", "CoDEx-S": "codex_s",
             "CoDEx-M": "codex_m", "CoDEx-L": "codex_l"}
HPARAMS = ("lam", "alpha", "gamma", "batch_size", "learning_rate", "lr_schedule")
BUDGET_FIELDS = ("max_seconds", "max_epochs")


@dataclasses.dataclass(frozen=True)
class Variant:
  key: str            # used in cell ids
  label: str          # as in the paper
  overrides: dict     # Config fields
  paper: str | None   # key into PAPER (None: the paper gives no number)


def _v(key, label, paper=None, **overrides) -> Variant:
  return Variant(key, label, overrides, paper)


HALE = dict(loss="hale", activation="hanon", pos_square=True, rel_scale=True)

VARIANTS = {
    "table2": [_v("samneg", "SamNeg", "samneg", loss="samneg", activation="identity"),
               _v("hale", "HaLE", "hale", **HALE)],
    "table5": [_v("hale", "HaLE", "hale", **HALE),
               _v("wo-activation", "w/o Activation", "wo-activation",
                  **{**HALE, "activation": "identity"}),
               _v("wo-possquare", "w/o PosSquare", "wo-possquare",
                  **{**HALE, "pos_square": False}),
               _v("wo-relratio", "w/o RelRatio", "wo-relratio", **{**HALE, "rel_scale": False}),
               _v("ha-samneg", "HA + SamNeg", "ha-samneg", loss="samneg", activation="hanon"),
               _v("ha-allneg", "HA + AllNeg", "ha-allneg", loss="allneg", activation="hanon")],
    "fig2_losses": [_v("samneg", "SamNeg", "samneg", loss="samneg", activation="identity"),
                    _v("advneg", "AdvNeg", loss="advneg", activation="identity"),
                    _v("allneg", "AllNeg", loss="allneg", activation="identity"),
                    _v("nonneg", "NonNeg", loss="nonneg", activation="identity"),
                    _v("hale", "HaLE", "hale", **HALE)],
    "fig2_activations": [_v("hanon", "Hanon", "hale", **HALE),
                         _v("halin", "Halin", **{**HALE, "activation": "halin"}),
                         _v("xexp", "y=xe^x", **{**HALE, "activation": "xexp"}),
                         _v("linear2x", "y=2x", **{**HALE, "activation": "linear2x"}),
                         _v("arctanh", "2Arctanh", **{**HALE, "activation": "arctanh"})],
}
VARIANTS["table3"] = VARIANTS["table2"]

# Variants that run only when ``--variants`` names them: extensions beyond the paper.  Each is
# set against the variant whose label ``EXTENSION_AGAINST`` gives (in ``versus_hale``), not
# against HaLE.  "HaLE + tail biases" is HaLE with a learned bias b_i per tail entity
# (``--bias=learn``; hale_jax.losses, "Tail biases"), the score SamNeg's KGEmb biases give.
OPT_IN = {"table2": [_v("hale-bias", "HaLE + tail biases", **HALE, bias="learn")]}
OPT_IN["table3"] = OPT_IN["table2"]
EXTENSION_AGAINST = {"HaLE + tail biases": "SamNeg"}

EXPERIMENTS = {
    "table2": dict(datasets=("FB15k-237", "WN18RR"), models=MODELS, dim=32,
                   title="Table 2: link prediction, SamNeg vs HaLE (paper: 32d)"),
    "table3": dict(datasets=("CoDEx-S", "CoDEx-M", "CoDEx-L"), models=MODELS, dim=256,
                   title="Table 3: link prediction, SamNeg vs HaLE (paper: 256d)"),
    "table5": dict(datasets=("CoDEx-M", "FB15k-237", "WN18RR"), models=("RotL",), dim=32,
                   title="Table 5: ablations of HaLE-RotL (paper: 32d)"),
    "fig2_losses": dict(datasets=("WN18RR", "FB15k-237", "CoDEx-M"), models=("RotE",), dim=32,
                        title="Fig. 2 (upper): training strategies, RotE (paper: 32d)"),
    "fig2_activations": dict(
        datasets=("WN18RR", "FB15k-237", "CoDEx-M"), models=("RotE",), dim=32,
        title="Fig. 2 (lower): activations in HaLE, RotE (paper: 32d)"),
}


def _table(dataset: str, dim: int, variant: str, text: str) -> dict:
  """Parses ``model MRR H@10 H@1`` lines into ``{(dataset, model, dim, variant): (...)}``."""
  out = {}
  for line in text.strip().splitlines():
    model, *nums = line.split()
    out[(dataset, model, dim, variant)] = tuple(float(x) for x in nums)
  return out


# The paper's test numbers (MRR, Hits@10, Hits@1), limited-time training, keyed by
# (dataset, model, dim, variant).  Table 2 and Table 5 agree on 32d HaLE-RotL for FB15k-237
# and WN18RR; Table 5's CoDEx-M rows are 32d (Table 3's are 256d).
PAPER: dict[tuple[str, str, int, str], tuple[float, float, float]] = {
    # Table 2, 32d, FB15k-237.
    **_table("FB15k-237", 32, "samneg", """
        TransE .243 .422 .154
        DistMult .278 .445 .194
        RotatE .223 .391 .141
        RotE .246 .424 .159
        RotL .140 .266 .079"""),
    **_table("FB15k-237", 32, "hale", """
        TransE .314 .492 .224
        DistMult .308 .483 .222
        RotatE .307 .479 .219
        RotE .313 .486 .226
        RotL .316 .493 .228"""),
    # Table 2, 32d, WN18RR.
    **_table("WN18RR", 32, "samneg", """
        TransE .177 .417 .045
        DistMult .351 .482 .283
        RotatE .346 .460 .285
        RotE .355 .480 .290
        RotL .295 .368 .254"""),
    **_table("WN18RR", 32, "hale", """
        TransE .212 .492 .028
        DistMult .447 .533 .399
        RotatE .451 .536 .406
        RotE .460 .542 .416
        RotL .471 .558 .424"""),
    # Table 3, 256d.
    **_table("CoDEx-S", 256, "samneg", """
        TransE .301 .544 .177
        DistMult .360 .589 .246
        RotatE .327 .546 .214
        RotE .328 .549 .214
        RotL .313 .534 .205"""),
    **_table("CoDEx-S", 256, "hale", """
        TransE .353 .620 .223
        DistMult .403 .629 .289
        RotatE .407 .635 .289
        RotE .409 .639 .291
        RotL .408 .639 .292"""),
    **_table("CoDEx-M", 256, "samneg", """
        TransE .178 .327 .107
        DistMult .255 .395 .182
        RotatE .182 .327 .110
        RotE .183 .330 .112
        RotL .162 .259 .106"""),
    **_table("CoDEx-M", 256, "hale", """
        TransE .313 .467 .230
        DistMult .314 .462 .236
        RotatE .324 .474 .244
        RotE .326 .475 .246
        RotL .324 .474 .244"""),
    **_table("CoDEx-L", 256, "samneg", """
        TransE .144 .260 .086
        DistMult .228 .353 .164
        RotatE .159 .281 .099
        RotE .155 .270 .097
        RotL .055 .113 .026"""),
    **_table("CoDEx-L", 256, "hale", """
        TransE .300 .436 .226
        DistMult .299 .427 .230
        RotatE .302 .435 .229
        RotE .308 .438 .237
        RotL .308 .438 .238"""),
    # Table 5, 32d RotL (rows: HaLE-RotL, w/o Activation, w/o PosSquare, w/o RelRatio,
    # HA + SamNeg, HA + AllNeg).
    **{("CoDEx-M", "RotL", 32, k): v for k, v in {
        "hale": (.309, .454, .231), "wo-activation": (.289, .436, .212),
        "wo-possquare": (.241, .351, .185), "wo-relratio": (.293, .438, .214),
        "ha-samneg": (.297, .443, .219), "ha-allneg": (.262, .415, .182)}.items()},
    **{("FB15k-237", "RotL", 32, k): v for k, v in {
        "wo-activation": (.294, .456, .212), "wo-possquare": (.268, .405, .202),
        "wo-relratio": (.295, .460, .212), "ha-samneg": (.314, .490, .225),
        "ha-allneg": (.287, .454, .204)}.items()},
    **{("WN18RR", "RotL", 32, k): v for k, v in {
        "wo-activation": (.426, .520, .376), "wo-possquare": (.469, .558, .420),
        "wo-relratio": (.454, .548, .404), "ha-samneg": (.457, .553, .394),
        "ha-allneg": (.449, .540, .387)}.items()},
}


def paper_numbers(dataset: str, model: str, dim: int, variant: Variant):
  """``(MRR, Hits@10, Hits@1)`` the paper reports for this cell, or None."""
  if variant.paper is None:
    return None
  return PAPER.get((dataset, model, dim, variant.paper))


@dataclasses.dataclass
class Cell:
  experiment: str
  dataset: str
  model: str
  variant: Variant
  dim: int
  seed: int

  @property
  def cell_id(self) -> str:
    slug = re.sub(r"[^a-z0-9]+", "", self.dataset.lower())
    return f"{slug}-{self.model}-{self.dim}d-{self.variant.key}-s{self.seed}"


def all_variants(experiment: str) -> list[Variant]:
  """The paper's variants of ``experiment``, then its opt-in extensions."""
  return VARIANTS[experiment] + OPT_IN.get(experiment, [])


def plan(experiment: str, datasets, models, variants=None, dim: int | None = None,
         seed: int = 0) -> list[Cell]:
  """The cells of ``experiment``, dataset-major (each dataset is loaded once)."""
  spec = EXPERIMENTS[experiment]
  chosen = VARIANTS[experiment]  # the default: the paper's variants, not the OPT_IN ones
  if variants:
    known = {v.key: v for v in all_variants(experiment)}
    unknown = [k for k in variants if k not in known]
    if unknown:
      raise ValueError(f"unknown variant(s) {', '.join(unknown)} for {experiment}; choose from "
                       f"{', '.join(known)}")
    chosen = [known[k] for k in variants]
  return [Cell(experiment, d, m, v, dim or spec["dim"], seed)
          for d in datasets for m in models for v in chosen]


def canonical_dataset(name: str) -> str:
  if name.strip().lower() == SYNTHETIC:
    return SYNTHETIC
  from hale_jax import datasets  # pylint: disable=import-outside-toplevel
  from hale_jax.data import DataError  # pylint: disable=import-outside-toplevel
  try:
    return datasets.canonical_name(name.strip())
  except DataError:
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(BUDGET_SECONDS)} (other "
                     f"folders: --data_dir_override)") from None


def canonical_models(names) -> list[str]:
  out = []
  for name in names:
    match = [m for m in MODELS if m.lower() == name.strip().lower()]
    if not match:
      raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    out.append(match[0])
  return out


def read_flagfile(path: Path) -> dict[str, str]:
  """``--name=value`` lines of an absl flagfile (comments and other lines ignored)."""
  flags_ = {}
  for line in path.read_text().splitlines():
    line = line.strip()
    if line.startswith("--") and "=" in line:
      name, value = line[2:].split("=", 1)
      flags_[name.strip()] = value.strip()
  return flags_


def hyperparameters(dataset: str) -> dict[str, Any]:
  """lam, alpha, gamma, batch_size, learning_rate, lr_schedule (and lse_chunk where set) from
  ``launch/<dataset>.flags``."""
  from hale_jax.train import Config  # pylint: disable=import-outside-toplevel
  if dataset not in FLAGFILES:
    return {}
  raw = read_flagfile(ROOT / "launch" / f"{FLAGFILES[dataset]}.flags")
  defaults = Config()
  fields = {k: type(getattr(defaults, k))(raw[k]) for k in HPARAMS if k in raw}
  if "lse_chunk" in raw:  # how the loss is computed, not what: on CPU, plain (0) is faster for
    fields["lse_chunk"] = int(raw["lse_chunk"])  # FB15k-237 than the default chunks of 4096
  return fields


def make_config(cell: Cell, budget_scale: float, max_epochs: int):
  from hale_jax.train import Config  # pylint: disable=import-outside-toplevel
  fields = {**hyperparameters(cell.dataset), **cell.variant.overrides}
  return Config(model=cell.model, dim=cell.dim, seed=cell.seed,
                max_seconds=BUDGET_SECONDS[cell.dataset] * budget_scale,
                max_epochs=max_epochs or 0, **fields)


def data_spec(dataset: str, data_dir_override: str | None) -> dict[str, str]:
  if data_dir_override:
    root = Path(data_dir_override).resolve()
    folder = root / dataset if (root / dataset / "train.txt").is_file() else root
    return {"kind": "folder", "path": str(folder)}
  if dataset == SYNTHETIC:
    return {"kind": "synthetic"}
  return {"kind": "dataset", "name": dataset}


def stored_results(workdir: Path, config, spec: dict) -> tuple[dict | None, str | None]:
  """``(results, note)`` when ``workdir`` holds a finished run; ``(None, error)`` when it holds
  a different one; ``(None, None)`` when there is nothing finished to reuse."""
  from hale_jax import checkpoints  # pylint: disable=import-outside-toplevel
  path = workdir / "results.json"
  if not path.exists():
    return None, None
  results = json.loads(path.read_text())
  want = dataclasses.asdict(config)
  old = results.get("config", {})
  # The rule a resume follows (hale_jax.checkpoints.mismatch): fields that change how, not what,
  # a run computes (lse_chunk, mesh, ...) and the budget may differ; a field added since the
  # cell ran counts as the same only at the value that trains as before (lr_schedule=constant).
  diffs = checkpoints.mismatch({"config": old}, {"config": want})
  run_file = workdir / "run.json"
  if run_file.exists():
    stored_spec = json.loads(run_file.read_text()).get("data")
    if stored_spec and stored_spec != spec:
      diffs.append(f"data ({stored_spec} vs {spec})")
  if diffs:
    return None, (f"{workdir} holds a different run ({'; '.join(diffs)}); delete it or use "
                  f"another --outdir")
  note = None
  if any(old.get(k) != want[k] for k in BUDGET_FIELDS):
    note = f"{trained_budget(old)}; delete the cell folder to retrain with the new budget"
  return results, note


def trained_budget(config: dict) -> str:
  """The budget a stored run's ``config`` trained with, in words."""
  return (f"trained with max_seconds={config.get('max_seconds')} max_epochs="
          f"{config.get('max_epochs')}")


ROW_FIELDS = ("experiment", "dataset", "model", "variant", "dim", "loss", "activation",
              "pos_square", "rel_scale", "bias", "budget_s", "epochs", "train_s", "test_mrr",
              "test_hits@1", "test_hits@10", "test_mrr_pess", "test_hits@1_pess",
              "test_hits@10_pess", "valid_mrr", "paper_mrr", "paper_hits@10", "paper_hits@1",
              "device", "git_commit", "status", "note", "cell_id")


def make_row(cell: Cell, config, results: dict | None, status: str, note: str = "") -> dict:
  row = dict.fromkeys(ROW_FIELDS)
  row.update(experiment=cell.experiment, dataset=cell.dataset, model=cell.model,
             variant=cell.variant.label, dim=cell.dim, loss=config.loss,
             activation=config.activation, pos_square=config.pos_square,
             rel_scale=config.rel_scale, bias=config.bias, budget_s=config.max_seconds,
             status=status, note=note or "", cell_id=cell.cell_id)
  paper = paper_numbers(cell.dataset, cell.model, cell.dim, cell.variant)
  if paper:
    row.update({"paper_mrr": paper[0], "paper_hits@10": paper[1], "paper_hits@1": paper[2]})
  if results is not None:
    m, test = results["metrics"], results["metrics"]["test"]
    real, pess = test["realistic"], test["pessimistic"]
    row.update({"budget_s": results["config"].get("max_seconds", config.max_seconds),
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
  from hale_jax import checkpoints  # pylint: disable=import-outside-toplevel
  outdir.mkdir(parents=True, exist_ok=True)
  with open(outdir / "results.csv.tmp", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=ROW_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(outdir / "results.csv.tmp", outdir / "results.csv")
  doc = {"experiment": experiment, "budget_scale": budget_scale, "command": argv,
         "written": datetime.datetime.now().isoformat(timespec="seconds"), "rows": rows}
  checkpoints.write_json(outdir / "results.json", doc)
  table = markdown(experiment, rows, budget_scale)
  (outdir / "table.md").write_text(table)
  return table


def plot(outdir: Path, experiment: str, curves: list[tuple[Cell, list[dict]]]) -> Path | None:
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


def _indent(prefix: str):
  def log(msg: str) -> None:
    for line in str(msg).splitlines():
      print(f"{prefix}{line}", flush=True)
  return log


def full_plan(experiment: str, cells: list[Cell]) -> list[Cell]:
  """Every cell of ``experiment`` at the dimension and seed of ``cells``, over the experiment's
  datasets and models plus any others ``cells`` name, in the experiment's order."""
  if not cells:
    return []
  spec = EXPERIMENTS[experiment]
  datasets_ = list(dict.fromkeys([*spec["datasets"], *(c.dataset for c in cells)]))
  models_ = list(dict.fromkeys([*spec["models"], *(c.model for c in cells)]))
  variants_ = [v.key for v in all_variants(experiment)]  # opt-in ones: kept if finished
  return plan(experiment, datasets_, models_, variants_, cells[0].dim, cells[0].seed)


def kept_rows(order: list[Cell], cells: list[Cell], outdir: Path, budget_scale: float,
              max_epochs: int, data_dir_override: str | None) -> list[dict]:
  """Rows (status ``kept``) of the finished cells in ``outdir/cells`` that ``order`` (the
  ``full_plan``) holds and ``cells`` leave out: those an earlier command trained.  Cells that
  hold a different run are skipped."""
  chosen = {c.cell_id for c in cells}
  rows = []
  for cell in order:
    workdir = outdir / "cells" / cell.cell_id
    if cell.cell_id in chosen or not (workdir / "results.json").is_file():
      continue
    config = make_config(cell, budget_scale, max_epochs)
    results, note = stored_results(workdir, config, data_spec(cell.dataset, data_dir_override))
    if results is not None:  # the budget column shows the stored budget; say it is another
      note = f"another budget: {trained_budget(results['config'])}" if note else ""
      rows.append(make_row(cell, config, results, "kept", note))
  return rows


def in_plan_order(rows: list[dict], order: list[Cell]) -> list[dict]:
  """``rows`` sorted by their cell's place in ``order`` (rows of other cells last, as given)."""
  index = {c.cell_id: i for i, c in enumerate(order)}
  return sorted(rows, key=lambda r: index.get(r["cell_id"], len(index)))


def run(experiment: str, cells: list[Cell], outdir: Path, budget_scale: float, max_epochs: int,
        data_dir_override: str | None, argv: list[str], should_stop=None) -> tuple[list, int]:
  """Trains (or reuses) every cell, rewriting the outputs after each; returns (rows, errors).

  The rows, and the outputs, include the ``kept`` rows of cells an earlier command finished
  (``kept_rows``), in the experiment's order.
  """
  from hale_jax import datasets  # pylint: disable=import-outside-toplevel
  from hale_jax.data import DataError, one_line  # pylint: disable=import-outside-toplevel
  from hale_jax.train import Interrupted, train  # pylint: disable=import-outside-toplevel
  rows, curves, errors = [], [], 0
  order = full_plan(experiment, cells)
  kept = kept_rows(order, cells, outdir, budget_scale, max_epochs, data_dir_override)

  def all_rows() -> list[dict]:
    return in_plan_order(rows + kept, order)

  def write() -> None:
    write_outputs(outdir, experiment, all_rows(), budget_scale, argv)

  loaded: dict[str, Any] = {}  # dataset -> KGData or the DataError message
  n = len(cells)
  for i, cell in enumerate(cells, 1):
    head = (f"[{i}/{n}] {experiment} {cell.dataset} {cell.model}-{cell.dim} "
            f"{cell.variant.label}")
    config = make_config(cell, budget_scale, max_epochs)
    spec = data_spec(cell.dataset, data_dir_override)
    workdir = outdir / "cells" / cell.cell_id
    results, note = stored_results(workdir, config, spec)
    status = "cached"
    if results is None and note is not None:  # a different run is in the way
      rows.append(make_row(cell, config, None, "error", note))
      errors += 1
      print(f"{head}: error: {note}", flush=True)
    elif results is None:
      if cell.dataset not in loaded:
        for other in [d for d, v in loaded.items() if not isinstance(v, str)]:
          del loaded[other]  # keep one dataset in memory at a time
        try:
          loaded[cell.dataset] = datasets.load_data(spec)
        except DataError as err:
          loaded[cell.dataset] = one_line(err)
      data = loaded[cell.dataset]
      if isinstance(data, str):
        rows.append(make_row(cell, config, None, "not available", data))
        print(f"{head}: not available: {data}", flush=True)
      else:
        print(f"{head}: training in {workdir} (budget {config.max_seconds:g}s"
              f"{f', max {max_epochs} epochs' if max_epochs else ''})", flush=True)
        try:
          results = train(config, data, workdir, log=_indent("    "), data_spec=spec,
                          should_stop=should_stop,
                          extra={"experiment": experiment, "cell": cell.cell_id,
                                 "variant": cell.variant.label, "argv": argv})
          status = "trained"
        except Interrupted:
          write()
          raise
        except (ValueError, FileExistsError) as err:
          msg = one_line(err)
          rows.append(make_row(cell, config, None, "error", msg))
          errors += 1
          print(f"{head}: error: {msg}", flush=True)
    if results is not None:
      row = make_row(cell, config, results, status, note or "")
      rows.append(row)
      curves.append((cell, results.get("curve", [])))
      paper = (f" (paper {row['paper_mrr']:.3f})" if row["paper_mrr"] is not None else "")
      print(f"{head}: {status}, {row['epochs']} epochs in {row['train_s']:.0f}s, test MRR "
            f"{row['test_mrr']:.4f}{paper} H@1 {row['test_hits@1']:.4f} H@10 "
            f"{row['test_hits@10']:.4f}", flush=True)
    write()
  if not cells:
    write()
  if experiment.startswith("fig2"):
    path = plot(outdir, experiment, curves)
    if path:
      print(f"plot written to {path}", flush=True)
  return all_rows(), errors


def _define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_enum("experiment", None, list(EXPERIMENTS), "Which paper experiment to run.")
  flags.DEFINE_list("datasets", None, "Datasets (default per experiment); 'synthetic' is the "
                    "generated graph.")
  flags.DEFINE_list("models", None, f"Models (default per experiment) from {', '.join(MODELS)}.")
  flags.DEFINE_list("variants", None, "The experiment's variant keys to run (default: the "
                    "paper's variants; table2 and table3 also offer the opt-in 'hale-bias', HaLE "
                    "with learned tail biases, an extension set against SamNeg).")
  flags.DEFINE_float("budget_scale", 1.0, "Multiplies Table 1's training budgets.")
  flags.DEFINE_string("outdir", None, "Output folder; default benchmarks/out/<experiment>.")
  flags.DEFINE_string("data_dir_override", None, "Read every dataset from this folder instead "
                      "(<dir>/<Name> if it holds train.txt, else <dir> itself).")
  flags.DEFINE_integer("max_epochs", 0, "Epoch cap per cell as well as the budget (0: none).")
  flags.DEFINE_integer("dim_override", None, "Embedding dimension instead of the experiment's.")
  flags.DEFINE_integer("seed", 0, "Random seed of every cell.")
  flags.mark_flag_as_required("experiment")
  return flags.FLAGS


def main(argv, FLAGS) -> None:  # pylint: disable=invalid-name
  from absl import app, logging  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)  # keep jax's and orbax's INFO lines out of the output
  from hale_jax.data import DataError  # pylint: disable=import-outside-toplevel
  from hale_jax.stopping import StopRequest  # pylint: disable=import-outside-toplevel
  from hale_jax.train import Interrupted  # pylint: disable=import-outside-toplevel
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  exp = FLAGS.experiment
  if FLAGS.budget_scale < 0 or (FLAGS.budget_scale == 0 and not FLAGS.max_epochs):
    raise app.UsageError("--budget_scale must be > 0 (or 0 with --max_epochs)")
  try:
    names = FLAGS.datasets or EXPERIMENTS[exp]["datasets"]
    dsets = list(dict.fromkeys(canonical_dataset(d) for d in names if d.strip()))
    models_ = canonical_models(FLAGS.models or EXPERIMENTS[exp]["models"])
    cells = plan(exp, dsets, models_, FLAGS.variants, FLAGS.dim_override, FLAGS.seed)
  except (DataError, ValueError) as err:
    raise app.UsageError(str(err))
  outdir = Path(FLAGS.outdir) if FLAGS.outdir else ROOT / "benchmarks" / "out" / exp
  print(f"{exp}: {len(cells)} cells ({', '.join(dsets)} x {', '.join(models_)} x "
        f"{len({c.variant.key for c in cells})} variants) into {outdir}", flush=True)
  t0 = time.perf_counter()
  stop = StopRequest("checkpointing the current cell after its epoch")
  try:
    rows, errors = run(exp, cells, outdir, FLAGS.budget_scale, FLAGS.max_epochs,
                       FLAGS.data_dir_override, list(sys.argv), should_stop=stop)
  except Interrupted as err:
    print(f"stopped: {err}; partial outputs in {outdir}", file=sys.stderr)
    sys.exit(stop.exit_code())
  print()
  print((outdir / "table.md").read_text(), end="")
  counts = collections.Counter(r["status"] for r in rows)
  print(f"\n{', '.join(f'{v} {k}' for k, v in counts.items())} in "
        f"{time.perf_counter() - t0:.0f}s; outputs in {outdir}")
  if errors:
    sys.exit(1)


if __name__ == "__main__":
  from absl import app as _app
  _FLAGS = _define_flags()
  _app.run(lambda argv: main(argv, _FLAGS))
