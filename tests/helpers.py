"""What several test files share and no benchmark needs."""

from __future__ import annotations


def launcher():
  """``hale_jax.launch`` with its flags defined on absl's global FLAGS (once per process: the
  launcher defines them only when it runs as a command)."""
  from hale_jax import launch  # pylint: disable=import-outside-toplevel
  if "max_epochs" not in launch.FLAGS:
    launch.define_flags()
  return launch
