"""Sharded training on a ("data", "model") mesh of the 8 fake CPU devices of conftest.py.

The sharded loss, gradients, epochs and rankings must equal the single-device ones (up to
floating-point summation order: 1e-5 relative, measured as max|a - b| / max|b| per array), the
entity table and its Adam moments must really be row-sharded over "model", and the compiled
step must not all-gather the entity table.  One device is the 1 x 1 mesh of the same
:class:`hale_jax.layout.Layout`.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from hale_jax import losses, models, step, synthetic
from hale_jax.config import Config
from hale_jax.data import with_reciprocals
from hale_jax.ranking import Evaluator
from hale_jax.layout import Layout, pad_entities, to_host
from hale_jax.program import Program
from hale_jax.mesh import make_mesh, single_device_mesh

MESHES = ["data:8,model:1", "data:4,model:2", "data:1,model:8"]
EPOCHS = 2
RTOL = 1e-5


# ----------------------------------------------------------------------------- HLO parsing

_COLLECTIVE = re.compile(
    r"=\s*(?P<shape>\(?[a-z0-9]+\[[^=]*?)\s+(?P<op>all-reduce|all-gather|reduce-scatter|"
    r"all-to-all|collective-permute)(?:-start)?\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_ARRAY = re.compile(r"([a-z]+[0-9]*)\[([0-9,]*)\]")


def hlo_collectives(hlo_text: str) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
  """``(op, shapes)`` of every collective in compiled HLO text (``compiled.as_text()``);
  ``shapes`` are the per-device result shapes (several for a combined tuple collective)."""
  found = []
  for line in hlo_text.splitlines():
    m = _COLLECTIVE.search(_COMMENT.sub("", line))
    if m:
      shapes = tuple(tuple(int(x) for x in dims.split(",") if x)
                     for _, dims in _ARRAY.findall(m.group("shape")))
      found.append((m.group("op"), shapes))
  return found


def test_hlo_collectives_parses_plain_tuple_and_async_forms():
  text = "\n".join([
      "  %all-reduce.1 = f32[7]{0} all-reduce(f32[7]{0} %x), replica_groups={{0,1}}",
      "  %ar = (f32[124,16]{1,0}, f64[10,16]{1,0}, /*index=2*/f32[]) all-reduce(%a, %b, %c), "
      "replica_groups=[4,2]<=[8]",
      "  %ag = f32[8,3]{1,0} all-gather-start(f32[2,3]{1,0} %y), dimensions={0}",
      "  %cp = s32[2]{0} collective-permute(s32[2]{0} %z), source_target_pairs={{0,1}}",
      "  %add = f32[7]{0} add(f32[7]{0} %p, f32[7]{0} %q)",
      "  %fusion = f32[64,16]{1,0} fusion(%all-reduce.1), kind=kLoop",
  ])
  assert hlo_collectives(text) == [
      ("all-reduce", ((7,),)), ("all-reduce", ((124, 16), (10, 16), ())),
      ("all-gather", ((8, 3),)), ("collective-permute", ((2,),))]


# ----------------------------------------------------------------------------- fixtures

def _config(**kw) -> Config:
  base = dict(model="RotL", dim=16, batch_size=64, lse_chunk=0, max_epochs=EPOCHS,
              max_seconds=0, learning_rate=0.01, seed=0)
  base.update(kw)
  return Config.make(**base)


@functools.lru_cache(maxsize=None)
def _graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _queries() -> np.ndarray:
  data = _graph()
  return with_reciprocals(data.train, data.num_relations).astype(np.int32)


def _one_device() -> Layout:
  return Layout(single_device_mesh(), _graph().num_entities)


def _layout(spec: str) -> Layout:
  return Layout(make_mesh(spec), _graph().num_entities)


def _assert_rel_close(actual, expected, tol=RTOL, what=""):
  a = np.asarray(actual, np.float64)
  b = np.asarray(expected, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  assert np.all(np.isfinite(a)), f"{what}: non-finite values"
  err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
  assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def _adam(opt_state) -> optax.ScaleByAdamState:
  return opt_state[0]


def _f64_config() -> Config:
  with jax.enable_x64(True):
    return _config(dtype="float64")


@functools.lru_cache(maxsize=None)
def _single_run():
  """``EPOCHS`` epochs on one device in float64 (see the epochs test): host params, Adam state,
  losses, step, and the host initial state."""
  data, cfg = _graph(), _f64_config()
  layout = _one_device()
  with jax.enable_x64(True):
    queries = layout.place_training_set(_queries())
    program = Program.build(cfg, layout, data.num_relations)
    epoch, _ = program.epoch(_queries().shape[0])
    state = program.init_state()
    initial = to_host(state)
    epoch_losses = []
    for _ in range(EPOCHS):
      state, loss = epoch(state, queries)
      epoch_losses.append(float(loss))
    return (to_host(state.params), to_host(_adam(state.opt_state)), epoch_losses,
            int(state.step), initial)


@functools.lru_cache(maxsize=None)
def _sharded_run(spec: str):
  """The same with the sharded epoch, from the same initial state placed on ``spec``
  (``Layout.place_state`` of the host state).  Compiled once: returns the layout, the compiled
  epoch's HLO text, the placed queries, the final state and the losses."""
  cfg = _f64_config()
  layout = _layout(spec)
  with jax.enable_x64(True):
    queries = layout.place_training_set(_queries())
    program = Program.build(cfg, layout, _graph().num_relations)
    epoch, _ = program.epoch(_queries().shape[0])
    state = layout.place_state(_single_run()[4], program.optimizer)
    compiled = epoch.lower(state, queries).compile()
    epoch_losses = []
    for _ in range(EPOCHS):
      state, loss = compiled(state, queries)
      epoch_losses.append(float(loss))
  return layout, compiled.as_text(), queries, state, epoch_losses


