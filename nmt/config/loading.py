"""Loading configs: YAML and `--set` overrides, converted by each field's type, checked strictly.

Every value is converted by its dataclass field's type (not by YAML's scalar rules),
unknown keys are rejected with the nearest valid key, and cross-field rules live in the
schema's `__post_init__`. Paths may use `${VAR}` / `${VAR:-default}`; after expansion, a
relative path is resolved against the current working directory, and the loaded config
holds absolute paths only (so the copy written into the experiment directory and into
checkpoints means the same thing from anywhere).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from nmt.config.schema import DecodeConfig, ExperimentConfig, SplitSpec
from nmt.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_path(value: str, where: str) -> str:
    """Expand `${VAR}` / `${VAR:-default}` and `~`, and make the path absolute (CWD)."""

    def sub(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in os.environ:
            return os.environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"{where}: environment variable {var} is not set",
            hint=f"export {var}=... (e.g. NMT_DATA=$(realpath ../shared/data)) or write ${{{var}:-default}}",
        )

    expanded = os.path.expanduser(_ENV.sub(sub, value))
    return str(Path(expanded).absolute())


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~"))


def _closest(key: str, options: list[str]) -> str | None:
    match = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return match[0] if match else None


def _bad(where: str, key: str, expected: str, value: Any) -> ConfigError:
    """The error for a value of the wrong kind: names the key, what it takes and the value found."""
    return ConfigError(f"{where}: {key}: expected {expected}, got {value!r}")


def _convert(value: Any, tp: Any, key: str, where: str, meta: Any) -> Any:
    """Convert a YAML or --set value to the field type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if meta.get("resolved") and _is_null(value):
        return None  # filled in by the section's __post_init__

    if origin in (typing.Union, types.UnionType):
        if _is_null(value) and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where, meta)
    if origin is Literal:
        return _convert_literal(value, args, key, where)
    if dataclasses.is_dataclass(tp):
        if tp is SplitSpec and isinstance(value, list | tuple):  # the train split's sources
            return tuple(_convert(v, tp, f"{key}[{i}]", where, meta) for i, v in enumerate(value))
        if tp is SplitSpec and isinstance(value, str) and value.lstrip().startswith("["):  # --set ...train=[...]
            return _convert(yaml.safe_load(value), tp, key, where, meta)
        if tp is SplitSpec and isinstance(value, str):
            value = {"prefix": value}
        if tp is SplitSpec and isinstance(value, dict) and "path" in value:
            value = {("prefix" if k == "path" else k): v for k, v in value.items()}
        if not isinstance(value, dict):
            raise _bad(where, key, "a mapping", value)
        return _build(tp, value, key, where)
    if origin is dict:
        if isinstance(value, str) and value.lstrip().startswith("{"):  # --set data.monolingual={de: mono.de}
            value = yaml.safe_load(value)
        if _is_null(value):  # --set data.monolingual=null: none
            value = {}
        if not isinstance(value, dict):
            raise _bad(where, key, "a mapping", value)
        # `--set data.splits.NAME=null` removes an entry
        return {str(k): _convert(v, args[1], f"{key}.{k}", where, meta) for k, v in value.items() if not _is_null(v)}
    if origin in (tuple, list):
        return _convert_sequence(value, origin, args, key, where, meta)
    return _convert_scalar(value, tp, key, where, meta)


def _convert_literal(value: Any, args: tuple[Any, ...], key: str, where: str) -> Any:
    """One of the Literal's `args` (a --set string "true"/"false" for a bool one), or ConfigError naming the nearest."""
    if isinstance(value, str) and any(isinstance(a, bool) for a in args) and value.lower() in ("true", "false"):
        value = value.lower() == "true"  # --set train.compile=true (YAML gives a bool already)
    if any(value == a and type(value) is type(a) for a in args):
        return value
    names = [str(a).lower() if isinstance(a, bool) else str(a) for a in args]
    hint = _closest(str(value), names)
    choices = ", ".join(names)
    msg = f"{where}: {key}: invalid value {value!r}; expected one of {choices}"
    raise ConfigError(msg + (f"; did you mean {hint}?" if hint else ""))


