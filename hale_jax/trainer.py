"""One run's moving parts: the state on its layout, the compiled epoch, validation, checkpoints.

:class:`Trainer` owns what changes while a run trains (the state, the best-valid parameters,
the :class:`Progress` record) and does one thing per method; :func:`hale_jax.loop.train`
decides when each happens.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hale_jax import checkpoints, models, objective, ogb_eval, rundir, step
from hale_jax.callbacks import Validation
from hale_jax.config import Config
from hale_jax.data import FilterIndex, KGData, with_reciprocals
from hale_jax.layout import Layout, to_host


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


@dataclasses.dataclass
class Progress:
  """Everything but arrays that a resume needs; stored as each checkpoint's JSON metadata."""
  epoch: int = 0
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  last_eval_at: float = 0.0
  loss: float | None = None
  best: dict[str, float] | None = None
  best_epoch: int = 0
  curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @classmethod
  def from_meta(cls, meta: dict[str, Any]) -> "Progress":
    return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls)})


def describe(config: Config, lse_form: str) -> str:
  """The line a run prints about its settings."""
  m, o, p = config.model, config.objective, config.optim
  parts = [f"model {m.model} d={m.dim}", f"loss {o.loss}", f"activation {o.activation}",
           f"lambda {o.lam}", f"alpha {o.alpha} (k={config.num_sampled} sampled queries/step)",
           f"batch {p.batch_size}",
           f"{p.optimizer} lr {p.learning_rate}"
           + (f" ({p.lr_schedule})" if p.lr_schedule != "constant" else ""), f"seed {p.seed}"]
  if objective.bias_tables(o.loss, o.bias) != "none":
    parts.append("entity biases")
  if o.loss == "hale":
    parts.append(f"lse {lse_form}")
  if o.matmul != "float32":
    parts.append(f"matmul {o.matmul}")
  if models.canonical_model(m.model) in models.ROTATION_MODELS:
    parts.append(f"rotation init {m.rotation_init}")
  if config.budget.eval_protocol != "filtered":
    parts.append(f"ranked by the {config.budget.eval_protocol} protocol")
  return "  ".join(parts)


