"""hale_jax: HaLE (Wang et al., WWW'22) knowledge-graph-embedding training in JAX."""

__version__ = "0.1.0"

from hale_jax import activations, losses, models  # noqa: E402,F401
from hale_jax.activations import arctanh, get_activation, halin, hanon, identity, linear2x, xexp  # noqa: E402,F401
from hale_jax.losses import (alignment_terms, combine, hale_loss, num_sampled_queries,  # noqa: E402,F401
                             uniformity_terms)