def _convert_sequence(
    value: Any, origin: Any, args: tuple[Any, ...], key: str, where: str, meta: Any
) -> tuple[Any, ...]:
    """A tuple from a YAML list (or a --set string read as YAML), each item converted by its type."""
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, (list, tuple)):
        raise _bad(where, key, f"a list of {len(args)}", value)
    if origin is tuple and len(value) != len(args):
        raise _bad(where, key, f"a list of {len(args)}", value)
    item_types = args if origin is tuple else [args[0]] * len(value)
    return tuple(_convert(v, t, key, where, meta) for v, t in zip(value, item_types))


def _convert_scalar(value: Any, tp: Any, key: str, where: str, meta: Any) -> Any:
    """A bool, int, float or str (a path field's string expanded by `expand_path`), or ConfigError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise _bad(where, key, "true or false", value)
    if tp is int:
        if isinstance(value, bool):
            raise _bad(where, key, "an integer", value)
        if isinstance(value, int):
            return value
        try:
            return int(str(value).replace("_", ""))
        except ValueError:
            raise _bad(where, key, "an integer", value) from None
    if tp is float:
        if isinstance(value, bool):
            raise _bad(where, key, "a number", value)
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _bad(where, key, "a number", value) from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise _bad(where, key, "a string", value)
        text = str(value)
        return expand_path(text, f"{where}: {key}") if meta.get("path") else text
    raise AssertionError(f"unsupported config type {tp}")


def _build(cls: type, raw: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            near = _closest(str(key), list(fields))
            msg = f"{where}: {path}: unknown key"
            if near:
                msg += f"; did you mean {prefix + '.' if prefix else ''}{near}?"
            else:
                msg += f"; valid keys: {', '.join(fields)}"
            raise ConfigError(msg)
        kwargs[key] = _convert(value, hints[key], path, where, fields[key].metadata)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        if prefix and not message.startswith(prefix.split(".")[0]):
            message = f"{prefix}: {message}"
        raise ConfigError(f"{where}: {message}") from None


def _set_override(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value, e.g. train.lr=5e-4")
    path, value = assignment.split("=", 1)
    node = raw
    parts = path.strip().split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {path}: {part} is not a section")
        node = child
    node[parts[-1]] = value  # a string: converted by the field type, not by YAML


def load_config(
    path: str | Path | None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    read_stored: Callable[[str], dict[str, Any]] | None = None,
) -> ExperimentConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply `--set` overrides.

    `read_stored`: with `train.init_from`, a checkpoint path -> its stored config
    (`nmt.checkpoint.stored_config`), whose model, vocabulary and languages the config then adopts
    (`adopt_checkpoint`); `nmt prepare` and `nmt train` pass it. Without it the config is as written.
    """
    raw: dict[str, Any] = {}
    where = str(path) if path is not None else "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"config file {p} does not exist", hint="check the path (relative to the current directory)"
            )
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            pos = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{p}:{pos}: YAML syntax error: {problem}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not valid UTF-8 ({exc.reason})") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        raw = loaded
    for assignment in overrides:
        _set_override(raw, assignment)
    if overrides and path is not None:
        where = f"{path} (with --set)"
    cfg = _build(ExperimentConfig, raw, "", where)
    if cfg.train.init_from is not None and read_stored is not None:
        stored = read_stored(cfg.train.init_from)
        cfg = _build(ExperimentConfig, adopt_checkpoint(raw, cfg, where, stored), "", where)
    check_new_experiment(cfg, where=where)
    return cfg


# model.* keys a fine-tuning config may set to other values than its checkpoint's (they shape no weight)
FINE_TUNE_FREE = ("dropout", "attention_dropout", "activation_dropout")


