"""Renamed :mod:`hale_jax.ranking` after 0.1.0: the filtered ranking, ``Evaluator``;
``hale_jax.evaluate`` is the command that uses it.

Importing a name from here raises an ImportError that names its new home; this module goes in
the next version."""

from hale_jax._renamed import renamed

__getattr__ = renamed(__name__, "hale_jax.ranking")
