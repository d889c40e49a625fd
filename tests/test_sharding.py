"""Sharded training on a ("data", "model") mesh of the 8 fake CPU devices of conftest.py.

The sharded loss, gradients, epochs and rankings must equal the single-device ones (up to
floating-point summation order: 1e-5 relative, measured as max|a - b| / max|b| per array), the
entity table and its Adam moments must really be row-sharded over "model", and the compiled
step must not all-gather the entity table.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from hale_jax import losses, sharding, synthetic, train
from hale_jax.data import with_reciprocals
from hale_jax.evaluation import Evaluator

MESHES = ["data:8,model:1", "data:4,model:2", "data:1,model:8"]
EPOCHS = 2
RTOL = 1e-5


def _config(**kw) -> train.Config:
  base = dict(model="RotL", dim=16, batch_size=64, lse_chunk=0, max_epochs=EPOCHS,
              max_seconds=0, learning_rate=0.01, seed=0)
  base.update(kw)
  return train.Config(**base)


@functools.lru_cache(maxsize=None)
def _graph():
  return synthetic.generate(seed=1, num_trees=2, branching=3, depth=4)


def _queries() -> np.ndarray:
  data = _graph()
  return with_reciprocals(data.train, data.num_relations).astype(np.int32)


def _assert_rel_close(actual, expected, tol=RTOL, what=""):
  a = np.asarray(actual, np.float64)
  b = np.asarray(expected, np.float64)
  assert a.shape == b.shape, (what, a.shape, b.shape)
  assert np.all(np.isfinite(a)), f"{what}: non-finite values"
  err = np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30)
  assert err <= tol, f"{what}: relative error {err:.3g} > {tol}"


def _adam(opt_state) -> optax.ScaleByAdamState:
  return opt_state[0]


def _to_f64(state: train.TrainState, optimizer) -> train.TrainState:
  params = {k: jnp.asarray(v, jnp.float64) for k, v in state.params.items()}
  return train.TrainState(params, optimizer.init(params), state.key, state.step)


@functools.lru_cache(maxsize=None)
def _single_run():
  """``EPOCHS`` epochs of the plain single-device epoch in float64 (see the epochs test):
  host params, Adam state, losses, step."""
  data, cfg = _graph(), _config()
  with jax.enable_x64(True):
    queries = jnp.asarray(_queries())
    epoch, _ = train.make_epoch_fn(cfg, queries.shape[0])
    state = _to_f64(train.init_state(cfg, data), train.make_optimizer(cfg))
    epoch_losses = []
    for _ in range(EPOCHS):
      state, loss = epoch(state, queries)
      epoch_losses.append(float(loss))
    return (jax.device_get(state.params), jax.device_get(_adam(state.opt_state)), epoch_losses,
            int(state.step))


@functools.lru_cache(maxsize=None)
def _sharded_run(spec: str):
  """The same in float64 with the sharded epoch, from the same initial state placed on ``spec``.
  Returns the mesh, the epoch function, the placed queries, the state and the losses."""
  data, cfg = _graph(), _config()
  mesh = sharding.make_mesh(spec)
  with jax.enable_x64(True):
    queries = sharding.place_training_set(mesh, _queries())
    epoch, _ = sharding.make_sharded_epoch_fn(cfg, _queries().shape[0], mesh,
                                              num_entities=data.num_entities)
    optimizer = train.make_optimizer(cfg)
    state = sharding.shard_state(mesh, optimizer,
                                 _to_f64(train.init_state(cfg, data), optimizer))
    epoch_losses = []
    for _ in range(EPOCHS):
      state, loss = epoch(state, queries)
      epoch_losses.append(float(loss))
  return mesh, epoch, queries, state, epoch_losses


# ----------------------------------------------------------------------------- the mesh

def test_make_mesh_parses_specs():
  assert jax.device_count() == 8
  for spec, shape in [(None, (8, 1)), ("", (8, 1)), ("data:4,model:2", (4, 2)),
                      ("model:2,data:4", (4, 2)), ("data:1, model:8", (1, 8)),
                      ("model:2", (4, 2)), ("data:8", (8, 1))]:
    mesh = sharding.make_mesh(spec)
    assert mesh.axis_names == ("data", "model")
    assert (mesh.shape["data"], mesh.shape["model"]) == shape, spec
    assert mesh.devices.size == 8
  mesh = sharding.make_mesh("data:2,model:2", devices=jax.devices()[:4])
  assert mesh.devices.size == 4 and set(mesh.devices.flat) == set(jax.devices()[:4])


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
    sharding.make_mesh(spec)


def test_padding_and_param_shardings():
  data = _graph()
  n = data.num_entities
  assert n % 2  # the test graph needs padding on a model axis of 2 or 8
  assert sharding.pad_entities(n, sharding.make_mesh("data:8,model:1")) == n
  assert sharding.pad_entities(n, sharding.make_mesh("data:1,model:8")) == -(-n // 8) * 8
  assert sharding.pad_entities(8, 8) == 8 and sharding.pad_entities(9, 8) == 16
  mesh = sharding.make_mesh("data:4,model:2")
  params = train.init_state(_config(), data).params
  with pytest.raises(ValueError, match="pad_params"):
    sharding.param_shardings(mesh, params)
  padded = sharding.pad_params(params, sharding.pad_entities(n, mesh))
  assert np.isnan(np.asarray(padded["entity"][n:])).all()
  shard = sharding.param_shardings(mesh, padded)
  assert shard["entity"].spec == P("model", None)
  assert all(shard[k].spec == P() for k in padded if k != "entity")
  np.testing.assert_array_equal(sharding.unpad_params(padded, n)["entity"], params["entity"])


# ----------------------------------------------------------------------------- loss and grads

@pytest.mark.parametrize("spec", MESHES)
@pytest.mark.parametrize("loss", ["hale", "samneg"])
def test_loss_and_grads_match_single_device(spec, loss):
  if loss != "hale" and spec != "data:4,model:2":
    pytest.skip("the baselines are checked on one mesh")
  data, cfg = _graph(), _config(loss=loss)
  mesh = sharding.make_mesh(spec)
  n = data.num_entities
  state = sharding.init_sharded_state(cfg, data, mesh)
  single = train.init_state(cfg, data)
  # The sharded init creates the real rows of train.init_state (to 1 ulp: under jit XLA fuses
  # init_scale * normal differently from the eager ops).
  host = sharding.unpad_params(state.params, n)
  for k, v in jax.device_get(single.params).items():
    np.testing.assert_allclose(host[k], v, rtol=3e-7, atol=0, err_msg=k)

  rng = np.random.default_rng(0)
  batch = _queries()[rng.permutation(len(_queries()))[:cfg.batch_size]]
  key = jax.random.PRNGKey(3)
  grad_sharded = jax.jit(jax.value_and_grad(sharding.make_loss_fn(cfg, n)))
  loss_s, grads_s = grad_sharded(state.params, jax.device_put(batch, sharding.batch_sharding(mesh)),
                                 key)
  ref_fn = functools.partial(train.batch_loss, **{**train.loss_kwargs(cfg), "lse_chunk": 0})
  loss_1, grads_1 = jax.value_and_grad(ref_fn)(single.params, jnp.asarray(batch), key)

  _assert_rel_close(loss_s, loss_1, what="loss")
  grads_s = jax.device_get(grads_s)
  assert set(grads_s) == set(grads_1)
  for k in grads_1:
    _assert_rel_close(np.asarray(grads_s[k])[:n] if k == "entity" else grads_s[k], grads_1[k],
                      what=f"grad {k}")
  # The NaN padding rows get exactly zero gradient.
  np.testing.assert_array_equal(np.asarray(grads_s["entity"])[n:], 0.0)


# ----------------------------------------------------------------------------- epochs

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
  mesh, _, _, state, epoch_losses = _sharded_run(spec)
  params_1, adam_1, losses_1, step_1 = _single_run()
  assert len(epoch_losses) == EPOCHS
  for i, (a, b) in enumerate(zip(epoch_losses, losses_1)):
    _assert_rel_close(a, b, what=f"loss of epoch {i + 1}")
  assert int(state.step) == step_1
  host = sharding.unpad_params(state.params, n)
  for k in params_1:
    _assert_rel_close(host[k], params_1[k], what=f"param {k}")
  adam = _adam(state.opt_state)
  for moment in ("mu", "nu"):
    for k in params_1:
      got = np.asarray(jax.device_get(getattr(adam, moment)[k]))
      _assert_rel_close(got[:n] if k == "entity" else got, getattr(adam_1, moment)[k],
                        what=f"adam {moment} {k}")
  # Padding rows: still NaN parameters, exactly zero moments.
  np.testing.assert_array_equal(np.isnan(np.asarray(state.params["entity"])[n:]), True)
  np.testing.assert_array_equal(np.asarray(adam.mu["entity"])[n:], 0.0)
  np.testing.assert_array_equal(np.asarray(adam.nu["entity"])[n:], 0.0)


@pytest.mark.parametrize("spec", MESHES)
def test_entity_table_and_moments_are_row_sharded(spec):
  data = _graph()
  mesh = sharding.make_mesh(spec)
  m = mesh.shape["model"]
  rows = sharding.pad_entities(data.num_entities, mesh)
  fresh = sharding.init_sharded_state(_config(), data, mesh)
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


# ----------------------------------------------------------------------------- HLO

@pytest.mark.parametrize("spec", MESHES)
def test_hlo_has_no_table_all_gather(spec):
  """What XLA's SPMD partitioner made of the sharded epoch (see the sharding module docstring).

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
  mesh, epoch, queries, state, _ = _sharded_run(spec)
  with jax.enable_x64(True):
    text = epoch.lower(state, queries).compile().as_text()
  colls = sharding.hlo_collectives(text)
  assert len(colls) == text.count("replica_groups=") + text.count("source_target_pairs=")
  rows, dim = state.params["entity"].shape
  n_data, m = mesh.shape["data"], mesh.shape["model"]
  table_rows = {rows, data.num_entities, rows // m}
  set_rows = {queries.shape[0], queries.shape[0] // n_data}  # the training set never moves
  assert not [c for c in colls if any(shp and shp[0] in set_rows for shp in c[1])], colls
  k_local = -(-losses.num_sampled_queries(cfg.batch_size, cfg.alpha) // n_data)
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

@pytest.mark.parametrize("spec", MESHES)
def test_evaluator_ranks_on_sharded_params(spec):
  """The same (trained) parameters, padded and row-sharded, rank exactly as on one device."""
  data = _graph()
  mesh = sharding.make_mesh(spec)
  params_1, *_ = _single_run()
  params_1 = {k: v.astype(np.float32) for k, v in params_1.items()}
  padded = sharding.pad_params({k: jnp.asarray(v) for k, v in params_1.items()},
                               sharding.pad_entities(data.num_entities, mesh))
  params_s = jax.device_put(padded, sharding.param_shardings(mesh, padded))
  assert params_s["entity"].sharding.spec == P("model", None)
  for split in ("valid", "test"):
    opt_s, pess_s = Evaluator(data, split, "RotL", chunk=64).ranks(params_s)
    opt_1, pess_1 = Evaluator(data, split, "RotL", chunk=64).ranks(params_1)
    # Padding rows never win nor tie (NaN distances compare False): ranks stay within [1, N].
    assert opt_s.max() <= data.num_entities and pess_s.max() <= data.num_entities
    np.testing.assert_array_equal(opt_s, opt_1)
    np.testing.assert_array_equal(pess_s, pess_1)


def test_shard_state_pads_and_places():
  data, cfg = _graph(), _config()
  mesh = sharding.make_mesh("data:2,model:4")
  optimizer = train.make_optimizer(cfg)
  single = train.init_state(cfg, data)
  state = sharding.shard_state(mesh, optimizer, single)
  n, rows = data.num_entities, sharding.pad_entities(data.num_entities, mesh)
  adam = _adam(state.opt_state)
  for arr in (state.params["entity"], adam.mu["entity"], adam.nu["entity"]):
    assert arr.shape == (rows, 16) and arr.sharding.spec == P("model", None)
  np.testing.assert_array_equal(np.asarray(state.params["entity"])[:n], single.params["entity"])
  assert np.isnan(np.asarray(state.params["entity"])[n:]).all()
  np.testing.assert_array_equal(np.asarray(adam.nu["entity"]), 0.0)
  assert state.key.sharding.spec == P() and int(state.step) == 0