# ----------------------------------------------------------------------------- the mesh

def test_make_mesh_parses_specs():
  assert jax.device_count() == 8
  for spec, shape in [(None, (8, 1)), ("", (8, 1)), ("data:4,model:2", (4, 2)),
                      ("model:2,data:4", (4, 2)), ("data:1, model:8", (1, 8)),
                      ("model:2", (4, 2)), ("data:8", (8, 1))]:
    mesh = make_mesh(spec)
    assert mesh.axis_names == ("data", "model")
    assert (mesh.shape["data"], mesh.shape["model"]) == shape, spec
    assert mesh.devices.size == 8
  mesh = make_mesh("data:2,model:2", devices=jax.devices()[:4])
  assert mesh.devices.size == 4 and set(mesh.devices.flat) == set(jax.devices()[:4])
  one = single_device_mesh()
  assert dict(one.shape) == {"data": 1, "model": 1} and one.devices.flat[0] == jax.devices()[0]


@pytest.mark.parametrize("spec, message", [
    ("data:3,model:2", "needs data\\*model = 6 devices, but there are 8"),
    ("data:2,model:2", "needs data\\*model = 4 devices"),
    ("data:3", "3 does not divide the 8 devices"),
    ("pipe:8", "unknown axis 'pipe'"),
    ("data:4,data:2", "given twice"),
    ("data:x", "not an integer"),
    ("model:0", "must be positive"),
    ("data8", "expected 'data:D,model:M'"),
])
def test_make_mesh_rejects_bad_specs(spec, message):
  with pytest.raises(ValueError, match=message):
    make_mesh(spec)


