"""The run config (hale_jax.config) and the flags generated from it (hale_jax.options).

Everything here is pure Python: no training, no compilation.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import jax
import pytest
from absl import flags

from hale_jax import (activations, distances, models, objective, ogb_eval, optim, options,
                      regularizers, rundir)
from hale_jax import config as config_lib
from hale_jax.config import Config
from tests import helpers

REPO = Path(__file__).resolve().parents[1]
FLAGFILES = sorted(p.name for p in (REPO / "launch").glob("*.flags"))

# The flags of the launcher before the config redesign (d34298a^): name -> (absl type, default).
# A flagfile or a script written for it must keep working.
OLD_LAUNCHER_FLAGS = {
    "dataset": ("string", "synthetic"), "data_dir": ("string", None),
    "workdir": ("string", None), "overwrite": ("bool", False),
    "model": ("string enum", "RotL"), "dim": ("int", 32),
    "activation": ("string enum", "hanon"), "beta": ("float", None),
    "gamma": ("float", 10.0), "lam": ("float", 0.3), "alpha": ("float", 0.1),
    "pos_square": ("bool", True), "rel_scale": ("bool", True),
    "loss": ("string enum", "hale"), "num_negatives": ("int", 256),
    "adv_temperature": ("float", 1.0), "margin": ("float", 0.0),
    "bias": ("string enum", "auto"), "nonneg_weight": ("float", 0.1),
    "lse_chunk": ("int", None), "batch_size": ("int", 1024),
    "optimizer": ("string enum", "adam"), "learning_rate": ("float", 5e-3),
    "lr_schedule": ("string enum", "constant"), "init_scale": ("float", 1e-3),
    "rotation_init": ("string enum", "uniform"), "seed": ("int", 0),
    "max_seconds": ("float", 30.0), "max_epochs": ("int", 0), "eval_every": ("int", 0),
    "eval_chunk": ("int", 256), "checkpoint_every_epochs": ("int", 0),
    "checkpoint_every_seconds": ("float", 300.0), "max_to_keep": ("int", 3),
    "mesh": ("string", "auto"), "matmul": ("string enum", "float32"),
    "dtype": ("string enum", "float32"), "coordinator_address": ("string", None),
    "num_processes": ("int", None), "process_id": ("int", None),
    "distributed": ("bool", False),
}

# The allowed values of every enum field, from the registries of the modules behind them.
REGISTRIES = {
    "model": models.MODEL_NAMES,
    "rotation_init": models.ROTATION_INITS,
    "dtype": ("float32", "float64"),
    "loss": objective.LOSSES,
    "activation": activations.CHOICES,
    "bias": objective.BIAS_MODES,
    "matmul": distances.MATMUL_MODES,
    "optimizer": tuple(optim.OPTIMIZERS),
    "lr_schedule": optim.LR_SCHEDULES,
    "lse": objective.LSE_FORMS,
    "regularizer": regularizers.REGULARIZERS,
    "eval_protocol": tuple(ogb_eval.RANKING),  # each protocol says what it ranks by
}

# Settings a resumed run may change (how long, how often, where, how the same value is
# computed) and settings that define what is trained, which it may not.
RESUMABLE = {"lse_chunk", "lse", "max_seconds", "max_epochs", "eval_every", "eval_chunk",
             "patience", "min_delta", "checkpoint_every_epochs", "checkpoint_every_seconds",
             "max_to_keep", "mesh"}
FIXED = {"model", "dim", "init_scale", "rotation_init", "dtype", "loss", "activation", "beta",
         "gamma", "lam", "alpha", "pos_square", "rel_scale", "num_negatives",
         "adv_temperature", "margin", "bias", "nonneg_weight", "matmul", "optimizer",
         "learning_rate", "lr_schedule", "batch_size", "seed", "eval_protocol"}


def _all_fields(cls=Config):
  return [(group, f) for group, kind in config_lib.group_types(cls).items()
          for f in dataclasses.fields(kind)]


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad, message", [
    (dict(model="ComplEx"), r"unknown model 'ComplEx'; choose one of TransE, DistMult"),
    (dict(dim=0), r"dim must be positive, got 0"),
    (dict(model="RotE", dim=7), r"RotE rotates or reflects 2-d planes, so dim must be even, "
                                r"got 7"),
    (dict(model="RefH", dim=5), r"RefH rotates or reflects 2-d planes, so dim must be even"),
    (dict(rotation_init="zeros"), r"unknown rotation_init 'zeros'; choose one of uniform"),
    (dict(dtype="float16"), r"unknown dtype 'float16'; choose one of float32, float64"),
    (dict(loss="margin"), r"unknown loss 'margin'; choose one of hale, samneg"),
    (dict(activation="relu"), r"unknown activation 'relu'; choose one of hanon"),
    (dict(bias="always"), r"unknown bias 'always'; choose one of auto, learn, none"),
    (dict(matmul="fp8"), r"unknown matmul 'fp8'; choose one of float32, tf32, bf16"),
    (dict(alpha=0.0), r"alpha must lie in \(0, 1\], got 0.0"),
    (dict(alpha=1.5), r"alpha must lie in \(0, 1\], got 1.5"),
    (dict(num_negatives=0), r"num_negatives must be positive, got 0"),
    (dict(lse_chunk=-1), r"lse_chunk must be >= 0, got -1"),
    (dict(loss="nonneg", bias="learn"), r"--bias=learn applies to the losses .*not 'nonneg'"),
    (dict(optimizer="sgd"), r"unknown optimizer 'sgd'; choose one of adam, adagrad"),
    (dict(lr_schedule="step"), r"unknown lr_schedule 'step'; choose one of constant, cosine"),
    (dict(batch_size=0), r"batch_size must be positive, got 0"),
    (dict(learning_rate=0.0), r"learning_rate must be positive, got 0.0"),
    (dict(max_seconds=0, max_epochs=0), r"set a budget: --max_seconds > 0 or --max_epochs > 0"),
    (dict(eval_every=-1), r"eval_every must be >= 0, got -1"),
    (dict(patience=-2), r"patience must be >= 0, got -2"),
    (dict(eval_chunk=0), r"eval_chunk must be positive, got 0"),
    (dict(max_to_keep=0), r"max_to_keep must be positive, got 0"),
    (dict(mesh="rows:2"), r"bad mesh spec 'rows:2': unknown axis 'rows'"),
    (dict(mesh="data:0"), r"size of 'data' must be positive, got 0"),
    (dict(lam=0.3, colour="red"), r"unknown config field\(s\): colour"),
])
def test_a_bad_config_is_one_clear_value_error(bad, message):
  with pytest.raises(ValueError, match=message) as err:
    Config.make(**bad)
  assert "\n" not in str(err.value)


def test_float64_needs_64_bit_jax():
  with jax.enable_x64(False):
    with pytest.raises(ValueError, match="dtype float64 needs 64-bit JAX: set JAX_ENABLE_X64=1"):
      Config.make(dtype="float64")
  with jax.enable_x64(True):
    assert Config.make(dtype="float64").model.dtype == "float64"


def test_model_names_are_case_insensitive_and_mesh_specs_are_checked_for_syntax_only():
  assert Config.make(model="rotl").model.model == "rotl"
  # 16 devices do not exist here: the device count is checked when a run starts.
  assert Config.make(mesh="data:8,model:2").run.mesh == "data:8,model:2"
  for spec in ("auto", "none", " auto "):
    Config.make(mesh=spec)


# ----------------------------------------------------------------------------- the tree

def test_make_replace_flat_round_trip():
  config = Config.make(model="RotE", dim=8, lam=1.0, lr_schedule="cosine", max_epochs=2,
                       max_seconds=0, mesh="none")
  assert config.model.model == "RotE" and config.model.dim == 8
  assert config.objective.lam == 1.0 and config.optim.lr_schedule == "cosine"
  assert config.budget.max_epochs == 2 and config.run.mesh == "none"
  flat = config.flat()
  assert Config.make(**flat) == config
  assert json.loads(json.dumps(flat)) == flat  # what run.json and results.json store
  assert list(flat) == [f.name for _, f in _all_fields()]  # group order, declaration order
  changed = config.replace(lam=2.0, seed=3)
  assert changed.objective.lam == 2.0 and changed.optim.seed == 3
  assert {k for k in flat if changed.flat()[k] != flat[k]} == {"lam", "seed"}
  assert config.objective.lam == 1.0  # unchanged
  with pytest.raises(ValueError, match="dim must be positive"):
    config.replace(dim=0)  # validated again
  with pytest.raises(ValueError, match="unknown config field"):
    config.replace(dimension=4)
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.model.dim = 4  # type: ignore[misc]
  assert Config() == Config.make()
  assert Config.make().num_sampled == 103  # ceil(0.1 * 1024)


def test_field_names_are_unique_across_groups():
  names = [f.name for _, f in _all_fields()]
  assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
  owners = config_lib.field_owners()
  assert set(owners) == set(names)
  assert set(owners.values()) == set(config_lib.GROUPS) == set(config_lib.group_types())
  for group, f in _all_fields():
    assert owners[f.name] == group
    assert f.metadata["help"], f"{f.name} has no help text"


def test_resumable_fields():
  free = config_lib.resumable_fields()
  assert free == {f.name for _, f in _all_fields() if f.metadata["resumable"]}
  assert RESUMABLE <= free, RESUMABLE - free
  assert not FIXED & free, FIXED & free
  config = Config.make(max_epochs=2, max_seconds=0)
  old = {"config": config.flat(), "vocab_sha256": "x"}
  for name, value in [("max_epochs", 5), ("max_seconds", 60.0), ("mesh", "none"),
                      ("lse_chunk", 0), ("eval_every", 3), ("max_to_keep", 1)]:
    new = {"config": config.replace(**{name: value}).flat(), "vocab_sha256": "x"}
    assert rundir.mismatch(old, new) == [], name
  for name, value in [("lam", 1.0), ("dim", 8), ("lr_schedule", "cosine"), ("seed", 1)]:
    new = {"config": config.replace(**{name: value}).flat(), "vocab_sha256": "x"}
    assert rundir.mismatch(old, new) == [f"{name} ({config.flat()[name]!r} vs {value!r})"]
  assert rundir.mismatch(old, {**old, "vocab_sha256": "y"})[0].startswith("dataset vocabulary")


# ----------------------------------------------------------------------------- flags

def _config_flags(config_cls=Config) -> flags.FlagValues:
  fv = flags.FlagValues()
  options.define_config_flags(fv, config_cls)
  return fv


def test_every_field_has_a_flag_of_its_type_default_and_choices():
  fv = _config_flags()
  fields = _all_fields()
  assert sorted(fv) == sorted(f.name for _, f in fields)
  types = {bool: "bool", int: "int", float: "float", str: "string"}
  for _, f, kind in options.config_fields():
    flag = fv[f.name]
    assert flag.default == f.default, f.name
    assert flag.help.endswith(f.metadata["help"]), f.name  # enums prefix their choices
    choices = f.metadata["choices"]
    if choices is None:
      assert flag.flag_type() == types[kind], f.name
    else:
      assert flag.flag_type() == "string enum", f.name
      assert list(flag.parser.enum_values) == list(choices), f.name
  enums = {f.name for _, f in fields if f.metadata["choices"] is not None}
  assert enums == set(REGISTRIES), "give each enum field its registry in REGISTRIES"
  for name, registry in REGISTRIES.items():
    assert list(fv[name].parser.enum_values) == list(registry), name
  # the registries that grow as the library does: docs/flags.md names them instead of listing
  # their values (a model, loss or activation added leaves it current), and the name is right
  named = {f.name: f.metadata["registry"] for _, f in fields if f.metadata["registry"]}
  assert named == {"model": "hale_jax.models.MODEL_NAMES", "loss": "hale_jax.objective.LOSSES",
                   "activation": "hale_jax.activations.CHOICES"}
  for name, path in named.items():
    module, attr = path.rsplit(".", 1)
    assert getattr(importlib.import_module(module), attr) is REGISTRIES[name], name
  markdown = options.flags_markdown()
  assert "`hale_jax.models.MODEL_NAMES`" in markdown and "RotH, RefH, AttH." not in markdown
  assert "One of: float32, float64." in markdown  # a fixed enum is still listed


def test_flags_give_the_config_and_refuse_bad_values():
  fv = _config_flags()
  fv(["prog", "--model=RotE", "--dim=8", "--lam=1.5", "--nopos_square", "--lse_chunk=0",
      "--max_epochs=3", "--max_seconds=0", "--mesh=none"])
  config = options.config_from_flags(fv)
  assert config == Config.make(model="RotE", dim=8, lam=1.5, pos_square=False, lse_chunk=0,
                               max_epochs=3, max_seconds=0, mesh="none")
  with pytest.raises(flags.IllegalFlagValueError):
    _config_flags()(["prog", "--loss=margin"])
  with pytest.raises(flags.IllegalFlagValueError):
    _config_flags()(["prog", "--dim=eight"])
  bad = _config_flags()
  bad(["prog", "--max_seconds=0"])  # a valid flag, an invalid combination
  with pytest.raises(ValueError, match="set a budget"):
    options.config_from_flags(bad)


@dataclasses.dataclass(frozen=True)
class _TemperedObjective(config_lib.ObjectiveConfig):
  """An objective group with one extra field."""
  temperature: float = config_lib.option(0.5, "Softmax temperature of a new loss.",
                                         resumable=True)
  schedule_name: str = config_lib.option("flat", "A new enum.", choices=("flat", "steep"))


@dataclasses.dataclass(frozen=True)
class _TemperedConfig(Config):
  objective: _TemperedObjective = dataclasses.field(default_factory=_TemperedObjective)


@dataclasses.dataclass(frozen=True)
class _ClashingObjective(config_lib.ObjectiveConfig):
  dim: int = config_lib.option(3, "Declared already by the model group.")


@dataclasses.dataclass(frozen=True)
class _ClashingConfig(Config):
  objective: _ClashingObjective = dataclasses.field(default_factory=_ClashingObjective)


def test_a_field_added_by_a_subclass_gets_its_flag():
  fv = _config_flags(_TemperedConfig)
  assert set(fv) == {f.name for _, f in _all_fields()} | {"temperature", "schedule_name"}
  assert fv["temperature"].flag_type() == "float" and fv["temperature"].default == 0.5
  assert fv["temperature"].help == "Softmax temperature of a new loss."
  assert fv["schedule_name"].parser.enum_values == ["flat", "steep"]
  fv(["prog", "--temperature=0.25", "--schedule_name=steep", "--lam=2"])
  config = options.config_from_flags(fv, _TemperedConfig)
  assert isinstance(config, _TemperedConfig)
  assert isinstance(config.objective, _TemperedObjective)
  assert config.objective.temperature == 0.25 and config.objective.schedule_name == "steep"
  assert config.objective.lam == 2.0
  assert config.flat()["temperature"] == 0.25
  assert config.replace(temperature=1.0).objective.temperature == 1.0
  assert "temperature" in config_lib.resumable_fields(_TemperedConfig)
  assert "temperature" not in config_lib.resumable_fields()
  with pytest.raises(ValueError, match="unknown schedule_name 'wavy'"):
    _TemperedConfig.make(schedule_name="wavy")  # the base group's checks cover new enums
  with pytest.raises(TypeError, match="'dim' is declared in both 'model' and 'objective'"):
    _config_flags(_ClashingConfig)


# ----------------------------------------------------------------------------- the launcher

def test_every_flag_of_the_old_launcher_still_exists():
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)  # raises DuplicateFlagError if a name were taken twice
  for name, (kind, default) in OLD_LAUNCHER_FLAGS.items():
    assert name in fv, f"--{name} is gone"
    assert fv[name].flag_type() == kind, (name, fv[name].flag_type())
    assert fv[name].default == default, (name, fv[name].default)


def _read_flagfile(path: Path) -> dict[str, str]:
  out = {}
  for line in path.read_text().splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
      name, _, value = line[2:].partition("=")
      out[name] = value
  return out


def _typed(name: str, text: str):
  kinds = {f.name: kind for _, f, kind in options.config_fields()}
  kind = kinds[name]
  if kind is bool:
    return text.lower() in ("true", "1")
  return kind(text)


@pytest.mark.parametrize("flagfile", FLAGFILES)
def test_flagfiles_give_the_launchers_config(flagfile):
  path = REPO / "launch" / flagfile
  written = _read_flagfile(path)
  fv = options.parse_flagfile(str(path))
  config = options.config_from_flags(fv)
  # What the file says, field by field; everything else at its default.
  fields = config_lib.field_owners()
  expected = Config.make(**{k: _typed(k, v) for k, v in written.items() if k in fields})
  assert config == expected
  assert fv["dataset"].present and fv["dataset"].value == written["dataset"]
  assert config.model.model == "RotL" and config.budget.max_seconds > 0
  assert set(written) <= set(fv), set(written) - set(fv)
  # The launcher itself reads the same file into the same config.
  launch = helpers.launcher()
  try:
    launch.FLAGS(["launch", f"--flagfile={path}"])
    assert options.config_from_flags(launch.FLAGS) == config
    assert launch.FLAGS["dataset"].value == written["dataset"]
  finally:
    launch.FLAGS.unparse_flags()
  # Later flags override the file.
  assert options.config_from_flags(
      options.parse_flagfile(str(path), ["--dim=8", "--max_epochs=2"])) == \
      expected.replace(dim=8, max_epochs=2)


def test_default_config_is_what_the_launcher_runs_with_no_flags():
  fv = flags.FlagValues()
  options.define_config_flags(fv)
  options.define_launch_flags(fv)
  fv(["prog"])
  assert options.config_from_flags(fv) == Config()
  assert fv["dataset"].value == "synthetic" and fv["workdir"].value is None


PLUS_FLAGFILES = sorted(p.name for p in (REPO / "launch" / "plus").glob("*.flags"))


@pytest.mark.parametrize("flagfile", PLUS_FLAGFILES)
def test_plus_flagfiles_change_only_what_they_say(flagfile, monkeypatch):
  """A HaLE+ flagfile is the paper's flagfile of its dataset and then the flags it lists below
  its comments; each change is explained in a comment naming the flag."""
  monkeypatch.chdir(REPO)  # the nested --flagfile line is relative to the repository root
  path = REPO / "launch" / "plus" / flagfile
  text = path.read_text()
  changes = _read_flagfile(path)  # every flag the file sets below its comments
  assert changes.pop("flagfile") == f"launch/{flagfile}"
  paper = options.config_from_flags(options.parse_flagfile(f"launch/{flagfile}"))
  plus = options.config_from_flags(options.parse_flagfile(str(path)))
  assert changes and plus == paper.replace(**{k: _typed(k, v) for k, v in changes.items()})
  comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
  for name in changes:
    assert f"--{name}" in comments, (flagfile, name)


HYPERBOLIC_FLAGFILES = sorted(p.name for p in (REPO / "launch" / "hyperbolic").glob("*.flags"))


@pytest.mark.parametrize("flagfile", HYPERBOLIC_FLAGFILES)
def test_hyperbolic_flagfiles_change_only_what_they_say(flagfile, monkeypatch):
  """A hyperbolic model's flagfile is the paper's flagfile of its dataset (its budget
  included) and then the flags it lists below its comments, each explained in a comment; the
  model is one of the hyperbolic ones."""
  monkeypatch.chdir(REPO)
  path = REPO / "launch" / "hyperbolic" / flagfile
  changes = _read_flagfile(path)
  base = changes.pop("flagfile")
  assert base in {f"launch/{name}" for name in FLAGFILES}
  paper = options.config_from_flags(options.parse_flagfile(base))
  cfg = options.config_from_flags(options.parse_flagfile(str(path)))
  assert cfg == paper.replace(**{k: _typed(k, v) for k, v in changes.items()})
  assert cfg.model.model in models.HYPERBOLIC_MODELS
  assert cfg.budget.max_seconds == paper.budget.max_seconds
  comments = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
  for name in changes:
    assert f"--{name}" in comments, (flagfile, name)
