"""Checks and messages of the CLI that need no heavy import (no scanpy, Ray or torch).

* :func:`quick_data_check`: a missing or foreign file, a missing obs column, an unknown control label,
  held-out values that do not exist, a missing layer -- read from the file's ``obs`` with h5py in well
  under a second, before the minutes-long import and preparation path runs.
* :func:`cli_message` / :func:`plain`: error messages that name the flags a user typed
  (``--kl-radius``, not ``kl_radius``) and show plain strings (``'stim'``, not ``np.str_('stim')``).
* :func:`document_defaults`: every option's ``--help`` line says its default.
* :func:`given_settings`: the settings a user set explicitly (YAML or flags), for ``--resume`` checks.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from experiments.cli.errors import UsageError
from experiments.cli.options import OPTION_TO_SETTING

__all__ = [
    "SETTING_TO_FLAG", "cli_message", "plain", "given_on_cli", "given_settings", "quick_data_check",
    "document_defaults",
]

#: Two-stage setting -> the flag that sets it.
SETTING_TO_FLAG = {setting: "--" + option.replace("_", "-") for option, setting in OPTION_TO_SETTING.items()}
SETTING_TO_FLAG.update(kl_radius="--kl-radius", clip_param="--clip")
_NOT_TRANSLATED = {"data"}  # "data" is an ordinary word in messages; data messages name --data themselves

_NUMPY_SCALAR = re.compile(r"np\.(?:str_|bytes_|int\d*|uint\d*|float\d*|bool_?)\((.*?)\)(?=[,\]\)}\s.;:]|$)")


def plain(message: str) -> str:
    """``np.str_('stim')`` -> ``'stim'``, ``np.int64(3)`` -> ``3``: how numpy 2 scalars print inside lists."""
    return _NUMPY_SCALAR.sub(r"\1", message).replace("np.True_", "True").replace("np.False_", "False")


def given_on_cli(args: argparse.Namespace) -> dict[str, Any]:
    """Setting -> value for every setting the user gave as a flag (not from YAML)."""
    given = {setting: getattr(args, option) for option, setting in OPTION_TO_SETTING.items()
             if getattr(args, option, None) is not None}
    for key in ("kl_radius", "clip_param"):
        if getattr(args, key, None) is not None:
            given[key] = getattr(args, key)
    return given


def cli_message(message: str, args: argparse.Namespace) -> str:
    """``message`` with the names of settings the user gave as flags replaced by those flags."""
    message = plain(message)
    for setting in sorted(given_on_cli(args), key=len, reverse=True):
        if setting in _NOT_TRANSLATED:
            continue
        message = re.sub(rf"(?<![\w-]){re.escape(setting)}(?!\w)", SETTING_TO_FLAG[setting], message)
    return message


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Setting -> value for every setting given explicitly, in ``--config`` YAML or as a flag (flags win)."""
    from experiments.cli.config_file import load_yaml

    raw = dict(load_yaml(getattr(args, "config", None)))
    raw.update(given_on_cli(args))
    return raw


# ---------------------------------------------------------------------------------------------
# the data, checked from the file's obs only
# ---------------------------------------------------------------------------------------------

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Data options that a prepared dataset fixes (they were applied when it was prepared).
_FIXED_BY_DATASET = ("ignore_values", "layer", "input_kind", "split", "holdout", "group_key", "covariate_keys",
                     "test_fraction", "n_latent", "set_composition", "set_separator")


def _flag(setting: str) -> str:
    return SETTING_TO_FLAG.get(setting, setting)


def _members(label: str, separator: str | None, control: str) -> frozenset[str]:
    """The members of a label as envs.perturbation_sets reads them (without importing it: this module stays light)."""
    if not separator or separator.lower() == "none" or separator not in label:
        return frozenset([label])
    return frozenset(part.strip() for part in label.split(separator)) - {control}


