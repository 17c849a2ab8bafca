"""A run's config from its layers, lowest first: the dataclass defaults, a named preset (``--preset``), a TOML
file (``--config``), the checkpoint's config when the run resumes one, then the flags typed; and back to TOML
(``--show-config``). The optimizers' options are merged table by table and the run's optimizer checked here,
once (``gpt2_train.optimizers``). Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gpt2_core.dataclass_utils import from_dict, read_toml
from gpt2_core.errors import UserError

from gpt2_train.config import NOT_CARRIED, PRESETS, TrainConfig, known_fields
from gpt2_train.optimizers import optimizer_plugin, optimizer_registry, option_owners


def build_config(
    preset: str | None = None,
    toml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    cls: type[TrainConfig] = TrainConfig,
    presets: dict[str, dict[str, Any]] | None = None,
) -> TrainConfig:
    """Defaults < ``preset`` < ``toml_file`` < ``overrides`` (the flags the user typed), as ``cls``; when it
    resumes a checkpoint (``--resume``), defaults < ``preset`` < ``toml_file`` < the checkpoint's config <
    ``overrides``: a resume continues the run it resumes, changed only by what the user typed (naming its
    preset or TOML file again changes nothing the run had set).

    ``preset`` names one of ``presets`` (default: :data:`PRESETS`, gpt2 train's). Optimizer options come as
    a table named after the optimizer (``[muon]`` in TOML, ``muon=dict(...)`` in a preset) or, anywhere, as
    a bare field (a typed ``--muon-lr``, an older checkpoint's), which goes to the run's optimizer. The
    run's optimizer and its options are checked here (``gpt2_train.optimizers.optimizer_plugin``) and its
    table filled in. Without ``--run-dir``, a run resumed from a checkpoint directory goes on in the
    directory that holds it.
    """
    presets = PRESETS if presets is None else presets
    layers: list[dict[str, Any]] = []
    if preset is not None:
        if preset not in presets:
            raise UserError(
                f"--preset: unknown training preset {preset!r}; choose one of: {', '.join(presets)}"
            )
        layers.append(presets[preset])
    if toml_file is not None:
        data = read_toml(toml_file)
        # Allow both a flat file and one with a [train] table.
        layers.append(data.get("train", data))
    overrides = dict(overrides or {})
    source = toml_file or "config"
    cfg = _merge(cls, [*layers, overrides], source)
    saved = _resumed_config(cfg)
    if saved is None:
        return cfg
    # A saved config may hold fields this version lacks, or (written before optimizers owned their options)
    # its optimizer's options as bare fields.
    taken = {f.name for f in dataclasses.fields(cls)}
    options = {k: v for k, v in saved.items() if k in option_owners(taken=taken)}
    carried = {**known_fields(cls, saved), **options}
    carried = {k: v for k, v in carried.items() if k not in NOT_CARRIED}
    if "run_dir" not in overrides:
        carried["run_dir"] = cfg.run_dir
        if cfg.resume not in ("auto", "latest"):
            carried["run_dir"] = str(Path(cfg.resume).parent)  # RUN_DIR/stable goes on in RUN_DIR
    return _merge(cls, [*layers, carried, overrides], source)


def _merge(cls: type[TrainConfig], layers: list[dict[str, Any]], source: str) -> TrainConfig:
    """``cls`` from ``layers`` (lowest first), optimizer options merged table by table, the run's optimizer
    checked and its table filled in; ``source`` is named in the error for an unknown key."""
    registry = optimizer_registry()
    owners = option_owners(registry, taken={f.name for f in dataclasses.fields(cls)})
    optimizer = next(
        (layer["optimizer"] for layer in reversed(layers) if "optimizer" in layer), cls.optimizer
    )
    default = next(f for f in dataclasses.fields(cls) if f.name == "optimizer_options").default_factory  # type: ignore[misc]
    tables: dict[str, dict[str, Any]] = {name: dict(table) for name, table in default().items()}
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key == "optimizer_options":
                for name, table in value.items():
                    tables.setdefault(name, {}).update(table)
            elif key in registry and isinstance(value, dict):
                tables.setdefault(key, {}).update(value)
            elif key in owners:
                tables.setdefault(optimizer, {})[key] = value
            else:
                values[key] = value
    cfg = from_dict(cls, {**values, "optimizer_options": tables}, source)
    plugin = optimizer_plugin(cfg, registry)
    cfg.optimizer_options[cfg.optimizer] = dataclasses.asdict(plugin.options)
    return cfg


def _resumed_config(cfg: TrainConfig) -> dict[str, Any] | None:
    """The config of the checkpoint ``cfg.resume`` starts from (None when it starts fresh, or the
    checkpoint records none: the trainer then says what is wrong)."""
    if not cfg.resume:
        return None
    from gpt2_train.run_dir import RunDir, read_state

    path = RunDir(cfg.run_dir).resolve(cfg.resume)
    saved = (read_state(path) or {}).get("config") if path is not None else None
    return saved if isinstance(saved, dict) else None


SHOW_CONFIG_HELP = (
    "Print the config this command would run (defaults < --preset < --config < flags; the defaults shown "
    "here are before --preset) as TOML for --config, each changed value with its default, and exit."
)
"""``--show-config``'s help, shared by gpt2 train and gpt2 sft."""


def config_toml(cfg: TrainConfig) -> str:
    """``cfg`` as a TOML file ``--config`` reads back, each value a preset, file or flag changed marked with its
    default (``--show-config``: what ``--help``'s defaults become under ``--preset``); each optimizer's
    options as its own table, the run's optimizer's first."""
    registry = optimizer_registry()
    defaults = type(cfg)()
    lines = []
    for f in dataclasses.fields(cfg):
        if f.name != "optimizer_options":
            lines.append(_toml_line(f.name, getattr(cfg, f.name), getattr(defaults, f.name)))
    names = sorted(cfg.optimizer_options, key=lambda name: name != cfg.optimizer)
    for name in names:
        plugin = registry.get(name)
        own = dataclasses.asdict(plugin.Options()) if plugin is not None else {}
        lines.append(f"\n[{name}]")
        for key, value in cfg.optimizer_options[name].items():
            lines.append(_toml_line(key, value, own.get(key, value)))
    return "\n".join(lines) + "\n"


def _toml_line(name: str, value: Any, default: Any) -> str:
    if value is None:
        return f"# {name}: unset"
    if isinstance(value, dict):  # an inline table: JSON's objects are not TOML's
        text = "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    else:
        text = json.dumps(value)
    changed = "" if value == default else f"  # default: {json.dumps(default)}"
    return f"{name} = {text}{changed}"
