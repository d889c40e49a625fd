"""Where a run's arrays live: the sharding rules over one ``("data", "model")`` mesh.

A :class:`Layout` is the only place that knows about devices.  One device is the trivial
``1 x 1`` mesh (``hale_jax.mesh``), so training, ranking and checkpoints take one path.
Everything is ``jax.jit`` with :class:`jax.sharding.NamedSharding` in/out shardings; XLA's SPMD
partitioner inserts the collectives.

The rules
---------

===============================  ================================================================
array                            sharding
===============================  ================================================================
``params["entity"] [Np, d]``     rows over ``"model"``: ``P("model", None)``
other entity tables ``[Np]``     the bias tables: replicated
relation tables                  replicated (``O(R d)``)
optimiser state                  like the parameter it belongs to (Adam's moments of the entity
                                 table are row-sharded); counters replicated
``key``, ``step``                replicated
a batch ``[B, 3]``               rows over ``"data"``
the training set ``[2T, 3]``     rows over ``"data"``: each step gathers its batch by a masked
                                 local gather and an all-reduce of the ``[B, 3]`` ids
===============================  ================================================================

Padding
-------
``jit`` shardings need the row count to divide by the ``"model"`` size, so the tables with one
row per entity (``models.ENTITY_TABLES``) are stored with ``Np = pad_entities(N, mesh)`` rows
filled with **NaN** beyond ``N``, and handled exactly:

- training: the loss sees :meth:`Layout.real_rows`, a slice to the ``N`` real rows inside the
  jitted step, so the LSE runs over real entities only (XLA masks the uneven last shard) and
  the padding rows get an exact zero gradient.  Adam's moments of those rows stay 0 and their
  update is exactly 0, so the real rows follow the single-device trajectory.
- ranking: :class:`hale_jax.ranking.Evaluator` masks the columns ``>= N`` out of the
  competition whatever their values (NaN comparing False is not enough: XLA's CPU backend may
  compile a ``max(d, 0)`` inside a loop to an instruction that turns NaN into 0).
- anything that reduces over a raw table (a norm, an export) must use :meth:`unpad_params`
  first; NaN makes forgetting it loud rather than silently biased.

The compiled step (CPU, 8 fake devices; ``tests/test_sharding.py`` checks it): on
``data:1,model:8`` four all-reduces over ``"model"`` and nothing else (the LSE's per-shard max
and sum, the entity lookups, one combined backward all-reduce of query-sized cotangents); with
``data > 1`` also one combined all-reduce over ``"data"`` of the gradients (table *shards* and
relation tables).  No collective ever all-gathers the ``[Np, d]`` table or the training set.
The data all-reduce carries the entity-shard gradient as three separate operands that XLA does
not add before reducing (~3x the bytes needed); a ``jax.shard_map`` step that sums them locally
would fix that if the data axis ever dominates.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hale_jax import mesh as meshes
from hale_jax import models, step
from hale_jax.config import Config

Array = jax.Array
PAD_VALUE = float("nan")


def pad_entities(num_entities: int, model_size: int) -> int:
  """Rows of the stored entity tables: ``num_entities`` rounded up to a multiple of the
  ``"model"`` axis size."""
  if num_entities <= 0:
    raise ValueError(f"num_entities must be positive, got {num_entities}")
  return -(-num_entities // model_size) * model_size


def _pad_rows(a: Any, rows: int, value: float) -> np.ndarray:
  a = np.asarray(a)
  return np.concatenate([a, np.full((rows - a.shape[0],) + a.shape[1:], value, a.dtype)])


def put_global(host: np.ndarray, sharding: jax.sharding.Sharding) -> Array:
  """A global array laid out by ``sharding`` from a host array that every process holds in
  full; unlike ``jax.device_put`` it works when ``sharding`` spans several processes (each
  process copies in only the blocks of its own devices)."""
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


def agree(values: Sequence[float]) -> np.ndarray:
  """``values`` of every process, ``[processes, len(values)]``: per-epoch decisions (time
  spent, stop requested, checkpoint due) must be the same everywhere, or a multi-host run
  would deadlock in its next collective.  A no-op for one process."""
  local = np.asarray(values, np.float64)[None]
  if jax.process_count() == 1:
    return local
  return np.asarray(multihost_utils.process_allgather(local[0]))


class Layout:
  """The mesh of a run and the ``N`` entities whose tables it shards."""

  def __init__(self, mesh: Mesh, num_entities: int):
    self.mesh = mesh
    self.num_entities = num_entities
    self.rows = pad_entities(num_entities, int(mesh.shape["model"]))

  @classmethod
  def for_run(cls, config: Config, num_entities: int,
              devices: Sequence[jax.Device] | None = None) -> "Layout":
    """The layout ``config.run.mesh`` asks for over ``devices`` (default: all)."""
    need = meshes.table_bytes(num_entities, config.model.dim, config.model.dtype,
                              config.optim.optimizer)
    mesh = meshes.resolve_mesh(config.run.mesh, need, devices)
    meshes.check_memory(need, mesh, f"--dim {config.model.dim} with {num_entities:,} entities")
    return cls(mesh, num_entities)

  @property
  def single_device(self) -> bool:
    return self.mesh.size == 1

  def describe(self) -> dict[str, Any]:
    """How a run is spread: the mesh spec (None: one device) and the process count."""
    spec = (None if self.single_device else
            f"data:{self.mesh.shape['data']},model:{self.mesh.shape['model']}")
    return {"mesh": spec, "processes": jax.process_count()}

  # --------------------------------------------------------------------------- shardings

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  def batch_sharding(self) -> NamedSharding:
    """Rows of a batch (any rank) over ``"data"``, the rest replicated."""
    return NamedSharding(self.mesh, P("data"))

  def param_shardings(self, params: dict[str, Any]) -> dict[str, NamedSharding]:
    """Entity rows over ``"model"``, every other table replicated."""
    return {name: NamedSharding(self.mesh, P("model", None)) if name == "entity"
            else self.replicated() for name in params}

  def state_shardings(self, optimizer: optax.GradientTransformation,
                      params: dict[str, Any]) -> step.TrainState:
    """Shardings of a state holding ``params``: every parameter-shaped subtree of the optimiser
    state (found by ``optax.tree_map_params``) like the parameters, the rest replicated."""
    shapes = jax.eval_shape(optimizer.init, params)
    p_sh = self.param_shardings(params)
    opt_sh = optax.tree_map_params(optimizer, lambda _, sh: sh, shapes, p_sh,
                                   transform_non_params=lambda _: self.replicated())
    return step.TrainState(p_sh, opt_sh, self.replicated(), self.replicated())

  # --------------------------------------------------------------------------- padding

  def pad_params(self, params: dict[str, Array]) -> dict[str, Array]:
    """``params`` with every entity table extended to :attr:`rows` rows of NaN (jittable)."""
    def pad(table):
      extra = self.rows - table.shape[0]
      fill = jnp.full((extra,) + table.shape[1:], PAD_VALUE, table.dtype)
      return jnp.concatenate([table, fill], axis=0) if extra else table
    return {k: pad(v) if k in models.ENTITY_TABLES else v for k, v in params.items()}

  def real_rows(self, params: dict[str, Array]) -> dict[str, Array]:
    """``params`` with only the ``N`` real rows of every entity table (a slice; in jit)."""
    n = self.num_entities
    return {k: v[:n] if k in models.ENTITY_TABLES and v.shape[0] != n else v
            for k, v in params.items()}

  def unpad_params(self, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Host copy of ``params`` without the padding rows (works across processes)."""
    return self.real_rows(to_host(params))

  def _entity_rows(self, optimizer, state: step.TrainState, fn) -> step.TrainState:
    """``state`` with ``fn(array, is_param)`` applied to the entity tables and their optimiser
    moments; everything else unchanged."""
    names = {k: k for k in state.params}
    params = {k: fn(v, True) if k in models.ENTITY_TABLES else v for k, v in state.params.items()}
    opt_state = optax.tree_map_params(
        optimizer, lambda leaf, name: fn(leaf, False) if name in models.ENTITY_TABLES else leaf,
        state.opt_state, names)
    return state.replace(params=params, opt_state=opt_state)

  def unpad_state(self, state: step.TrainState,
                  optimizer: optax.GradientTransformation) -> step.TrainState:
    """A host state cut to its real entity rows, loadable on any other layout."""
    return self._entity_rows(optimizer, state, lambda a, _: np.asarray(a)[:self.num_entities])

  # --------------------------------------------------------------------------- placement

  def place_params(self, params: dict[str, np.ndarray]) -> dict[str, Array]:
    """Unpadded host parameters on the mesh, padded and laid out by :meth:`param_shardings`."""
    padded = {k: _pad_rows(v, self.rows, PAD_VALUE) if k in models.ENTITY_TABLES
              else np.asarray(v) for k, v in params.items()}
    return jax.tree.map(put_global, padded, self.param_shardings(padded))

  def place_state(self, state: step.TrainState,
                  optimizer: optax.GradientTransformation) -> step.TrainState:
    """An unpadded host state on the mesh: entity tables padded with NaN rows, their optimiser
    moments with zero rows (a zero gradient keeps both fixed)."""
    padded = self._entity_rows(
        optimizer, state, lambda a, is_param: _pad_rows(a, self.rows, PAD_VALUE if is_param else 0))
    return jax.tree.map(put_global, padded, self.state_shardings(optimizer, padded.params))

  def training_set_sharding(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data", None))

  def place_training_set(self, queries: np.ndarray) -> Array:
    """The training queries ``[Q, 3]`` (every process holds them), rows split over ``"data"``
    and padded with zeros to a multiple of its size (the permutation never draws padding)."""
    queries = np.asarray(queries)
    data = int(self.mesh.shape["data"])
    rows = -(-queries.shape[0] // data) * data
    padded = queries if rows == queries.shape[0] else _pad_rows(queries, rows, 0)
    return put_global(padded, self.training_set_sharding())

  # --------------------------------------------------------------------------- arguments

  def scalar(self, value: Any, dtype: Any) -> Array:
    """A replicated scalar argument (a global array, so that it also works across processes;
    a Python number would be a compile-time constant)."""
    return put_global(np.asarray(value, dtype), self.replicated())