class Trainer:
  """The state of one run on its layout, with its compiled epoch and evaluators."""

  def __init__(self, config: Config, data: KGData, layout: Layout, workdir: Path,
               spec: dict[str, Any], log: Callable[[str], None]):
    self.wall0, self.commit = time.perf_counter(), rundir.git_commit()
    self.config, self.data, self.layout, self.spec, self.log = config, data, layout, spec, log
    self.optimizer = step.make_optimizer(config)
    train_host = with_reciprocals(data.train, data.num_relations).astype(np.int32)
    self.train_queries = layout.place_training_set(train_host)
    epoch_fn, self.steps = layout.epoch(config, train_host.shape[0])
    self.state = layout.init_state(config, data.num_relations)
    protocol = config.budget.eval_protocol
    index = FilterIndex(data) if protocol == "filtered" else None  # the OGB protocol has none
    h = objective.activation_of(config.objective)
    self.evaluators = {split: ogb_eval.make_evaluator(protocol, data, split, config.model.model,
                                                      config.budget.eval_chunk, index, layout,
                                                      h, log)
                       for split in ("valid", "test")}
    t0 = time.perf_counter()
    self._epoch = epoch_fn.lower(self.state, self.train_queries).compile()
    self.compile_seconds = time.perf_counter() - t0 + sum(
        e.compile(self.state.params) for e in self.evaluators.values())
    self.progress = Progress()
    self.best_params = jax.tree.map(jnp.copy, self.state.params)  # the state's are donated
    self.checkpointer = checkpoints.Checkpointer(workdir, config.run.max_to_keep, log)
    self.host_seconds, self.epochs_here = 0.0, 0  # dispatch time of this process's epochs
    self.last_learning_rate: float | None = None
    self.epoch_seconds = 0.0  # the last epoch's, as every process agrees (hale_jax.loop)
    self.saved_epoch: int | None = None  # of the newest checkpoint of this run
    self.resumed = False
    self._finite = jax.jit(lambda params: _all_finite(layout.real_rows(params)))

  def restore(self) -> bool:
    """Continues from the newest checkpoint that restores; False if there is none."""
    restored = self.checkpointer.restore_latest(
        {"state": self.state, "best_params": self.best_params}, self._check_restored)
    if restored is None:
      return False
    arrays, meta, self.saved_epoch = restored  # host arrays, padded for the saving layout
    self.progress = Progress.from_meta(meta)
    self.resumed = True
    state = self.layout.unpad_state(arrays["state"], self.optimizer)
    self.state = self.layout.place_state(state, self.optimizer)
    self.best_params = self.layout.place_params(self.layout.real_rows(arrays["best_params"]))
    return True

  def _check_restored(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """Rejects a checkpoint that does not fit this run: metadata without what a resume needs,
    other tables, other shapes (beyond the saving layout's padding rows), non-finite values."""
    missing = [f.name for f in dataclasses.fields(Progress) if f.name not in meta]
    if missing:
      raise ValueError(f"its metadata lacks {', '.join(missing)}")
    n = self.data.num_entities
    want = {k: ((n,) if k in models.ENTITY_TABLES else v.shape[:1]) + v.shape[1:]
            for k, v in self.best_params.items()}
    for tree in (arrays["best_params"], arrays["state"].params):
      real = self.layout.real_rows(tree)
      if set(real) != set(want):
        raise ValueError(f"it holds the tables {sorted(real)}, this run {sorted(want)}")
      for name, a in real.items():
        if a.shape != want[name] or not np.isfinite(a).all():
          raise ValueError(f"its table {name!r} ({a.shape}) does not fit this run "
                           f"({want[name]}) or is not finite")

  def run_epoch(self) -> tuple[float, float]:
    """Trains one epoch at the schedule's rate; returns ``(mean loss, seconds)``."""
    p = self.progress
    self.last_learning_rate = step.learning_rate_at(self.config, p.epoch, p.train_seconds)
    state = step.set_learning_rate(self.state, self.last_learning_rate)
    t0 = time.perf_counter()
    self.state, loss = self._epoch(state, self.train_queries)
    self.host_seconds += time.perf_counter() - t0  # the host's share: dispatching one call
    self.epochs_here += 1
    loss = float(to_host(loss))  # waits for the epoch
    return loss, time.perf_counter() - t0

  def validate(self, epoch_seconds: float) -> Validation:
    """Ranks the valid split, records the curve, keeps and saves a new best."""
    p = self.progress
    t0 = time.perf_counter()
    metrics = self.evaluators["valid"](self.state.params)
    p.eval_seconds += time.perf_counter() - t0
    m = metrics["realistic"]
    p.curve.append({"epoch": p.epoch, "train_seconds": round(p.train_seconds, 3),
                    "loss": p.loss, "valid_mrr": m["mrr"], "valid_hits@10": m["hits@10"],
                    "learning_rate": self.last_learning_rate})
    improved = p.best is None or m["mrr"] > p.best["mrr"]
    if improved:
      p.best, p.best_epoch = m, p.epoch
      self.best_params = jax.tree.map(jnp.copy, self.state.params)
      self.checkpointer.save_best(p.epoch, self.best_params)
    b = self.config.budget
    return Validation(
        epoch=p.epoch, step=self.steps_done(), train_seconds=p.train_seconds,
        eval_seconds=p.eval_seconds, loss=p.loss, learning_rate=self.last_learning_rate,
        triples_per_second=self.steps * self.config.optim.batch_size / max(epoch_seconds, 1e-9),
        metrics=metrics, best=p.best, best_epoch=p.best_epoch, improved=improved,
        params=self.layout.real_rows(self.state.params), max_seconds=b.max_seconds,
        max_epochs=b.max_epochs)

  def steps_done(self) -> int:
    return int(to_host(self.state.step))

  def params_finite(self) -> bool:
    """Whether every parameter is finite (entity padding rows, NaN by design, aside)."""
    return bool(to_host(self._finite(self.state.params)))

  def save(self) -> None:
    """Checkpoints the state, the best parameters and the progress (self-contained: the
    config, the data spec and the vocabularies go along)."""
    spec = self.spec
    meta = {**dataclasses.asdict(self.progress), "config": spec["config"], "data": spec["data"],
            **checkpoints.vocabulary_meta(self.data, spec["vocab_sha256"]),
            "layout": self.layout.describe()}
    self.checkpointer.save(self.progress.epoch,
                           {"state": self.state, "best_params": self.best_params}, meta)
    self.saved_epoch = self.progress.epoch

  def test(self) -> tuple[dict[str, Any], dict[str, Any]]:
    """Valid and test metrics of the best-valid parameters."""
    t0 = time.perf_counter()
    valid, test = (self.evaluators[s](self.best_params) for s in ("valid", "test"))
    self.progress.eval_seconds += time.perf_counter() - t0
    return valid, test

  def results(self, valid: dict, test: dict, stop: str, extra: dict | None) -> dict[str, Any]:
    """The results document (``results.json``)."""
    p, data = self.progress, self.data
    return {
        "config": self.config.flat(),
        "dataset": {"name": data.name, "source": data.source, "entities": data.num_entities,
                    "relations": data.num_relations, "train": len(data.train),
                    "valid": len(data.valid), "test": len(data.test)},
        "metrics": {"valid": valid, "test": test, "best_epoch": p.best_epoch,
                    "epochs": p.epoch, "steps": self.steps_done(), "stop_reason": stop,
                    "protocol": self.config.budget.eval_protocol,
                    "ranking": ogb_eval.RANKING[self.config.budget.eval_protocol]},
        "curve": p.curve,
        "timings": {"compile_seconds": self.compile_seconds, "train_seconds": p.train_seconds,
                    "eval_seconds": p.eval_seconds,
                    "seconds_per_epoch": p.train_seconds / max(p.epoch, 1),
                    # The epoch is one jitted call: the host only dispatches it.
                    "host_seconds_per_step": self.host_seconds / max(self.epochs_here
                                                                     * self.steps, 1),
                    "total_seconds_this_process": time.perf_counter() - self.wall0,
                    "resumed": self.resumed},
        "versions": rundir.versions(), "device": rundir.device(),
        "layout": self.layout.describe(), "git_commit": self.commit, "run": extra or {}}
