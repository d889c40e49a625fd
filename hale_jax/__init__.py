"""hale_jax: HaLE (Wang et al., WWW'22) knowledge-graph-embedding training in JAX.

``hale_jax.train(...)`` trains as the launcher does (``hale_jax.pipeline``) and
``hale_jax.load(workdir)`` gives a trained model (``hale_jax.trained_model``); the pure functions
(activations, models, losses, ``uniformity_lse``) work in any JAX code, and
``hale_jax.KGEmbedding`` (``hale_jax.nn``) in Flax NNX code.  ``train``, ``load``,
``TrainedModel`` and ``KGEmbedding`` are imported when first used, so ``import hale_jax``
stays light (no checkpointing library, no Flax).
"""

from __future__ import annotations

import importlib
from typing import Any

from hale_jax._version import __version__  # noqa: F401
from hale_jax import activations, losses, models  # noqa: E402,F401
from hale_jax.activations import (Activation, get_activation, halin,  # noqa: E402,F401
                                  hanon, identity, linear2x, two_arctanh, xexp)
from hale_jax.chunked import uniformity_lse  # noqa: E402,F401
from hale_jax.losses import (alignment_terms, combine, hale_loss,  # noqa: E402,F401
                             num_sampled_queries, uniformity_terms)

# Public names imported on first use: {name: module}, and the modules behind them.
_LAZY = {"load": "hale_jax.trained_model", "TrainedModel": "hale_jax.trained_model",
         "KGEmbedding": "hale_jax.nn", "train": "hale_jax.pipeline"}
_LAZY_MODULES = ("trained_model", "nn")


def __getattr__(name: str) -> Any:
  if name in _LAZY_MODULES:
    return importlib.import_module(f"{__name__}.{name}")
  if name in _LAZY:
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
  return activations.deprecated_attribute(__name__, name)


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))