def quick_data_check(settings, *, given: dict[str, Any] | None = None, allow_dataset_dir: bool = True) -> str:
    """Refuse data that cannot work, from the file's ``obs`` only (h5py; nothing heavy is imported).

    Returns the kind of input: ``"synthetic"``, ``"h5ad"`` or ``"dataset"`` (a prepared dataset dir).
    Checks the full validation would also make, but in well under a second: the file exists and is
    HDF5; the perturbation column, the control label (after ``ignore_values``), the group and
    covariate columns, held-out values and the layer exist. Anything this reader cannot parse is
    left to the full validation. ``given``: settings given explicitly; with a prepared dataset dir
    the data options it fixes are refused.
    """
    data = settings.data
    if not isinstance(data, (str, Path)) or str(data) == "synthetic":
        return "synthetic"
    path = Path(data).expanduser()
    if not path.exists():
        raise UsageError(f"Data file not found: '{path}'. Pass --data an existing .h5ad file, a prepared dataset "
                         "directory, or 'synthetic'.")
    if path.is_dir():
        if not ((path / "arrays.npz").is_file() and (path / "meta.json").is_file()):
            raise UsageError(f"--data '{path}' is a directory but not a prepared dataset (no arrays.npz and "
                             "meta.json); pass an .h5ad file or a directory written by PreparedDataset.save.")
        if not allow_dataset_dir:
            return "dataset"
        _check_dataset_options(path, settings, given or {})
        return "dataset"
    with path.open("rb") as handle:
        magic = handle.read(8)
    if magic != _HDF5_MAGIC:
        raise UsageError(
            f"Data failed validation: '{path}' is not an .h5ad (HDF5) file. Convert it first, e.g. "
            "`anndata.read_csv(...)`/`scanpy.read_10x_h5(...)` followed by `adata.write_h5ad('cells.h5ad')`."
        )
    _check_h5ad_obs(path, settings)
    return "h5ad"


def _check_dataset_options(path: Path, settings, given: dict[str, Any]) -> None:
    """Data options given next to a prepared dataset must be the ones it was prepared with (else they'd be ignored)."""
    import json

    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        meta = {}
    split, inner = meta.get("split") or {}, meta.get("meta") or {}
    heldout = split.get("heldout_perturbations") or ([split["heldout_group"]] if split.get("heldout_group") else [])
    recorded = {"perturbation_key": inner.get("perturbation_key"), "control_value": meta.get("control_value"),
                "split": split.get("kind"), "holdout": heldout, "group_key": split.get("group_key"),
                "covariate_keys": inner.get("covariate_keys"), "input_kind": inner.get("input_kind"),
                "set_composition": inner.get("set_composition"), "set_separator": inner.get("set_separator")}
    # a run's saved dataset: its manifest holds every data option it was prepared with
    run_settings = _run_settings_of_dataset(path)
    for key in _FIXED_BY_DATASET:
        if key not in recorded and key in run_settings:
            recorded[key] = run_settings[key]
    for key in ("perturbation_key", "control_value", *_FIXED_BY_DATASET):
        if given.get(key) is None or recorded.get(key) is None:
            continue  # not given, or not known how the dataset was prepared
        value = list(given[key]) if isinstance(given[key], (list, tuple)) else given[key]
        was = recorded[key]
        if key == "covariate_keys" and split.get("group_key"):  # a group split's key is always one
            was = [k for k in was if k != split.get("group_key")]
            value = [k for k in value if k != split.get("group_key")]
        if _normal(value) == _normal(was):
            continue
        raise UsageError(f"--data '{path}' is a prepared dataset, prepared with {_flag(key)} {_shown(was)}; "
                         f"{_flag(key)} {_shown(value)} would be ignored. Drop it, or pass the .h5ad to prepare "
                         "the data anew.")


def _run_settings_of_dataset(path: Path) -> dict[str, Any]:
    """The settings of the run whose manifest names ``path`` as its dataset ({} otherwise)."""
    from experiments.runs.manifest import ManifestError, read_manifest

    try:
        manifest = read_manifest(path.parent) or {}
    except ManifestError:
        return {}
    stored = manifest.get("dataset")
    if not stored or (path.parent / stored).resolve() != path.resolve():
        return {}
    return dict(manifest.get("settings") or {})


