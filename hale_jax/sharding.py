"""Sharding rules for training on several devices: one ``("data", "model")`` mesh, jit, no pmap.

Everything here is ``jax.jit`` with :class:`jax.sharding.NamedSharding` in/out shardings over a
two-axis :class:`jax.sharding.Mesh`; XLA's SPMD partitioner inserts the collectives.  Both mesh
axes are ``AxisType.Auto`` (``jax.make_mesh`` defaults to ``Explicit``, whose sharding-in-types
would require an explicit ``out_sharding`` on every gather from the row-sharded table).

The rules
---------

============================  ===================================================================
array                         sharding
============================  ===================================================================
``params["entity"] [Np, d]``  rows over ``"model"``: ``P("model", None)`` (replicated over data)
every other parameter         replicated (relation tables, ``scale``, ``alpha``: ``O(R d)``)
optimiser state               like the parameter it belongs to (Adam's ``mu``/``nu`` of the entity
                              table are row-sharded); counters replicated
``key``, ``step``             replicated
a batch ``[B, 3]``            rows over ``"data"``
the training set ``[2T, 3]``  rows over ``"data"`` (:func:`place_training_set`); each step
                              gathers its batch by a masked local gather and an all-reduce of
                              the ``[B, 3]`` ids over ``"data"``
============================  ===================================================================

Padding
-------
``jit`` in/out shardings need the row count to divide by the ``"model"`` size, so the entity
table is stored with ``Np = pad_entities(N, mesh)`` rows (:func:`pad_params`).  The padding rows
are filled with **NaN** and handled exactly:

- training: the loss never sees them.  :func:`entity_view` slices ``entity[:N]`` inside the jitted
  step before calling :func:`hale_jax.train.batch_loss`, so the LSE runs over the ``N`` real
  entities only (XLA masks the uneven last shard with the reduction's identity), and the gradient
  of the padding rows is exactly 0 (the transpose of a slice pads with zeros).  With a zero
  gradient Adam's moments of those rows stay 0 and their update is exactly 0, so they stay NaN
  and the real rows follow the single-device trajectory.
- ranking: :class:`hale_jax.evaluation.Evaluator` on a mesh passes ``num_candidates=N`` to
  ``evaluation.ranks_from_distances``, which masks the columns ``>= N`` out of the competition
  whatever their values, so the ranks equal the single-device ones.  (Relying on NaN comparing
  False is not enough: XLA's CPU backend may compile a ``max(d, 0)`` inside a loop to an
  instruction that turns NaN into 0, which once made every padding row tie with a perfect
  target.)
- anything that reduces over the raw table (a norm, an export) must use :func:`unpad_params`
  first; NaN makes forgetting it loud rather than silently biased.

A huge-but-finite padding row would not be exact: ``hanon`` and ``halin`` saturate at ``gamma``,
so such rows would still add ``exp(-gamma)`` each to every LSE.

What the compiled HLO shows (CPU, 8 fake devices, jax 0.10.2)
-----------------------------------------------------------
:func:`hlo_collectives` lists the collectives of ``epoch.lower(...).compile().as_text()``.  For
RotL, ``N = 247`` (248 rows stored), ``d = 16``, ``B = 64``, ``k = 7``, one training step holds:

- ``data:1,model:8``: four all-reduces over ``"model"`` and nothing else: the LSE's per-shard
  max and sum (``f32[k]`` each: XLA's SPMD partitioner combines the partial LSEs of the row
  shards), the entity lookups ``entity[heads]``/``entity[tails]`` (a masked local gather plus an
  all-reduce of ``[B, d]``), and one combined backward all-reduce of query-sized cotangents.
  No collective carries entity rows; each device's table gradient is its own ``[Np/8, d]``.
- ``data:4,model:2``: the same over ``"model"`` at the per-data-shard sizes, plus one combined
  all-reduce over ``"data"`` of the gradients (table *shards* ``[Np/2, d]``, and the relation
  tables): data parallelism's one unavoidable reduction, and small all-gathers/collective-permutes
  of the ``k`` sampled query rows (``queries[:k]`` all live on data shard 0).
- ``data:8,model:1``: plain data parallelism: one combined all-reduce of the gradients.
- with ``data > 1`` each step's batch comes from the data-sharded training set through an
  all-gather of its ``[B]`` row indices and an all-reduce of the ``[B, 3]`` ids (a masked local
  gather); the training set itself never moves.

No all-gather of the ``[Np, d]`` table (or of a shard of it) appears for any mesh
(``tests/test_sharding.py::test_hlo_has_no_table_all_gather``).  Left on the table: the data
all-reduce carries the entity-shard gradient as three separate ``[Np/model, d]`` operands (the
two gather transposes and the LSE's dot, plus a ``[Np/model]`` one for ``|e|^2``) that XLA does
not add before reducing, so it moves ~3x the bytes needed; a ``jax.shard_map`` step that sums
them locally and ``psum``s once would fix that if the data axis ever dominates.
"""

