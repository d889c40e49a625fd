"""hale_jax: HaLE (Wang et al., WWW'22) knowledge-graph-embedding training in JAX.

``hale_jax.load(workdir)`` gives a trained model (``hale_jax.trained``); the pure functions
(activations, models, losses) work in any JAX or Flax code.
"""

from hale_jax._version import __version__  # noqa: F401
from hale_jax import activations, losses, models  # noqa: E402,F401
from hale_jax.activations import arctanh, get_activation, halin, hanon, identity, linear2x, xexp  # noqa: E402,F401
from hale_jax.losses import (alignment_terms, combine, hale_loss, num_sampled_queries,  # noqa: E402,F401
                             uniformity_terms)
from hale_jax.trained import TrainedModel, load  # noqa: E402,F401
from hale_jax.pipeline import train  # noqa: E402,F401
