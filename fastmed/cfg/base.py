"""Config dataclasses, the command table, and option parsing.

Options reach a config in three ways, later ones winning:
defaults → ``--config FILE.yaml`` (``yaml.safe_load``) → command-line options,
written ``--name value``, ``--name=value`` or ``name=value`` (dashes and
underscores are interchangeable). A boolean option alone (``--resume``) means
true. Unknown options are errors with a suggestion. Values are converted by
the field's type; nothing is ever ``eval``-ed.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from fastmed.errors import ConfigError

_MISSING = dataclasses.MISSING


def opt(default: Any = _MISSING, help: str = "", choices: Sequence[Any] | None = None) -> Any:
    """A config field with a help text (and optional allowed values).

    ``default`` may be omitted to make the option required.
    """
    meta = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Command:
    """One ``fastmed TASK [MODE]`` command.

    A command with ``variants`` has one config per value of its ``selector``
    option (``seg train --method reweight|contour``): ``--method contour``
    accepts and lists only the contour config's options. ``config`` is the
    default variant (used when the selector is not given).
    """

    task: str
    mode: str | None
    config: type
    runner: str  # "module:function", called with the config instance
    help: str
    selector: str | None = None
    variants: tuple[tuple[str, type], ...] = ()  # (selector value, config class), the default first

    @property
    def name(self) -> str:
        return f"{self.task} {self.mode}" if self.mode else self.task

    def configs(self) -> list[type]:
        """Every config class of the command (its variants, or ``[config]``)."""
        return [cls for _, cls in self.variants] or [self.config]

    def load_runner(self) -> Callable[[Any], Any]:
        module, func = self.runner.split(":")
        return getattr(importlib.import_module(module), func)

    def config_for(self, args: Sequence[str]) -> type:
        """The config class that ``args`` select (``--<selector> VALUE``, also from ``--config``)."""
        if not self.selector:
            return self.config
        keys = _given_options(args, set().union(*(_bool_fields(c) for c in self.configs())))
        value = keys.get(self.selector, self.variants[0][0])
        if value is None:
            raise ConfigError(f"option --{self.selector} needs a value: {', '.join(n for n, _ in self.variants)}")
        for name, cls in self.variants:
            if str(value) == name:
                return cls
        raise ConfigError(f"option --{self.selector}: {value!r} is not one of {', '.join(n for n, _ in self.variants)}")

    def parse(self, args: Sequence[str]) -> Any:
        """The validated config of ``args``; another variant's options are an error naming them."""
        cls = self.config_for(args)
        own = {f.name for f in dataclasses.fields(cls)}
        bools = set().union(*(_bool_fields(c) for c in self.configs()))
        foreign = [k for k in _given_options(args, bools) if k not in own and
                   any(k in {f.name for f in dataclasses.fields(c)} for c in self.configs())]
        if foreign:
            value = next(n for n, c in self.variants if c is cls)
            names = ", ".join(f"--{k.replace('_', '-')}" for k in foreign)
            raise ConfigError(f"{names} {'is not an option' if len(foreign) == 1 else 'are not options'} of "
                              f"--{self.selector} {value} (see fastmed {self.name} --{self.selector} {value} --help)")
        return parse_options(cls, args)


def all_commands() -> list[Command]:
    """Every command declared by a ``fastmed.cfg`` module, in declaration order."""
    import fastmed.cfg as pkg

    out: list[Command] = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "base":
            continue
        mod = importlib.import_module(f"fastmed.cfg.{info.name}")
        out.extend(getattr(mod, "COMMANDS", []))
    return out


def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_name(tp: Any) -> str:
    """A short human name for a field type (for --help)."""
    inner, optional = _unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(inner) or (str,)
        name = f"list[{getattr(arg, '__name__', str(arg))}]"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name}?" if optional else name


def convert(name: str, raw: Any, tp: Any) -> Any:
    """Convert ``raw`` (a CLI string or a YAML value) to the field type ``tp``."""
    inner, optional = _unwrap_optional(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null", ""))):
        return None
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("1", "true", "yes", "on", "y"):
                return True
            if s in ("0", "false", "no", "off", "n"):
                return False
            raise ValueError
        if inner is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if inner is float:
            return float(raw)
        if inner is str:
            return str(raw)
        if origin in (list, tuple):
            (arg,) = typing.get_args(inner)[:1] or (str,)
            items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",") if s.strip()]
            return [convert(name, item.strip() if isinstance(item, str) else item, arg) for item in items]
    except (TypeError, ValueError):
        pass
    else:
        return raw
    raise ConfigError(f"option --{name.replace('_', '-')}: expected {type_name(tp)}, got {raw!r}")


def require(cfg: Any, ok: Callable[[Any], bool], want: str, *names: str) -> None:
    """``ConfigError`` for the first option of ``names`` whose value (unless None) fails ``ok``.

    ``want`` completes "option --name must be ...". NaN fails every comparison, so it is refused too.
    """
    for name in names:
        value = getattr(cfg, name)
        if value is not None and not ok(value):
            raise ConfigError(f"option --{name.replace('_', '-')} must be {want}, got {value!r}")


