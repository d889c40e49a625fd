"""The modules renamed after 0.1.0, kept one version under their old names so that an import
from one says where the name went (``hale_jax.evaluation`` → ``hale_jax.ranking``,
``hale_jax.trained`` → ``hale_jax.trained_model``, ``hale_jax.own_data`` →
``hale_jax.data_file``; CHANGELOG.md)."""

from __future__ import annotations

from typing import Any, Callable


def renamed(old: str, new: str) -> Callable[[str], Any]:
  """A module ``__getattr__`` for ``old``: ImportError naming ``new`` for any public name (a
  dunder stays an AttributeError, as tools that inspect modules expect)."""
  def __getattr__(name: str) -> Any:
    if name.startswith("__"):
      raise AttributeError(f"module {old!r} has no attribute {name!r}")
    raise ImportError(f"{old} was renamed {new} after 0.1.0: use {new}.{name}")
  return __getattr__
