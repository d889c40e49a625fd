"""What XLA says of a compiled function: its cost and memory analyses, in one shape whatever
the jax version and backend.  Shared by ``benchmarks.step_time`` and ``benchmarks.scale``."""

from __future__ import annotations

import math


def cost_numbers(compiled) -> tuple[float | None, float | None]:
  """``(flops, bytes accessed)`` from ``compiled.cost_analysis()``: a dict, a list of dicts
  (one per computation, older jax) or None, depending on the version and backend."""
  try:
    ca = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - some backends raise instead of returning None
    return None, None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  if not ca:
    return None, None

  def get(key):
    value = ca.get(key)
    return float(value) if value is not None and math.isfinite(value) and value > 0 else None

  return get("flops"), get("bytes accessed")


def memory_numbers(compiled) -> dict[str, int | None]:
  """Bytes from ``compiled.memory_analysis()``: temporaries, the backend's own peak (None where
  it gives none), arguments, outputs, donated aliases, and the footprint argument + output +
  temp - alias (what the call holds at most); all None where there is no analysis."""
  try:
    ma = compiled.memory_analysis()
  except Exception:  # noqa: BLE001
    ma = None
  keys = ("temp_bytes", "peak_bytes", "footprint_bytes", "argument_bytes", "output_bytes",
          "alias_bytes")
  if ma is None:
    return dict.fromkeys(keys)
  arg, out = ma.argument_size_in_bytes, ma.output_size_in_bytes
  temp, alias = ma.temp_size_in_bytes, ma.alias_size_in_bytes
  peak = getattr(ma, "peak_memory_in_bytes", None)
  return dict(zip(keys, (int(temp), int(peak) if peak else None, int(arg + out + temp - alias),
                         int(arg), int(out), int(alias))))