def at_least(cfg: Any, minimum: float, *names: str) -> None:
    """Every option of ``names`` is ``>= minimum`` (or None)."""
    require(cfg, lambda v: v >= minimum, f">= {minimum}", *names)


def within(cfg: Any, lo: float, hi: float, *names: str, hi_open: bool = False) -> None:
    """Every option of ``names`` is in ``[lo, hi]`` (``[lo, hi)`` with ``hi_open``), or None."""
    require(cfg, (lambda v: lo <= v < hi) if hi_open else (lambda v: lo <= v <= hi),
            f"in [{lo}, {hi}{')' if hi_open else ']'}", *names)


def _norm(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def _bool_fields(config_cls: type) -> set[str]:
    hints = _type_hints(config_cls)
    return {f.name for f in dataclasses.fields(config_cls) if _unwrap_optional(hints[f.name])[0] is bool}


def _given_options(args: Sequence[str], bool_fields: set[str]) -> dict[str, Any]:
    """Option name -> raw value of ``args``, ``--config FILE`` keys included (command line wins)."""
    pairs = _split_args(args, bool_fields)
    given: dict[str, Any] = {}
    for key, raw in pairs:
        if key == "config":
            given.update({_norm(str(k)): v for k, v in _read_yaml(raw).items()})
    given.update({key: raw for key, raw in pairs if key not in ("config", "help", "h")})
    return given


def _split_args(args: Sequence[str], bool_fields: set[str]) -> list[tuple[str, str | None]]:
    """Turn argv pieces into (key, raw value) pairs; value None means a bare flag."""
    pairs: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
                pairs.append((_norm(k), v))
            else:
                k = _norm(a)
                nxt = args[i + 1] if i + 1 < len(args) else None
                takes_value = nxt is not None and not nxt.startswith("--") and not (k in bool_fields and nxt.lower() not in ("true", "false", "1", "0", "yes", "no"))
                if takes_value:
                    pairs.append((k, nxt))
                    i += 1
                else:
                    pairs.append((k, None))
        elif "=" in a and not a.startswith("-"):
            k, v = a.split("=", 1)
            pairs.append((_norm(k), v))
        else:
            raise ConfigError(f"unexpected argument {a!r}: options are written --name value or name=value")
        i += 1
    return pairs


def parse_options(config_cls: type, args: Sequence[str]) -> Any:
    """Build a ``config_cls`` instance from defaults, ``--config FILE`` and ``args``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = _type_hints(config_cls)
    bool_fields = _bool_fields(config_cls)
    pairs = _split_args(args, bool_fields)
    values: dict[str, Any] = {}

    for key, raw in pairs:
        if key == "config":
            values.update(_load_yaml(raw, fields))
    for key, raw in pairs:
        if key == "config":
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean --{close[0].replace('_', '-')}?" if close else ""
            raise ConfigError(f"unknown option --{key.replace('_', '-')}{hint} (see --help)")
        if raw is None:
            if key not in bool_fields:
                raise ConfigError(f"option --{key.replace('_', '-')} needs a value")
            raw = "true"
        values[key] = raw

    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        value = convert(name, raw, hints[name])
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"option --{name.replace('_', '-')}: {value!r} is not one of {', '.join(map(str, choices))}")
        kwargs[name] = value
    missing = [n for n, f in fields.items() if f.default is _MISSING and f.default_factory is _MISSING and n not in kwargs]
    if missing:
        raise ConfigError("missing required option(s): " + ", ".join(f"--{m.replace('_', '-')}" for m in missing))
    cfg = config_cls(**kwargs)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def _read_yaml(path: str | None) -> dict[Any, Any]:
    """The mapping of a ``--config`` YAML file (errors name the file)."""
    import yaml

    if not path:
        raise ConfigError("option --config needs a YAML file path")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


def _load_yaml(path: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    data = _read_yaml(path)
    out = {}
    for k, v in data.items():
        key = _norm(str(k))
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"config file {path}: unknown key {k!r}{hint}")
        out[key] = v
    return out


def format_help(cmd: Command, args: Sequence[str] = ()) -> str:
    """The ``fastmed TASK MODE --help`` text: every option (of the variant ``args`` select) with type and default."""
    config = cmd.config_for(args)
    hints = _type_hints(config)
    lines = [f"usage: fastmed {cmd.name} [--option value ...]", "", cmd.help, "", "options:"]
    for f in dataclasses.fields(config):
        default = "required" if f.default is _MISSING and f.default_factory is _MISSING else (
            f.default if f.default is not _MISSING else f.default_factory()
        )
        choices = f.metadata.get("choices")
        extra = f" {{{', '.join(map(str, choices))}}}" if choices else ""
        lines.append(f"  --{f.name.replace('_', '-'):<22} {type_name(hints[f.name]):<12} default: {default!s}{extra}")
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    lines.append("  --config FILE.yaml        options from a YAML file (command-line options win)")
    others = [name for name, cls in cmd.variants if cls is not config]
    if others:
        lines.append(f"options of the other --{cmd.selector} values: "
                     + ", ".join(f"fastmed {cmd.name} --{cmd.selector} {n} --help" for n in others))
    return "\n".join(lines)
