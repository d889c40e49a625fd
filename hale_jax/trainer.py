"""One run's moving parts: the state on its layout, the compiled segment, validation, checkpoints.

:class:`Trainer` owns what changes while a run trains (the state, the epoch's plan, the
best-valid parameters, the :class:`Progress` record) and does one thing per method;
:func:`hale_jax.loop.train` decides when each happens.  Training runs in segments of an epoch
(``hale_jax.step.segment_fn``), so a checkpoint may fall inside an epoch: it then holds the
position in the epoch and the losses of the epoch's steps so far, and a resume continues the
epoch with the same order, keys and rate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hale_jax import checkpoints, models, objective, ogb_eval, ranking, rundir, step
from hale_jax.callbacks import ProgressReport, Validation
from hale_jax.config import Config
from hale_jax.data import KGData, with_reciprocals
from hale_jax.layout import put_global, to_host
from hale_jax.program import Program


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# From this many training queries on, drawing an epoch's order is announced (seconds on a CPU).
DRAW_NOTICE_QUERIES = 4_000_000

# What a checkpoint's metadata must hold for a resume (later fields have defaults).
RESUME_NEEDS = ("epoch", "train_seconds", "eval_seconds", "best", "best_epoch", "curve")


@dataclasses.dataclass
class Progress:
  """Everything but arrays that a resume needs; stored as each checkpoint's JSON metadata."""
  epoch: int = 0                 # epochs completed
  epoch_step: int = 0            # steps done of the epoch under way (0: at an epoch's start)
  epoch_started_at: float = 0.0  # training seconds when the epoch under way started
  train_seconds: float = 0.0
  eval_seconds: float = 0.0
  last_eval_at: float = 0.0
  loss: float | None = None      # mean loss of the last completed epoch
  learning_rate: float | None = None  # of the epoch under way (or the last one)
  best: dict[str, float] | None = None
  best_epoch: float = 0          # an epoch count; with a share when the best fell inside one
  curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @classmethod
  def from_meta(cls, meta: dict[str, Any]) -> "Progress":
    """From a checkpoint's metadata; a field that older checkpoints lack keeps its default."""
    return cls(**{f.name: meta[f.name] for f in dataclasses.fields(cls) if f.name in meta})

  def epochs(self, steps_per_epoch: int) -> float:
    """Epochs done, with the share of the epoch under way."""
    return self.epoch + self.epoch_step / steps_per_epoch


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
  """The state of one run on its layout, with its compiled segment and evaluators."""

  def __init__(self, program: Program, data: KGData, workdir: Path, spec: dict[str, Any],
               log: Callable[[str], None]):
    self.wall0, self.commit = time.perf_counter(), rundir.git_commit()
    config, layout = program.config, program.layout
    self.program, self.config, self.layout = program, config, layout
    self.data, self.spec, self.log = data, spec, log
    protocol = config.budget.eval_protocol
    # One large allocation after the other, each one's scratch memory freed before the next:
    # the filter index of the validation and test queries (the OGB protocol has none), the
    # state (waited for), then the training queries, whose host copy goes once placed.
    index = ranking.filter_index_for(data) if protocol == "filtered" else None
    self.state = jax.block_until_ready(program.init_state())
    train_host = with_reciprocals(data.train, data.num_relations)
    num_queries = train_host.shape[0]
    self.train_queries = layout.place_training_set(train_host)
    del train_host
    segment_fn, self.steps = program.segment(num_queries)
    self.plan = program.new_plan(num_queries)
    h = objective.activation_of(config.objective)
    self.evaluators = {split: ogb_eval.make_evaluator(protocol, data, split, config.model.model,
                                                      config.budget.eval_chunk, index, layout,
                                                      h, log)
                       for split in ("valid", "test")}
    t0 = time.perf_counter()
    self._segment = segment_fn.lower(
        self.state, self.plan, self.train_queries, *self._scalars(0, 1, True)).compile()
    self.compile_seconds = time.perf_counter() - t0 + sum(
        e.compile(self.state.params) for e in self.evaluators.values())
    self.progress = Progress()
    self.best_params = jax.tree.map(jnp.copy, step.evaluated_params(self.state))  # donated
    self.checkpointer = checkpoints.Checkpointer(workdir, config.run.max_to_keep, log)
    self.host_seconds, self.steps_here = 0.0, 0  # dispatch time and steps of this process
    self.loss: float | None = None  # of the epoch's steps so far (after the last segment)
    self.rate = 0.0  # training queries per second in the last segment
    self.saved_step: int | None = None  # of the newest checkpoint of this run
    self.saved_at: tuple[int, int] | None = None  # its (epoch, epoch_step)
    self.resumed = False
    self._drawn = False  # whether the plan holds the epoch under way
    # Around work that must not stop half-way (a segment, a checkpoint write or restore): a
    # context, e.g. ``hale_jax.stopping.StopRequest.hold`` (set by ``hale_jax.loop``).
    self.hold: Callable[[], Any] = contextlib.nullcontext
    self._finite = jax.jit(lambda params: _all_finite(layout.real_rows(params)))

  def _scalars(self, start: int, count: int, fresh: bool) -> list[jax.Array]:
    return [self.layout.scalar(start, np.int32), self.layout.scalar(count, np.int32),
            self.layout.scalar(fresh, np.bool_)]

  def restore(self) -> bool:
    """Continues from the newest checkpoint that restores; False if there is none."""
    with self.hold():
      restored = self.checkpointer.restore_latest(
          {"state": self.state, "best_params": self.best_params},
          {"losses": np.zeros((0,), self.plan.losses.dtype)}, self._check_restored)
    if restored is None:
      return False
    arrays, meta = restored.state, restored.meta  # host arrays, padded for the saving layout
    self.saved_step, self.progress = restored.step, Progress.from_meta(meta)
    self.resumed = True
    p = self.progress
    self.saved_at, self.loss = (p.epoch, p.epoch_step), p.loss
    state = self.layout.unpad_state(arrays["state"], self.program.optimizer)
    self.state = self.layout.place_state(state, self.program.optimizer)
    self.best_params = self.layout.place_params(self.layout.real_rows(arrays["best_params"]))
    if p.epoch_step:
      self._restore_epoch(meta, restored.partial)
    return True

  def _check_restored(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
    """Rejects a checkpoint that does not fit this run: metadata without what a resume needs,
    other tables, other shapes (beyond the saving layout's padding rows), non-finite values."""
    missing = [name for name in RESUME_NEEDS if name not in meta]
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

  def _restore_epoch(self, meta: dict[str, Any], partial: dict[str, Any] | None) -> None:
    """The losses of the epoch under way from a checkpoint taken inside it; an epoch of
    another length (the data changed) starts over."""
    p, before = self.progress, meta.get("steps_per_epoch")
    if before != self.steps or partial is None:
      why = (f"the epoch now has {self.steps} steps instead of {before}" if partial is not None
             else "it holds no losses of the epoch's steps")
      self.log(f"the checkpoint lies inside epoch {p.epoch + 1} (after step {p.epoch_step}), "
               f"but {why}: that epoch starts over")
      p.epoch_step, p.epoch_started_at = 0, p.train_seconds
      return
    host = np.zeros(self.plan.losses.shape, self.plan.losses.dtype)
    host[:p.epoch_step] = partial["losses"]
    self.plan = self.plan.replace(losses=put_global(host, self.layout.replicated()))
    self.loss = float(np.mean(partial["losses"], dtype=np.float64))

  def run_segment(self, count: int) -> tuple[float, float]:
    """Trains the next ``count`` steps of the epoch under way (at the epoch's rate); returns
    ``(mean loss of the epoch's steps so far, seconds)``.  :meth:`advance` records them."""
    p = self.progress
    if p.epoch_step == 0:
      p.epoch_started_at = p.train_seconds
    if not self._drawn:  # the rate of the epoch under way, as when it started
      p.learning_rate = step.learning_rate_at(self.config, p.epoch, p.epoch_started_at)
      self.state = step.set_learning_rate(self.state, p.learning_rate)
    with self.hold():
      t0 = time.perf_counter()
      if not self._drawn:
        self._draw_epoch()
      self.state, self.plan, loss = self._segment(self.state, self.plan, self.train_queries,
                                                  *self._scalars(p.epoch_step, count, False))
      self.host_seconds += time.perf_counter() - t0  # the host's share: dispatching one call
      self.steps_here += count
      loss = float(to_host(loss))  # waits for the segment
      return loss, time.perf_counter() - t0

  def _draw_epoch(self) -> None:
    """Draws the order of the epoch under way into the plan: the segment with no steps and
    ``fresh`` (the same computation as drawing inside the first segment).  On a large graph
    the draw (a permutation of every training query) takes a while on a CPU, so it is its own
    call, announced, and the first segment's steps report soon after."""
    p, queries = self.progress, self.steps * self.config.optim.batch_size
    announce = queries >= DRAW_NOTICE_QUERIES
    if announce:
      self.log(f"  epoch {p.epoch + 1}: drawing the order of {queries:,} training queries")
    t0 = time.perf_counter()
    self.state, self.plan, _ = self._segment(self.state, self.plan, self.train_queries,
                                             *self._scalars(p.epoch_step, 0, True))
    self._drawn = True
    if announce:
      jax.block_until_ready(self.plan.order)
      self.log(f"  epoch {p.epoch + 1}: order drawn in {time.perf_counter() - t0:.1f}s")

  def advance(self, count: int, seconds: float, loss: float) -> bool:
    """Records a segment of ``count`` steps that took ``seconds`` (as every process agrees,
    ``hale_jax.loop``); True when it ended the epoch."""
    p = self.progress
    p.train_seconds += seconds
    p.epoch_step += count
    self.loss, self.rate = loss, count * self.config.optim.batch_size / max(seconds, 1e-9)
    if p.epoch_step < self.steps:
      return False
    p.epoch, p.epoch_step, p.loss = p.epoch + 1, 0, loss
    self._drawn = False
    return True

  def validate(self) -> Validation:
    """Ranks the valid split, records the curve, keeps and saves a new best."""
    p = self.progress
    t0 = time.perf_counter()
    ranked = step.evaluated_params(self.state)
    metrics = self.evaluators["valid"](ranked)
    p.eval_seconds += time.perf_counter() - t0
    m, done = metrics["realistic"], self.steps_done()
    epoch = p.epoch if not p.epoch_step else round(p.epochs(self.steps), 4)
    p.curve.append({"epoch": epoch, "step": done, "train_seconds": round(p.train_seconds, 3),
                    "loss": self.loss, "valid_mrr": m["mrr"], "valid_hits@10": m["hits@10"],
                    "learning_rate": p.learning_rate})
    improved = p.best is None or m["mrr"] > p.best["mrr"]
    if improved:
      p.best, p.best_epoch = m, epoch
      self.best_params = jax.tree.map(jnp.copy, ranked)
      with self.hold():
        self.checkpointer.save_best(done, self.best_params)
    b = self.config.budget
    return Validation(
        epoch=p.epoch, step=done, train_seconds=p.train_seconds,
        eval_seconds=p.eval_seconds, loss=self.loss, learning_rate=p.learning_rate,
        triples_per_second=self.rate, metrics=metrics, best=p.best, best_epoch=p.best_epoch,
        improved=improved, params=self.layout.real_rows(ranked),
        max_seconds=b.max_seconds, max_epochs=b.max_epochs, epoch_step=p.epoch_step,
        steps_per_epoch=self.steps)

  def report(self) -> ProgressReport:
    """Where training stands after a segment (``on_progress``)."""
    p, b = self.progress, self.config.budget
    return ProgressReport(
        epoch=p.epoch, epoch_step=p.epoch_step, steps_per_epoch=self.steps,
        step=self.steps_done(), train_seconds=p.train_seconds,
        eval_seconds=p.eval_seconds, loss=self.loss, learning_rate=p.learning_rate,
        triples_per_second=self.rate, max_seconds=b.max_seconds, max_epochs=b.max_epochs)

  def steps_done(self) -> int:
    return int(to_host(self.state.step))

  def params_finite(self) -> bool:
    """Whether every parameter is finite (entity padding rows, NaN by design, aside)."""
    return bool(to_host(self._finite(self.state.params)))

  def save(self) -> None:
    """Checkpoints the state, the best parameters and the progress (self-contained: the
    config, the data spec and the vocabularies go along), numbered by the optimiser steps
    done; inside an epoch also the losses of its steps so far."""
    spec, p = self.spec, self.progress
    meta = {**dataclasses.asdict(p), "config": spec["config"], "data": spec["data"],
            **checkpoints.vocabulary_meta(self.data, spec["vocab_sha256"]),
            "layout": self.layout.describe(), "steps_per_epoch": self.steps}
    partial = None
    if p.epoch_step:
      partial = {"losses": to_host(self.plan.losses)[:p.epoch_step]}
    done = self.steps_done()
    with self.hold():
      self.checkpointer.save(done, {"state": self.state, "best_params": self.best_params}, meta,
                             partial)
    self.saved_step, self.saved_at = done, (p.epoch, p.epoch_step)

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
                    "seconds_per_epoch": p.train_seconds / max(p.epochs(self.steps), 1e-9),
                    # A segment is one jitted call: the host only dispatches it.
                    "host_seconds_per_step": self.host_seconds / max(self.steps_here, 1),
                    "total_seconds_this_process": time.perf_counter() - self.wall0,
                    "resumed": self.resumed},
        "versions": rundir.versions(), "device": rundir.device(),
        "layout": self.layout.describe(), "git_commit": self.commit, "run": extra or {}}
