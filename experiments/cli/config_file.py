"""``--config`` YAML files and command-line options merged into validated two-stage settings."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments.cli.errors import UsageError
from experiments.cli.options import OPTION_TO_SETTING

__all__ = ["load_yaml", "settings_from_args"]


def load_yaml(path: str | None) -> dict[str, Any]:
    """The mapping in a ``--config`` file (``{}`` without one); a missing or malformed file is a UsageError."""
    if not path:
        return {}
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"--config file not found: '{p}'.")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"--config '{p}' is not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"--config '{p}' must hold a mapping of settings, got {type(loaded).__name__}.")
    return loaded


def settings_from_args(
    args: argparse.Namespace, *, extra_keys: Iterable[str] = (), overrides: dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
):
    """(validated two-stage settings, the YAML's ``extra_keys`` such as sweep grids).

    Precedence: ``TwoStageSettings`` defaults < the command's own ``defaults`` < YAML < command-line
    options < ``overrides``.
    """
    from experiments.training.settings import (
        CELLSTATE_ENV,
        SettingsError,
        TwoStageSettings,
        infer_split,
    )

    raw = {**(defaults or {}), **load_yaml(getattr(args, "config", None))}
    other = {k: raw.pop(k) for k in list(raw) if k in set(extra_keys)}
    for option, key in OPTION_TO_SETTING.items():
        value = getattr(args, option, None)
        if value is not None:
            raw[key] = value
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    raw["split"] = infer_split(raw)
    try:
        settings = TwoStageSettings.from_mapping(raw)
    except (SettingsError, TypeError) as exc:
        raise UsageError(str(exc)) from exc
    if settings.env != CELLSTATE_ENV and getattr(args, "data", None) is not None:
        raise UsageError(f"--data applies to the CellState env only, but env is {settings.env!r}.")
    return settings, other
