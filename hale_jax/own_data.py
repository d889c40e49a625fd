"""Renamed :mod:`hale_jax.data_file` after 0.1.0: a graph given as one file, ``--data_file``,
split into train, valid and test.

Importing a name from here raises an ImportError that names its new home; this module goes in
the next version."""

from hale_jax._renamed import renamed

__getattr__ = renamed(__name__, "hale_jax.data_file")