def test_padding_and_param_shardings():
  data = _graph()
  n = data.num_entities
  assert n % 2  # the test graph needs padding on a model axis of 2 or 8
  assert _layout("data:8,model:1").rows == pad_entities(n, 1) == n
  assert _layout("data:1,model:8").rows == pad_entities(n, 8) == -(-n // 8) * 8
  assert pad_entities(8, 8) == 8 and pad_entities(9, 8) == 16
  with pytest.raises(ValueError, match="num_entities must be positive"):
    pad_entities(0, 2)
  layout = _layout("data:4,model:2")
  params = to_host(_fresh_state(None, "samneg").params)
  assert {"bias_head", "bias_tail"} <= set(params)  # every entity table gets padded
  padded = layout.pad_params(params)
  for name in ("entity", "bias_head", "bias_tail"):
    assert padded[name].shape[0] == layout.rows
    assert np.isnan(np.asarray(padded[name][n:])).all(), name
  assert padded["rotation"].shape == params["rotation"].shape
  shard = layout.param_shardings(padded)
  assert shard["entity"].spec == P("model", None)
  assert all(shard[k].spec == P() for k in padded if k != "entity")
  host = layout.unpad_params(padded)
  for name, table in params.items():
    np.testing.assert_array_equal(host[name], table)
  assert layout.describe() == {"mesh": "data:4,model:2", "processes": 1}
  assert _one_device().describe() == {"mesh": None, "processes": 1}
  assert _one_device().single_device and not layout.single_device


# ----------------------------------------------------------------------------- loss and grads

@functools.lru_cache(maxsize=None)
def _fresh_state(spec: str | None, loss: str = "hale"):
  """The initial float32 state of ``_config(loss=loss)`` on ``spec`` (None: one device)."""
  layout = _one_device() if spec is None else _layout(spec)
  return Program.build(_config(loss=loss), layout, _graph().num_relations).init_state()


def _batch(cfg) -> np.ndarray:
  rng = np.random.default_rng(0)
  return _queries()[rng.permutation(len(_queries()))[:cfg.optim.batch_size]]


@functools.lru_cache(maxsize=None)
def _single_loss_and_grads(loss: str):
  """The plain one-device loss and gradients of ``_batch`` (host arrays)."""
  cfg = _config(loss=loss)
  ref_fn, form = step.make_loss(cfg, _graph().num_entities, allow_chunks=False)
  assert form == "plain"
  value, grads = jax.jit(jax.value_and_grad(ref_fn))(_fresh_state(None, loss).params,
                                                     jnp.asarray(_batch(cfg)),
                                                     jax.random.PRNGKey(3))
  return float(value), to_host(grads)


@pytest.mark.slow
@pytest.mark.parametrize("loss, spec", [("hale", spec) for spec in MESHES]
                         + [("samneg", "data:4,model:2")])  # the baselines on one mesh
def test_loss_and_grads_match_single_device(loss, spec):
  data, cfg = _graph(), _config(loss=loss)
  layout = _layout(spec)
  n = data.num_entities
  state = _fresh_state(spec, loss)
  single = _fresh_state(None, loss)
  # The sharded init creates the real rows of the single-device init (to 1 ulp: XLA may fuse
  # init_scale * normal differently in the two programs).
  host = layout.unpad_params(state.params)
  for k, v in to_host(single.params).items():
    np.testing.assert_allclose(host[k], v, rtol=3e-7, atol=0, err_msg=k)

  grad_sharded = jax.jit(jax.value_and_grad(Program.build(cfg, layout, data.num_relations).loss))
  loss_s, grads_s = grad_sharded(state.params,
                                 jax.device_put(_batch(cfg), layout.batch_sharding()),
                                 jax.random.PRNGKey(3))
  loss_1, grads_1 = _single_loss_and_grads(loss)

  _assert_rel_close(loss_s, loss_1, what="loss")
  grads_s = to_host(grads_s)
  assert set(grads_s) == set(grads_1)
  for k in grads_1:
    _assert_rel_close(layout.real_rows(grads_s)[k], grads_1[k], what=f"grad {k}")
  # The NaN padding rows of every entity table get exactly zero gradient.
  for k in models.ENTITY_TABLES:
    if k in grads_s:
      assert grads_s[k].shape[0] == layout.rows
      np.testing.assert_array_equal(np.asarray(grads_s[k])[n:], 0.0)


# ----------------------------------------------------------------------------- epochs

@pytest.mark.slow
@pytest.mark.parametrize("spec", MESHES)
def test_epochs_match_single_device(spec):
  """Two epochs (80 Adam steps) on the mesh equal two on one device, from the same state.

  In float64: this training amplifies rounding about 1000-fold (a 1e-7 relative perturbation of
  the float32 initial table moves the table after one epoch by 1.4e-4 relative, on one device),
  so in float32 *any* change of summation order, sharded or not, ends ~1e-4 apart.  In float64
  the sharded run must match to 1e-5 relative (it does to ~1e-12).
  """
  data = _graph()
  n = data.num_entities
  layout, _, _, state, epoch_losses = _sharded_run(spec)
  params_1, adam_1, losses_1, step_1, _ = _single_run()
  assert len(epoch_losses) == EPOCHS
  for i, (a, b) in enumerate(zip(epoch_losses, losses_1)):
    _assert_rel_close(a, b, what=f"loss of epoch {i + 1}")
  assert int(state.step) == step_1
  host = layout.unpad_params(state.params)
  for k in params_1:
    _assert_rel_close(host[k], params_1[k], what=f"param {k}")
  adam = _adam(state.opt_state)
  for moment in ("mu", "nu"):
    for k in params_1:
      got = to_host(getattr(adam, moment)[k])
      _assert_rel_close(got[:n] if k == "entity" else got, getattr(adam_1, moment)[k],
                        what=f"adam {moment} {k}")
  # Padding rows: still NaN parameters, exactly zero moments.
  np.testing.assert_array_equal(np.isnan(np.asarray(state.params["entity"])[n:]), True)
  np.testing.assert_array_equal(np.asarray(adam.mu["entity"])[n:], 0.0)
  np.testing.assert_array_equal(np.asarray(adam.nu["entity"])[n:], 0.0)
  # Back on the host and cut to the real rows, the state loads on any other layout.
  cut = layout.unpad_state(to_host(state), step.make_optimizer(_f64_config()))
  assert cut.params["entity"].shape == (n, 16) and _adam(cut.opt_state).mu["entity"].shape[0] == n


@pytest.mark.slow
@pytest.mark.parametrize("spec", MESHES)
def test_entity_table_and_moments_are_row_sharded(spec):
  layout = _layout(spec)
  mesh = layout.mesh
  m = mesh.shape["model"]
  rows = layout.rows
  fresh = _fresh_state(spec)
  *_, trained, _ = _sharded_run(spec)
  for state in (fresh, trained):
    adam = _adam(state.opt_state)
    for name, arr in [("entity", state.params["entity"]), ("mu", adam.mu["entity"]),
                      ("nu", adam.nu["entity"])]:
      assert isinstance(arr.sharding, NamedSharding), name
      assert arr.sharding.mesh.shape == mesh.shape
      assert arr.sharding.spec == P("model", None), (name, arr.sharding.spec)
      assert arr.shape == (rows, 16)
      assert len(arr.addressable_shards) == 8
      for shard in arr.addressable_shards:
        assert shard.data.shape == (rows // m, 16), (name, shard.data.shape)
      # Each model group holds a distinct block of rows; the data axis replicates it.
      starts = {shard.index[0].start or 0 for shard in arr.addressable_shards}
      assert len(starts) == m
    for name in ("rotation", "translation", "scale", "alpha"):
      assert state.params[name].sharding.spec == P()
      assert adam.mu[name].sharding.spec == P()
    assert adam.count.sharding.spec == P()
    assert state.key.sharding.spec == P() and state.step.sharding.spec == P()


# ----------------------------------------------------------------------------- HLO

@pytest.mark.slow
@pytest.mark.parametrize("spec", MESHES)
def test_hlo_has_no_table_all_gather(spec):
  """What XLA's SPMD partitioner made of the sharded epoch (see the layout module docstring).

  Found (RotL, N = 247 -> 248 rows, d = 16, B = 64, k = 7, float32 and float64 alike):
  data:1,model:8 has exactly four all-reduces over "model": the LSE's max and sum of ``[k]``
  partials, the masked entity lookups ``[B, d]``, and one combined backward all-reduce of
  query-sized cotangents.  data:4,model:2 has the same over "model" (``[ceil(k/4)]``,
  ``[B/4, d]``), plus one combined all-reduce over "data" of the gradients (entity-table
  *shards* ``[248/2, 16]`` and the relation tables), plus small all-gathers and
  collective-permutes of the ``k`` sampled query rows, which all start on data shard 0.
  In no case is the ``[Np, d]`` table (nor a shard of it) all-gathered, nor the data-sharded
  training set (each step moves only its ``[B]`` indices and ``[B, 3]`` ids).
  """
  data, cfg = _graph(), _config()
  layout, text, queries, state, _ = _sharded_run(spec)
  colls = hlo_collectives(text)
  assert len(colls) == text.count("replica_groups=") + text.count("source_target_pairs=")
  rows, dim = state.params["entity"].shape
  n_data, m = layout.mesh.shape["data"], layout.mesh.shape["model"]
  table_rows = {rows, data.num_entities, rows // m}
  set_rows = {queries.shape[0], queries.shape[0] // n_data}  # the training set never moves
  assert not [c for c in colls if any(shp and shp[0] in set_rows for shp in c[1])], colls
  k_local = -(-losses.num_sampled_queries(cfg.optim.batch_size, cfg.objective.alpha) // n_data)
  for op, shapes in colls:
    for shp in shapes:
      if op != "all-reduce":  # no all-gather/permute ever moves entity rows
        assert not (shp and shp[0] in table_rows), f"{op} of entity rows: {shapes}"
      else:  # a gradient all-reduce carries table *shards*, never the full table
        assert not (shp and shp[0] in {rows, data.num_entities} and m > 1), (op, shapes)
  # The LSE over the row-sharded table: per-shard max and sum combined by two all-reduces.
  lse_reductions = sum(1 for op, shapes in colls if op == "all-reduce" and shapes == ((k_local,),))
  assert lse_reductions == (2 if m > 1 else 0)
  grad_blocks = [shp for op, shapes in colls if op == "all-reduce" for shp in shapes
                 if shp == (rows // m, dim)]
  if n_data == 1:  # only the model axis: no collective carries entity rows at all
    assert not grad_blocks
    assert len(colls) == 4, colls
  else:  # data parallelism: the table-shard gradients are summed over "data"
    assert grad_blocks


# ----------------------------------------------------------------------------- ranking

@functools.lru_cache(maxsize=None)
def _single_ranks(split: str):
  params = {k: v.astype(np.float32) for k, v in _single_run()[0].items()}
  return Evaluator(_graph(), split, "RotL", chunk=64).ranks(params)


@pytest.mark.slow
@pytest.mark.parametrize("spec", MESHES)
def test_evaluator_ranks_on_sharded_params(spec):
  """The same (trained) parameters, padded and row-sharded, rank exactly as on one device
  (the test split; the valid split takes the same path)."""
  data = _graph()
  layout = _layout(spec)
  params_1 = {k: v.astype(np.float32) for k, v in _single_run()[0].items()}
  params_s = layout.place_params(params_1)
  assert params_s["entity"].sharding.spec == P("model", None)
  assert params_s["entity"].shape[0] == layout.rows
  opt_s, pess_s = Evaluator(data, "test", "RotL", chunk=64, layout=layout).ranks(params_s)
  opt_1, pess_1 = _single_ranks("test")
  # Padding rows never win nor tie (their columns are masked): ranks stay within [1, N].
  assert opt_s.max() <= data.num_entities and pess_s.max() <= data.num_entities
  np.testing.assert_array_equal(opt_s, opt_1)
  np.testing.assert_array_equal(pess_s, pess_1)


def test_place_state_pads_and_places():
  """``Layout.place_state`` of a host state (what resuming on another layout does)."""
  data, cfg = _graph(), _config()
  layout = _layout("data:2,model:4")
  optimizer = step.make_optimizer(cfg)
  single = to_host(_fresh_state(None))
  state = layout.place_state(single, optimizer)
  n, rows = data.num_entities, layout.rows
  adam = _adam(state.opt_state)
  for arr in (state.params["entity"], adam.mu["entity"], adam.nu["entity"]):
    assert arr.shape == (rows, 16) and arr.sharding.spec == P("model", None)
  np.testing.assert_array_equal(np.asarray(state.params["entity"])[:n], single.params["entity"])
  assert np.isnan(np.asarray(state.params["entity"])[n:]).all()
  np.testing.assert_array_equal(np.asarray(adam.nu["entity"]), 0.0)
  assert state.key.sharding.spec == P() and int(state.step) == 0
  np.testing.assert_array_equal(to_host(state.key), single.key)
  back = layout.unpad_state(to_host(state), optimizer)
  for name, table in single.params.items():
    np.testing.assert_array_equal(back.params[name], table)