def _normal(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return str(value) if value is not None else None


def _decode(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _obs_counts(obs, key: str) -> dict[str, int] | None:
    """label -> number of cells, read from one obs column; None when the encoding is not understood."""
    import h5py
    import numpy as np

    node = obs[key]
    if isinstance(node, h5py.Group) and "categories" in node and "codes" in node:
        categories = _decode(node["categories"][...])
        codes = np.asarray(node["codes"][...]).astype(np.int64)
        counts = np.bincount(codes[codes >= 0], minlength=len(categories))
        return {c: int(n) for c, n in zip(categories, counts) if n > 0}
    if isinstance(node, h5py.Dataset) and node.ndim == 1:
        raw = node[...]
        if raw.dtype.kind in "OSU":
            labels, counts = np.unique(np.asarray(_decode(raw), dtype=object).astype(str), return_counts=True)
        elif raw.dtype.kind in "biuf":
            labels, counts = np.unique(raw.astype(str), return_counts=True)
        else:
            return None
        return {str(c): int(n) for c, n in zip(labels, counts)}
    return None


def _check_h5ad_obs(path: Path, settings) -> None:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise UsageError(f"Data failed validation: '{path}' is an HDF5 file that cannot be opened ({exc}).") from exc
    with handle:
        obs = handle.get("obs")
        if not isinstance(obs, h5py.Group):
            return  # an old or foreign layout: the full validation reports it
        order = obs.attrs.get("column-order")
        index = obs.attrs.get("_index", "_index")
        columns = _decode(order) if order is not None else [k for k in obs.keys() if k != index]
        key, control = settings.perturbation_key, settings.control_value
        if key is None or control is None:
            raise UsageError(f"Real data needs --perturbation-key <obs column> and --control-value <control label> "
                             f"(obs columns of '{path.name}': {columns}).")
        if key not in columns or key not in obs:
            raise UsageError(f"Data failed validation: obs column '{key}' (--perturbation-key) not found. "
                             f"Available obs columns: {columns}.")
        counts = _obs_counts(obs, key)
        if counts is None:
            return
        ignored = set(settings.ignore_values)
        kept = {label: n for label, n in counts.items() if label not in ignored}
        if control not in kept:
            shown = sorted(kept, key=lambda label: -kept[label])[:20]
            raise UsageError(f"Data failed validation: control label '{control}' (--control-value) not found in "
                             f"obs['{key}']. Values present (most frequent first): {shown}.")
        perturbations = sorted(set(kept) - {control})
        if not perturbations:
            raise UsageError(f"Data failed validation: obs['{key}'] holds only the control '{control}'; at least one "
                             "perturbation is needed.")
        for option, keys in (("group_key", [settings.group_key] if settings.group_key else []),
                             ("covariate_keys", list(settings.covariate_keys))):
            missing = [k for k in keys if k not in columns]
            if missing:
                what = f"'{missing[0]}'" if len(keys) == 1 else str(missing)
                raise UsageError(f"Data failed validation: {option} {what} not found in obs ({_flag(option)}). "
                                 f"Available obs columns: {columns}.")
        holdout = [str(h) for h in settings.holdout]
        if settings.split == "perturbations" and holdout:
            # a set may be spelled in another member order than the data spell it (envs.perturbation_sets)
            keys = {_members(p, settings.set_separator, control) for p in perturbations}
            unknown = [h for h in holdout if h not in perturbations
                       and _members(h, settings.set_separator, control) not in keys]
            if unknown:
                raise UsageError(f"Data failed validation: Held-out perturbations {unknown} are not in the data "
                                 f"(--holdout). Known perturbations: {perturbations}.")
            if set(holdout) >= set(perturbations):
                raise UsageError(f"Data failed validation: Holding out {holdout} leaves no training perturbation; "
                                 f"keep at least one of {perturbations}.")
        if settings.split == "group" and settings.group_key and len(holdout) == 1:
            groups = _obs_counts(obs, settings.group_key)
            if groups is not None and holdout[0] not in groups:
                raise UsageError(f"Data failed validation: Group '{holdout[0]}' not found in "
                                 f"obs['{settings.group_key}'] (--holdout). Values present: {sorted(groups)}.")
        if settings.layer is not None:
            layers = handle.get("layers")
            names = sorted(layers.keys()) if isinstance(layers, h5py.Group) else []
            if settings.layer not in names:
                raise UsageError(f"Data failed validation: Layer '{settings.layer}' (--layer) not found; available "
                                 f"layers: {names or 'none'}. Drop --layer to use X.")


# ---------------------------------------------------------------------------------------------
# --help
# ---------------------------------------------------------------------------------------------

def _shown(value: Any) -> str:
    if value is None or value == [] or value == ():
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def document_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """Append ``(default: X)`` to every option whose help does not state its default yet.

    ``defaults``: dest -> the effective default where argparse's own is ``None`` (the options whose
    value otherwise comes from ``TwoStageSettings``); flags (store_true) are off by default and left as is.
    """
    from experiments.training.settings import TwoStageSettings

    base = TwoStageSettings()
    effective = {option: getattr(base, setting) for option, setting in OPTION_TO_SETTING.items()}
    effective.update(kl_radius=base.kl_radius, clip_param=base.clip_param)
    effective.update(defaults or {})
    for action in parser._actions:
        if (not action.option_strings or action.help in (None, argparse.SUPPRESS) or action.nargs == 0
                or action.required):  # a required option has no default to show
            continue
        if "default" in action.help.lower():
            continue
        value = action.default if action.default is not None else effective.get(action.dest)
        action.help = f"{action.help} (default: {_shown(value)})"
