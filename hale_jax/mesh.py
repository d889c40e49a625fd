"""The device mesh of a run: a two-axis ``("data", "model")`` :class:`jax.sharding.Mesh`.

``--mesh`` is ``"auto"``, ``"none"`` or a spec such as ``"data:4,model:2"``.  One device is the
trivial ``1 x 1`` mesh, so the rest of the code has one path (:mod:`hale_jax.layout`).  Both
axes are ``AxisType.Auto``: XLA propagates shardings (``Explicit`` axes, ``jax.make_mesh``'s
default, would need an ``out_sharding`` on every gather from the row-sharded table).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

AXES = ("data", "model")
TABLE_MEMORY_FRACTION = 0.5  # auto: most of one device's memory the entity table may take


def mesh_axis_sizes(spec: str) -> dict[str, int]:
  """The axis sizes a spec such as ``"data:4,model:2"`` names (one or both axes).  Raises
  ValueError on unknown or repeated axes and non-positive sizes."""
  sizes: dict[str, int] = {}
  for item in spec.split(","):
    name, sep, value = (part.strip() for part in item.partition(":"))
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
  other leaves (``"model:2"`` on 8 devices is ``(4, 2)``).  Raises ValueError on a bad spec or
  a product different from ``num_devices``.
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
  neighbouring devices."""
  devices = list(jax.devices() if devices is None else devices)
  shape = parse_mesh_spec(spec, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def single_device_mesh(device: jax.Device | None = None) -> Mesh:
  """The trivial ``1 x 1`` mesh of one device (default: the first)."""
  return make_mesh("data:1,model:1", [device or jax.devices()[0]])


def table_bytes(num_entities: int, dim: int, dtype: str, optimizer: str) -> int:
  """Bytes of the entity table plus its optimiser state (Adam: two moments; Adagrad: one)."""
  return num_entities * dim * np.dtype(dtype).itemsize * (3 if optimizer == "adam" else 2)


def _device_memory(device: jax.Device) -> int | None:
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # some backends do not implement it
    return None
  return (stats or {}).get("bytes_limit")


def auto_mesh_spec(need_bytes: int, devices: Sequence[jax.Device]) -> str | None:
  """What ``--mesh=auto`` means for ``devices``: None (one device) or a spec.

  - one device, or CPU devices of a single process: None.  XLA's CPU device already uses every
    core, so several (fake) CPU devices in one process only add collectives.
  - otherwise every device on ``"data"``, unless the entity table and its optimiser state
    (``need_bytes``) would take more than ``TABLE_MEMORY_FRACTION`` of one device's memory:
    then the smallest ``"model"`` size (a divisor of the device count) that makes a shard fit.
  """
  n = len(devices)
  if n == 1 or (devices[0].platform == "cpu" and jax.process_count() == 1):
    return None
  limit = _device_memory(devices[0])
  for m in (d for d in range(1, n + 1) if n % d == 0):
    if limit is None or need_bytes / m <= TABLE_MEMORY_FRACTION * limit:
      return f"data:{n // m},model:{m}"
  return f"data:1,model:{n}"


def resolve_mesh(spec: str, need_bytes: int,
                 devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh of a run from ``--mesh``: ``"none"`` (one device), ``"auto"``
  (:func:`auto_mesh_spec`) or a spec for :func:`make_mesh` over ``devices`` (default: all
  devices of all processes).  ``need_bytes`` is the :func:`table_bytes` of the run."""
  devices = list(jax.devices() if devices is None else devices)
  spec = spec.strip()
  if spec == "auto":
    spec = auto_mesh_spec(need_bytes, devices) or "none"
  if spec == "none":
    return single_device_mesh(devices[0])
  return make_mesh(spec, devices)


def _host_available() -> int | None:
  """Bytes of host memory available now (``MemAvailable`` of ``/proc/meminfo``), or None."""
  try:
    with open("/proc/meminfo", encoding="ascii") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _gigabytes(n: float) -> str:
  return f"{n / 1e9:,.1f} GB" if n < 1e12 else f"{n / 1e12:,.1f} TB"


def check_memory(need_bytes: int, mesh: Mesh, what: str) -> None:
  """Refuses a run whose entity table and optimiser state (``need_bytes``) cannot fit: on CPU
  in the host memory available now, on accelerators in the memory of the ``"model"`` devices
  that shard the table.  ``what`` names the settings for the message.  Raises ValueError
  before anything is allocated or written."""
  device = mesh.devices.flat[0]
  if device.platform == "cpu":
    have, where = _host_available(), "this machine has available"
  else:
    limit = _device_memory(device)
    have = None if limit is None else limit * int(mesh.shape["model"])
    where = f"the {int(mesh.shape['model'])} {device.platform.upper()}(s) sharding it hold"
  if have is not None and need_bytes > have:
    raise ValueError(f"{what}: the entity table and its optimiser state need "
                     f"{_gigabytes(need_bytes)}, more than the {_gigabytes(have)} {where}; "
                     f"lower --dim, or shard the table over more devices (--mesh=model:M)")
