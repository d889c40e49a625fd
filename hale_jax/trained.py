"""Renamed :mod:`hale_jax.trained_model` after 0.1.0: ``load`` and ``TrainedModel``, a trained model
read from its run folder; ``hale_jax.trainer`` trains.

Importing a name from here raises an ImportError that names its new home; this module goes in
the next version."""

from hale_jax._renamed import renamed

__getattr__ = renamed(__name__, "hale_jax.trained_model")