from __future__ import annotations

import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from hale_jax import models, train
from hale_jax.data import KGData

Array = jax.Array
AXES = ("data", "model")
PAD_VALUE = float("nan")


# ----------------------------------------------------------------------------- the mesh

def mesh_axis_sizes(spec: str) -> dict[str, int]:
  """The axis sizes a spec such as ``"data:4,model:2"`` names (one or both axes).  Raises
  ValueError on unknown or repeated axes and non-positive sizes."""
  sizes: dict[str, int] = {}
  for item in spec.split(","):
    name, sep, value = item.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
      raise ValueError(f"bad mesh spec {spec!r}: expected 'data:D,model:M', got item {item!r}")
    if name not in AXES:
      raise ValueError(f"bad mesh spec {spec!r}: unknown axis {name!r}; the axes are "
                       f"{', '.join(AXES)}")
    if name in sizes:
      raise ValueError(f"bad mesh spec {spec!r}: axis {name!r} given twice")
    try:
      size = int(value)
    except ValueError:
      raise ValueError(f"bad mesh spec {spec!r}: size of {name!r} is not an integer: "
                       f"{value!r}") from None
    if size <= 0:
      raise ValueError(f"bad mesh spec {spec!r}: size of {name!r} must be positive, got {size}")
    sizes[name] = size
  return sizes


def parse_mesh_spec(spec: str | None, num_devices: int) -> tuple[int, int]:
  """``"data:4,model:2"`` -> ``(4, 2)``.

  ``None`` or ``""`` puts every device on ``"data"``.  An axis left out takes the devices the
  other leaves (``"model:2"`` on 8 devices is ``(4, 2)``).  Raises ValueError on unknown or
  repeated axes, non-positive sizes, or a product different from ``num_devices``.
  """
  if num_devices <= 0:
    raise ValueError("no devices to build a mesh from")
  if spec is None or not spec.strip():
    return num_devices, 1
  sizes = mesh_axis_sizes(spec)
  given = math.prod(sizes.values())
  missing = [a for a in AXES if a not in sizes]
  if missing:
    if num_devices % given:
      raise ValueError(f"mesh spec {spec!r}: {given} does not divide the {num_devices} devices, "
                       f"so axis {missing[0]!r} cannot take the rest")
    sizes[missing[0]] = num_devices // given
  if sizes["data"] * sizes["model"] != num_devices:
    raise ValueError(f"mesh spec {spec!r} needs data*model = {sizes['data'] * sizes['model']} "
                     f"devices, but there are {num_devices}")
  return sizes["data"], sizes["model"]