def adopt_checkpoint(raw: dict[str, Any], cfg: ExperimentConfig, where: str, stored: dict[str, Any]) -> dict[str, Any]:
    """`train.init_from`: the raw config with the checkpoint's model.*, vocab.* and (bilingual) languages
    (`stored`, its config) for every key the config leaves unset; a key it sets to another value than the
    checkpoint's is a ConfigError naming both (but dropout rates, which shape no weight, may change)."""
    path = str(cfg.train.init_from)
    raw = {**raw}
    sections = [("model", [k for k in stored["model"] if k != "preset"]), ("vocab", ["size", "joint"])]
    if not stored["data"].get("directions"):
        sections.append(("data", ["src_lang", "tgt_lang"]))
    for section, keys in sections:
        mine = dict(raw.get(section) or {})
        resolved = config_to_dict(getattr(cfg, section))
        for key in keys:
            theirs = stored[section].get(key)
            if key in mine and mine[key] is not None:
                if key not in FINE_TUNE_FREE and resolved.get(key) != theirs:
                    raise ConfigError(
                        f"{where}: {section}.{key} is {resolved.get(key)!r}, but the checkpoint it fine-tunes "
                        f"(train.init_from: {path}) has {theirs!r}",
                        hint=f"leave {section}.{key} out (it comes from the checkpoint) or set it to {theirs!r}",
                    )
            else:
                mine[key] = theirs
        if section == "model":
            mine.pop("preset", None)  # every size comes from the checkpoint now
            mine["preset"] = stored["model"].get("preset", "small")
        raw[section] = mine
    return raw


def check_new_experiment(cfg: ExperimentConfig, *, where: str) -> None:
    """Rules for configs that will prepare or train, but not for those stored in old checkpoints.

    A checkpoint trained before a rule existed still loads (`nmt.checkpoint` warns instead).
    """
    if cfg.model.share_embeddings == "all" and not cfg.vocab.joint:
        raise ConfigError(
            f"{where}: model.share_embeddings: all ties the source and target embeddings, but vocab.joint is "
            "false: source id i and target id i would be unrelated pieces of two vocabularies",
            hint="set vocab.joint: true (one vocabulary for both sides), or model.share_embeddings: decoder",
        )


def apply_decode_overrides(base: DecodeConfig, overrides: Sequence[str], *, where: str) -> DecodeConfig:
    """`base` (e.g. a checkpoint's stored decode section) with `decode.KEY=VALUE` overrides applied.

    Values are converted and checked like a config file's, so a bad value or an unknown
    key is a ConfigError naming the key (and the nearest valid one). Only decode.* may
    change: the rest is fixed by the checkpoint. When the length penalty changes but alpha
    does not, alpha follows the new mode's default unless the stored alpha was set to
    something other than the old mode's default.
    """
    raw: dict[str, Any] = {"decode": config_to_dict(base)}
    changed = set()
    for item in overrides:
        key = item.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if "=" in item and (section != "decode" or not name or "." in name):
            raise ConfigError(
                f"--set {key}: only decode.* settings can change when translating",
                hint="the model, vocabulary and data settings are fixed by the checkpoint",
            )
        _set_override(raw, item)
        changed.add(name)
    if "length_penalty" in changed and "alpha" not in changed:
        if base.alpha == DecodeConfig(length_penalty=base.length_penalty).alpha:
            raw["decode"]["alpha"] = None
    return _build(ExperimentConfig, raw, "", where).decode


def config_from_dict(raw: dict[str, Any], where: str = "checkpoint") -> ExperimentConfig:
    """Rebuild a config from `config_to_dict` output (e.g. stored in a checkpoint)."""
    return _build(ExperimentConfig, raw, "", where)


def config_to_dict(cfg: Any) -> Any:
    """Plain dict/list/scalar form of a config, suitable for YAML, JSON and checkpoints."""
    if isinstance(cfg, SplitSpec):
        files: Any = cfg.prefix if cfg.prefix is not None else {"src": cfg.src, "tgt": cfg.tgt}
        if cfg.plain:
            return files
        extra = {"weight": cfg.weight, **({"tag": cfg.tag} if cfg.tag is not None else {})}
        return {"path": files, **extra} if isinstance(files, str) else {**files, **extra}
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return [config_to_dict(v) for v in cfg]
    return cfg


def dump_config(cfg: ExperimentConfig) -> str:
    """YAML text of the resolved config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def diff_configs(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += diff_configs(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix]
