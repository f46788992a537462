"""Stage configuration: one dataclass per stage, loadable from YAML/TOML, overridable by CLI flags.

Every field is declared with :func:`opt`, which carries its help text (shown in ``--help``
and in the docs). :meth:`StageConfig.from_mapping` rejects unknown keys and suggests the
closest valid one, so a typo in a pipeline file fails loudly instead of being ignored.
:func:`config_options` turns a config class into click options, so the command line and
the file share one definition, and flags given on the command line win over the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import click
import yaml

from corpus.errors import ConfigError

T = TypeVar("T", bound="StageConfig")
_MISSING = dataclasses.MISSING


def opt(default: Any = _MISSING, *, help: str, choices: tuple[str, ...] | None = None,
        flag: str | None = None, cli: bool = True, factory: Callable[[], Any] | None = None) -> Any:
    """Declare a config field with its help text (and optional choices / flag name)."""
    meta = {"help": help, "choices": choices, "flag": flag, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def closest(key: str, valid: typing.Iterable[str]) -> str:
    """A ``; did you mean 'x'?`` suffix for the nearest valid key, or '' when none is close."""
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f"; did you mean '{match[0]}'?" if match else ""


def _base_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else str
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if value is None:
        return None
    base = _base_type(tp)
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            raise ValueError(f"expected true or false, got {value!r}")
        if base in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            return base(value)
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return str(value)
        if origin in (list, tuple):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            (inner,) = typing.get_args(base)[:1] or (str,)
            return [_coerce(v, inner, where) for v in value]
        if origin is dict or base is dict:
            if isinstance(value, str):
                # "web=1.0,book=2.0" style mappings on the command line
                out: dict[str, Any] = {}
                for part in value.split(","):
                    if not part.strip():
                        continue
                    if "=" not in part:
                        raise ValueError(f"expected key=value pairs separated by commas, got {part!r}")
                    k, v = part.split("=", 1)
                    out[k.strip()] = _parse_scalar(v.strip())
                return out
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {type(value).__name__}")
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return value


def _parse_scalar(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


@dataclasses.dataclass
class StageConfig:
    """Base class of every stage config. Subclasses are plain dataclasses using :func:`opt`."""

    section: ClassVar[str] = "stage"

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls: type[T], data: dict[str, Any], source: str = "config") -> T:
        """Build from a mapping; unknown keys and bad values raise ConfigError naming ``source``."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of options, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for raw_key, value in data.items():
            key = str(raw_key).replace("-", "_")
            if key not in fields:
                valid = f"valid keys: {', '.join(sorted(fields))}" if fields else "this stage takes no options"
                raise ConfigError(
                    f"{source}: unknown key '{raw_key}' for {cls.section}{closest(key, fields)} ({valid})"
                )
            f = fields[key]
            value = _coerce(value, hints[key], f"{source}: key '{raw_key}'")
            choices = f.metadata.get("choices")
            if choices and value is not None and value not in choices:
                raise ConfigError(
                    f"{source}: key '{raw_key}' must be one of {', '.join(choices)}, got {value!r}"
                    f"{closest(str(value), choices)}"
                )
            kwargs[key] = value
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is _MISSING
                   and f.default_factory is _MISSING]  # type: ignore[misc]
        if missing:
            raise ConfigError(f"{source}: missing required key(s) {', '.join(missing)} for {cls.section}")
        try:
            obj = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from exc
        obj.validate()
        return obj

    def validate(self) -> None:
        """Subclasses check cross-field rules here and raise ConfigError."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self: T, **changes: Any) -> T:
        obj = dataclasses.replace(self, **changes)
        obj.validate()
        return obj


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or TOML file into a mapping; errors name the file and the line."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"{p}: unknown config format '{p.suffix}'; use .yaml, .yml or .toml")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of options")
    return data


EXECUTOR_SECTION = "executor"


def resolve(cls: type[T], config_file: str | None, overrides: dict[str, Any], *,
            section: str | None = None) -> T:
    """Config from file, then overridden by non-None CLI values.

    A command's ``--config`` file holds the stage's options, either at the top level or
    under the stage's own section name, plus an optional ``executor:`` section for the
    runner. So ``section="executor"`` reads only that section (absent = empty), and any
    other section reads its own key when present, else the top level without ``executor``.
    """
    data: dict[str, Any] = {}
    source = "command line"
    if config_file:
        raw = load_config_file(config_file)
        source = str(config_file)
        if section == EXECUTOR_SECTION:
            data = raw.get(EXECUTOR_SECTION) or {}
        elif section and isinstance(raw.get(section), dict):
            data = raw[section]
        else:
            data = {k: v for k, v in raw.items() if k != EXECUTOR_SECTION}
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a mapping of options")
    data = dict(data)
    for k, v in overrides.items():
        if v is None or (isinstance(v, tuple) and not v):
            continue
        data[k] = list(v) if isinstance(v, tuple) else v
    return cls.from_mapping(data, source=source)


def config_options(cls: type[StageConfig], exclude: typing.Iterable[str] = ()) -> Callable[[Callable], Callable]:
    """click decorator adding one ``--kebab-name`` option per config field (default None).

    Defaults are left to the dataclass so that a value from ``--config`` is only overridden
    by flags the user actually typed.
    """
    skip = set(exclude)
    hints = typing.get_type_hints(cls)

    def deco(fn: Callable) -> Callable:
        for f in reversed(dataclasses.fields(cls)):
            if f.name in skip or not f.metadata.get("cli", True):
                continue
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            base = _base_type(hints[f.name])
            default = f.default if f.default is not _MISSING else (
                f.default_factory() if f.default_factory is not _MISSING else None)  # type: ignore[misc]
            helptext = f.metadata.get("help", "")
            if default not in (None, "", [], {}):
                shown = default if not isinstance(default, list) else ",".join(map(str, default))
                if isinstance(default, dict):
                    shown = ",".join(f"{k}={v}" for k, v in default.items())
                helptext += f"  [default: {shown}]"
            kw: dict[str, Any] = {"default": None, "help": helptext}
            if base is bool:
                name = f.name.replace("_", "-")
                decl = [f"--{name}/--no-{name}"]
                kw["default"] = None
            else:
                decl = [flag]
                choices = f.metadata.get("choices")
                if choices:
                    kw["type"] = click.Choice(list(choices))
                elif base in (int, float):
                    kw["type"] = base
            fn = click.option(*decl, f.name, **kw)(fn)
        return fn

    return deco