def make_mesh(spec: str | None = None, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``("data", "model")`` mesh over ``devices`` (default: all) from ``spec`` (see
  :func:`parse_mesh_spec`).  ``"model"`` is the inner axis, so a model group is a run of
  neighbouring devices.  Both axes are ``AxisType.Auto`` (XLA propagates shardings)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = parse_mesh_spec(spec, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


TABLE_MEMORY_FRACTION = 0.5  # auto mesh: most of one device's memory the table may take


def table_bytes(config: train.Config, num_entities: int) -> int:
  """Bytes of the entity table plus its optimiser state (Adam: two moments; Adagrad: one)."""
  width = config.dim * np.dtype(config.dtype).itemsize
  return num_entities * width * (3 if config.optimizer == "adam" else 2)


def _device_memory(device: jax.Device) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # some backends do not implement it
    return None
  return (stats or {}).get("bytes_limit")


def auto_mesh_spec(config: train.Config, num_entities: int,
                   devices: Sequence[jax.Device]) -> str | None:
  """What ``--mesh=auto`` means for ``devices``: None (one device, the plain path) or a spec.

  - one device, or CPU devices of a single process: None.  XLA's CPU device already uses every
    core, so several (fake) CPU devices in one process only add collectives.
  - otherwise every device on ``"data"``, unless the entity table and its optimiser state
    would take more than ``TABLE_MEMORY_FRACTION`` of one device's memory: then the smallest
    ``"model"`` size (a divisor of the device count) that brings a shard under it.
  """
  n = len(devices)
  if n == 1 or (devices[0].platform == "cpu" and jax.process_count() == 1):
    return None
  limit = _device_memory(devices[0])
  need = table_bytes(config, num_entities)
  for m in (d for d in range(1, n + 1) if n % d == 0):
    if limit is None or need / m <= TABLE_MEMORY_FRACTION * limit:
      return f"data:{n // m},model:{m}"
  return f"data:1,model:{n}"


def resolve_mesh(config: train.Config, num_entities: int,
                 devices: Sequence[jax.Device] | None = None) -> Mesh | None:
  """The mesh of a run from ``config.mesh``: ``"none"`` (one device: None), ``"auto"``
  (:func:`auto_mesh_spec`) or a spec for :func:`make_mesh` over ``devices`` (default: all
  devices of all processes)."""
  devices = list(jax.devices() if devices is None else devices)
  spec = config.mesh.strip()
  if spec == "none":
    return None
  if spec == "auto":
    spec = auto_mesh_spec(config, num_entities, devices)
    if spec is None:
      return None
  return make_mesh(spec, devices)


def model_size(mesh: Mesh) -> int:
  return int(mesh.shape["model"])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Rows of a batch (any rank) over ``"data"``, the rest replicated."""
  return NamedSharding(mesh, P("data"))


# ----------------------------------------------------------------------------- padding

def pad_entities(num_entities: int, mesh: Mesh | int) -> int:
  """Rows of the stored entity table: ``num_entities`` rounded up to a multiple of the
  ``"model"`` size (``mesh`` may also be that size as an int)."""
  m = mesh if isinstance(mesh, int) else model_size(mesh)
  if num_entities <= 0:
    raise ValueError(f"num_entities must be positive, got {num_entities}")
  return -(-num_entities // m) * m


def pad_params(params: dict[str, Array], num_rows: int) -> dict[str, Array]:
  """``params`` with the entity table extended to ``num_rows`` rows of :data:`PAD_VALUE` (NaN).
  Jittable."""
  entity = params["entity"]
  extra = num_rows - entity.shape[0]
  if extra < 0:
    raise ValueError(f"cannot pad {entity.shape[0]} entity rows down to {num_rows}")
  if extra == 0:
    return params
  pad = jnp.full((extra,) + entity.shape[1:], PAD_VALUE, entity.dtype)
  return {**params, "entity": jnp.concatenate([entity, pad], axis=0)}


def entity_view(params: dict[str, Array], num_entities: int) -> dict[str, Array]:
  """``params`` with only the ``num_entities`` real entity rows (a slice; used inside jit)."""
  if params["entity"].shape[0] == num_entities:
    return params
  return {**params, "entity": params["entity"][:num_entities]}


def unpad_params(params: dict[str, Any], num_entities: int) -> dict[str, np.ndarray]:
  """Host (numpy) copy of ``params`` without the padding rows: for export, saving, comparing.
  Works on arrays spread over several processes (see :func:`to_host`)."""
  host = to_host(params)
  return {k: v[:num_entities] if k == "entity" else v for k, v in host.items()}


def place_params(params: dict[str, np.ndarray], mesh: Mesh | None) -> dict[str, Array]:
  """Unpadded host parameters on ``mesh`` (NaN-padded, laid out by :func:`param_shardings`), or
  on the default device when ``mesh`` is None."""
  if mesh is None:
    return {k: jnp.asarray(v) for k, v in params.items()}
  rows = pad_entities(params["entity"].shape[0], mesh)
  padded = {k: _pad_rows(v, rows, PAD_VALUE) if k == "entity" else np.asarray(v)
            for k, v in params.items()}
  return jax.tree.map(put_global, padded, param_shardings(mesh, padded))


def _pad_rows(a: Any, rows: int, value: float) -> np.ndarray:
  a = np.asarray(a)
  return np.concatenate([a, np.full((rows - a.shape[0],) + a.shape[1:], value, a.dtype)])


# ----------------------------------------------------------------------------- shardings

def param_shardings(mesh: Mesh, params: dict[str, Any]) -> dict[str, NamedSharding]:
  """Entity rows over ``"model"``, every other table replicated.  ``params`` may hold arrays or
  ``jax.ShapeDtypeStruct``; its entity row count must divide by the ``"model"`` size (pad with
  :func:`pad_params` to :func:`pad_entities` rows)."""
  rows = params["entity"].shape[0]
  if rows % model_size(mesh):
    raise ValueError(f"the entity table has {rows} rows, not a multiple of the model axis "
                     f"({model_size(mesh)}); pad it to pad_entities({rows}, mesh) = "
                     f"{pad_entities(rows, mesh)} rows with pad_params")
  return {name: NamedSharding(mesh, P("model", None)) if name == "entity" else replicated(mesh)
          for name in params}


def opt_state_shardings(mesh: Mesh, optimizer: optax.GradientTransformation,
                        params: dict[str, Any]) -> Any:
  """Shardings for ``optimizer.init(params)``: every copy of the parameter tree inside the state
  (Adam's ``mu`` and ``nu``, Adagrad's ``sum_of_squares``) is sharded like the parameters, the
  rest (step counters) replicated.  Uses ``jax.eval_shape`` (nothing is allocated) and
  ``optax.tree_map_params``, which finds the parameter-shaped subtrees by tracing ``init``."""
  shapes = jax.eval_shape(optimizer.init, params)
  p_sh = param_shardings(mesh, params)
  return optax.tree_map_params(optimizer, lambda _, sh: sh, shapes, p_sh,
                               transform_non_params=lambda _: replicated(mesh))


def state_shardings(mesh: Mesh, optimizer: optax.GradientTransformation,
                    params: dict[str, Any]) -> train.TrainState:
  """A :class:`hale_jax.train.TrainState` of shardings for a state holding ``params``."""
  rep = replicated(mesh)
  return train.TrainState(param_shardings(mesh, params),
                          opt_state_shardings(mesh, optimizer, params), rep, rep)


def init_sharded_state(config: train.Config, data: KGData, mesh: Mesh) -> train.TrainState:
  """``train.init_state`` created directly in its sharded layout (``jit`` with
  ``out_shardings``): the entity table and its optimiser moments are born row-sharded, never
  materialised whole on one device.  The real rows equal ``train.init_state``'s; the table has
  ``pad_entities(N, mesh)`` rows, the extra ones NaN (see the module docstring)."""
  rows = pad_entities(data.num_entities, mesh)
  init = train.init_fn(config, data.num_entities, 2 * data.num_relations,
                       lambda params: pad_params(params, rows))
  shapes = jax.eval_shape(init)
  optimizer = train.make_optimizer(config)
  return jax.jit(init, out_shardings=state_shardings(mesh, optimizer, shapes.params))()


def shard_state(mesh: Mesh, optimizer: optax.GradientTransformation,
                state: train.TrainState) -> train.TrainState:
  """Places an unpadded state (e.g. from ``train.init_state`` or a single-device checkpoint) on
  ``mesh``: the entity table padded with NaN rows, its optimiser moments with zero rows (a zero
  gradient keeps both fixed), everything laid out by :func:`state_shardings`.  Unlike
  :func:`init_sharded_state` this goes through the full arrays once, on the host."""
  return place_state(to_host(state), mesh, optimizer)


# ----------------------------------------------------------------------------- host <-> devices

def put_global(host: np.ndarray, sharding: jax.sharding.Sharding) -> Array:
  """A global array laid out by ``sharding`` from a host array that every process holds in
  full.  Unlike ``jax.device_put`` it also works when ``sharding`` spans several processes
  (each process copies in only the blocks of its own devices)."""
  host = np.asarray(host)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(tree: Any) -> Any:
  """Host (numpy) copy of every array of ``tree``, also of arrays spread over several processes
  (gathered with ``multihost_utils.process_allgather``; every process gets the whole)."""
  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))
  return jax.tree.map(get, tree)


def _entity_rows(optimizer: optax.GradientTransformation, state: train.TrainState, fn):
  """``state`` with ``fn(array, is_param)`` applied to the entity table and its optimiser
  moments (``is_param`` tells which is which); everything else unchanged."""
  names = {k: k for k in state.params}
  params = {k: fn(v, True) if k == "entity" else v for k, v in state.params.items()}
  opt_state = optax.tree_map_params(
      optimizer, lambda leaf, name: fn(leaf, False) if name == "entity" else leaf,
      state.opt_state, names)
  return train.TrainState(params, opt_state, state.key, state.step)


def unpad_state(state: train.TrainState, optimizer: optax.GradientTransformation,
                num_entities: int) -> train.TrainState:
  """A host state (numpy leaves) cut to its ``num_entities`` real entity rows: the table and
  its optimiser moments.  Saved states keep the padding of the mesh that saved them; this
  makes them loadable on any other layout (:func:`place_state`)."""
  return _entity_rows(optimizer, state, lambda a, _: np.asarray(a)[:num_entities])


def place_state(state: train.TrainState, mesh: Mesh | None,
                optimizer: optax.GradientTransformation) -> train.TrainState:
  """Puts an unpadded host state on ``mesh`` (padded and laid out by :func:`state_shardings`),
  or on the default device when ``mesh`` is None."""
  if mesh is None:
    return jax.tree.map(jnp.asarray, state)
  rows = pad_entities(state.params["entity"].shape[0], mesh)
  padded = _entity_rows(optimizer, state,
                        lambda a, is_param: _pad_rows(a, rows, PAD_VALUE if is_param else 0))
  return jax.tree.map(put_global, padded, state_shardings(mesh, optimizer, padded.params))


def training_set_sharding(mesh: Mesh) -> NamedSharding:
  """The training queries ``[Qp, 3]``: rows over ``"data"`` (replicated over ``"model"``)."""
  return NamedSharding(mesh, P("data", None))


def place_training_set(mesh: Mesh, queries: np.ndarray) -> Array:
  """The training queries ``[Q, 3]`` (every process holds them) on ``mesh``, rows split over
  ``"data"``: each process copies in only the rows of its own devices, and a device holds
  ``Qp / data`` rows.  Rows are padded (with zeros) to ``Qp``, a multiple of the ``"data"``
  size; the epoch's permutation only draws from the first ``Q``, so padding is never used."""
  queries = np.asarray(queries)
  data = int(mesh.shape["data"])
  rows = -(-queries.shape[0] // data) * data
  return put_global(_pad_rows(queries, rows, 0), training_set_sharding(mesh))


# ----------------------------------------------------------------------------- training

def make_loss_fn(config: train.Config, num_entities: int):
  """``loss(padded_params, batch, key)``: ``train.batch_loss`` on the ``num_entities`` real rows."""
  # The plain LSE: the chunked scan slices the entity axis, which would gather a sharded table.
  kwargs = {**train.loss_kwargs(config), "lse_chunk": 0}

  def loss(params, batch, key=None):
    return train.batch_loss(entity_view(params, num_entities), batch, key, **kwargs)

  return loss


def make_sharded_epoch_fn(config: train.Config, num_queries: int, mesh: Mesh, *,
                          num_entities: int):
  """Like ``train.make_epoch_fn``, for a state from :func:`init_sharded_state`.

  Returns ``(epoch, steps)``; ``epoch(state, train [2T, 3]) -> (state, mean_loss)`` is jitted
  with the state's shardings as in/out shardings (donated), the training set as laid out by
  :func:`place_training_set` (rows over ``"data"``; ``num_queries`` is its real row count), each
  step's batch constrained to rows over ``"data"``.  The same permutation, step keys and optax
  updates as the single-device epoch, so the two agree up to floating-point summation order.
  ``num_entities`` is the real entity count ``N`` (the table has ``pad_entities(N, mesh)`` rows).
  The uniformity LSE is always the plain one over the row-sharded table (``config.lse_chunk`` is
  ignored): per device it holds a ``[k, Np / model]`` block.
  """
  optimizer = train.make_optimizer(config)
  num_rows = pad_entities(num_entities, mesh)
  init = train.init_fn(config, num_entities, 1,  # only the params' tree and shapes matter
                       lambda params: pad_params(params, num_rows))
  params_shape = jax.eval_shape(init).params
  shardings = state_shardings(mesh, optimizer, params_shape)
  rep = replicated(mesh)
  rows = batch_sharding(mesh)
  carry_shardings = (shardings.params, shardings.opt_state)

  def constrain(batch, carry):
    if batch is not None:
      batch = jax.lax.with_sharding_constraint(batch, rows)
    if carry is not None:
      carry = jax.lax.with_sharding_constraint(carry, carry_shardings)
    return batch, carry

  epoch, steps = train.epoch_body(config, num_queries, make_loss_fn(config, num_entities),
                                  constrain)
  return jax.jit(epoch, in_shardings=(shardings, training_set_sharding(mesh)),
                 out_shardings=(shardings, rep), donate_argnums=0), steps


# ----------------------------------------------------------------------------- inspection

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
