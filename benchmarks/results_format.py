"""How `benchmarks/make_results.py` writes a record's figures: numbers, cells, tables, source keys.

Kept apart from the sections so that each module stays short; nothing here reads a file. Every
number is printed with the digits its record gives it (records load floats as Decimal), so a
rebuild of RESULTS.md is byte-identical and a figure reads exactly as the note that reports it.
"""

from __future__ import annotations

import decimal

ORDER = ("WN18RR", "FB15k-237", "CoDEx-S", "CoDEx-M")
MODELS = ("TransE", "DistMult", "RotatE", "RotE", "RotL")
BAR = decimal.Decimal("0.01")  # issue 4's bar: HaLE within 0.01 test MRR of the paper's
WORDS = {"test_mrr": "test MRR {}", "valid_mrr": "valid MRR {}", "hits1": "H@1 {}",
         "hits10": "H@10 {}", "valid_best_epoch": "best at epoch {}",
         "step_over_floor": "{}× floor"}
UNITS = (("_gib", " GiB"), ("_ms", " ms"), ("_us", " µs"), ("_s", " s"), ("_tflops", " TFLOP/s"),
         ("_gflops", " GFLOP/s"), ("_tbs", " TB/s"), ("_gbs", " GB/s"))
# Command prefixes the Sources table states once, so that its rows stay short: (prefix, shown as).
PREFIXES = (("python -m hale_jax.launch", "hale_jax.launch"), ("python benchmarks/", ""))
LEGEND = ("Commands: a leading `hale_jax.launch` stands for `python -m hale_jax.launch`, a "
          "leading `X.py` for `python benchmarks/X.py`.")


def num(v) -> str:
  """A record's number as written; a dash when absent."""
  return "—" if v is None else str(v)


def signed(v) -> str:
  """A difference with its sign: '+0.004', '−0.034'."""
  return "−" + str(v)[1:] if str(v).startswith("-") else "+" + str(v)


def table(head: list[str], rows: list[list[str]]) -> list[str]:
  """A markdown table."""
  return ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head)] + rows]


def device(r: dict) -> str:
  """The record's device without the vendor ('H100'): the Sources table names it whole."""
  return r["device"].replace("NVIDIA ", "")


def short_command(cmd: str) -> str:
  """A command with a prefix that the Sources table states once replaced (`reproduce.py ...`)."""
  return next((short + cmd[len(p):] for p, short in PREFIXES if cmd.startswith(p)), cmd)


class Doc:
  """Records by id and by slot (their ``shown_in``); source keys s1, s2, ... by first use. A key
  stands for one provenance (device, date, commit, command); `notes[key]` lists the notes that
  report it, so that one run reported in two notes takes one line of the Sources table."""

  def __init__(self, records: list[dict]):
    """Indexes `records`; no source key is given out before a section asks for one."""
    self.records, self.by_id = records, {r["id"]: r for r in records}
    self.keys: dict[tuple, str] = {}
    self.notes: dict[str, list[str]] = {}

  def slot(self, name: str, **match) -> list[dict]:
    """The records shown in `name` whose fields equal `match`, in file order."""
    return [r for r in self.records if name in r.get("shown_in", ())
            and all(r.get(k) == v for k, v in match.items())]

  def one(self, name: str, **match) -> dict | None:
    """The first record of `slot(name, **match)`, or None."""
    return next(iter(self.slot(name, **match)), None)

  def src(self, *rs: dict, ordered: bool = False) -> str:
    """The records' source keys, in the records' order or by number; a comparison cites the runs
    it compares."""
    def keys(r):
      """The keys of one record: its own, or those of the runs a comparison compares."""
      if r["kind"] in ("comparison", "target"):
        return [k for i in r["runs"] for k in keys(self.by_id[i])]
      key = self.keys.setdefault((r["device"], r["date"], r["commit"], r["command"]),
                                 f"s{len(self.keys) + 1}")
      self.notes.setdefault(key, [])
      self.notes[key] += [r["note"]] if r["note"] not in self.notes[key] else []
      return [key]
    found = dict.fromkeys(k for r in rs for k in keys(r))
    return ", ".join(sorted(found, key=lambda k: int(k[1:])) if ordered else found)


def mrr3(m: dict) -> str:
  """'MRR / H@1 / H@10' of a run's metrics or of a paper row."""
  keys = ("test_mrr" if "test_mrr" in m else "mrr", "hits1", "hits10")
  return " / ".join(num(m.get(k)) for k in keys)


def met(r: dict) -> bool:
  """Whether a run's test MRR is within the bar of the paper's, or above it."""
  return "mrr" in r.get("paper", {}) and r["metrics"]["test_mrr"] >= r["paper"]["mrr"] - BAR


def score(r: dict) -> str:
  """'MRR / H@1 / H@10 ✓' of a run; ✓ when it meets the bar."""
  return f"{mrr3(r['metrics'])}{' ✓' if met(r) else ''}"


def cell(r: dict | None, d: Doc) -> str:
  """'MRR / H@1 / H@10 ✓ (device, budget, source)' of a run, or 'not run'."""
  if r is None:
    return "not run"
  return f"{score(r)} ({device(r)}, {num(r.get('budget_s'))} s, {d.src(r)})"


def diffs(rs: list[dict], d: Doc) -> str:
  """Stated differences, with their seeds when there are several, and their sources."""
  parts = [signed(r["difference"]) + (f" (seed {r['seed']})" if len(rs) > 1 else "") for r in rs]
  return ", ".join(parts) + f" ({d.src(*rs)})" if rs else "—"


def figures(r: dict) -> str:
  """A record's metrics in words: 'test MRR 0.424, train 540 s, footprint 1.11 GiB'."""
  def word(k, v):
    """One metric in words, its unit taken from the key's suffix (`_ms`: ' ms')."""
    name, unit = next(((k[:-len(s)], u) for s, u in UNITS if k.endswith(s)), (k, ""))
    return WORDS[k].format(num(v)) if k in WORDS else f"{name.replace('_', ' ')} {num(v)}{unit}"
  return ", ".join(word(k, v) for k, v in r["metrics"].items())


def what(r: dict, d: Doc, ours: str = "ours: ") -> str:
  """What a record measured: a reference's name, or our settings (a curve point's from its run)."""
  if r["kind"] == "reference":
    return r["variant"]
  return ours + (r.get("settings") or d.by_id[r["runs"][0]]["settings"])


def listing(rs: list[dict], d: Doc, ours: str = "ours: ") -> list[str]:
  """One row per measured thing (records of the same dataset, thing and device share a row), each
  figure followed by its source: what was measured, on which device, the figures."""
  groups: dict[tuple, list[str]] = {}
  for r in rs:
    budget = f", in {num(r['budget_s'])} s" if r.get("budget_s") else ""
    groups.setdefault((r["dataset"], what(r, d, ours), device(r)), []).append(
        f"{figures(r)}{budget} ({d.src(r)})")
  rows = [[ds, w, dev, "; ".join(fs)] for (ds, w, dev), fs in groups.items()]
  return table(["dataset or graph", "what", "device", "figures (source)"], rows)
