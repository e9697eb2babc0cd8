"""One config parser for every l2s command: typed dataclasses from YAML/JSON files and command-line flags.

* :func:`parse` builds a dataclass from a mapping; :func:`load_yaml` from a YAML or JSON file.
* :func:`flags` gives a dataclass's fields as command-line flags (``transformers.HfArgumentParser``), and
  :func:`options_from_args` joins a ``--config FILE`` with the flags given (flags win).
* :func:`check_fields` checks keyword arguments for a dataclass that is built later, such as TRL's
  ``DPOConfig`` (building one sets up processes and DeepSpeed), against that dataclass's own annotations.

Every problem is a :class:`ConfigError` (a ``ValueError``) naming the file, the key (a dotted path for
nested values: ``steps[3].parameters``), the expected type and the value given.

What the libraries do: the type check is pydantic's, in strict mode (a bool is only ``true``/``false``,
``"false"`` is an error; an int is not a bool; a float field takes an int; ``X | None``, ``list[X]``,
``dict[str, X]``, ``Literal[...]`` and nested dataclasses checked; unknown keys refused at every level),
and the dataclass itself is built by it (its ``__post_init__`` checks run). The mapping goes to pydantic
as JSON, the form a config file has: on Python objects strict mode would refuse a mapping for a nested
dataclass and a list for a tuple field. The flags are HfArgumentParser's (``--name`` and ``--name-with-
dashes``, bools as ``--flag`` or ``--flag false``, ``Literal`` as choices, lists as several values).
What is written here, because neither does it: reading the file (pydantic reads no YAML, HfArgumentParser
none at all, and TrlParser's YAML reading names no line and checks no type), the translation of pydantic's
errors into one message with the key path and the annotation as written, and the merge of the file with
the flags actually given (HfArgumentParser fills every absent flag with its default, which would
overwrite the file: l2s's flags have no defaults).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import functools
import importlib
import json
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

import typing_extensions
import yaml

_MAX_SHOWN = 80


class ConfigError(ValueError):
    """A config that does not fit its dataclass: the message names the file, key, expected type and value."""


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads ``5e-7`` as a float (YAML 1.2; PyYAML's YAML 1.1 rules make it a
    string) and refuses a key given twice in one mapping (YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`, merged by SafeLoader
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key]} and {line})", key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.(?:inf|Inf|INF))$|^\.(?:nan|NaN|NAN)$""", re.X),
    list("-+0123456789."))


def yaml_value(text: str, where: str = "value") -> Any:
    """A command-line value read as YAML (``0.1`` -> 0.1, ``[sigmoid, sft]`` -> a list, ``true`` -> True)."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {text!r} is not a YAML value ({_yaml_problem(e)})") from None


def read_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a JSON (``.json``) or YAML (anything else) file; an empty file is ``{}``. Errors name
    the file and, for a file that is not UTF-8 or does not parse, the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save it as UTF-8") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
    else:
        try:
            data = yaml.load(text, Loader=Loader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{at}: not valid YAML ({_yaml_problem(e)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def _yaml_problem(e: yaml.YAMLError) -> str:
    return " ".join(str(x) for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e)


def parse(cls: type, data: Mapping[str, Any], where: str = "config"):
    """Dataclass ``cls`` built from ``data``, every value checked against its field's annotation (see the
    module docstring); problems raise :class:`ConfigError` prefixed with ``where`` (a file name)."""
    return _validate(_model(cls), cls, data, where)


def load_yaml(cls: type, path: str | Path):
    """Dataclass ``cls`` from a YAML or JSON file (:func:`read_file`, then :func:`parse`)."""
    return parse(cls, read_file(path), str(path))


def check_fields(cls: type, data: Mapping[str, Any], where: str = "", key: str = "") -> dict[str, Any]:
    """``data`` (a copy), if it is keyword arguments that dataclass ``cls`` accepts: known field names, each
    value fitting the field's annotation (as :func:`parse` checks them), without building ``cls``. Values
    are returned as given. ``key`` prefixes the key paths in messages (``lora`` -> ``lora.r``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(_prefix(where, f"{key or 'value'} must be a mapping of {cls.__name__} options, "
                                         f"got {_show(data)}"))
    _validate(_kwargs_model(cls), _kwargs_dict(cls), data, where, key)
    return dict(data)


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``override``; a mapping over a mapping is merged the same way, key by key."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def flags(cls: type, fields: typing.Iterable[str] | None = None, exclude: typing.Iterable[str] = (),
          help: Mapping[str, str] | None = None, choices: Mapping[str, typing.Sequence] | None = None,
          title: str | None = None) -> argparse.ArgumentParser:
    """A parser (``add_help=False``) with flags for ``fields`` (default: all but ``exclude``) of dataclass
    ``cls``, made by ``transformers.HfArgumentParser`` from the annotations; ``title`` puts them in an
    argument group. No flag has a default: a flag not given leaves no attribute, so that :func:`given`
    tells the flags given from the rest. ``help`` (default: the field's ``metadata["help"]``, as
    TrainingArguments has) and ``choices`` are per field."""
    from transformers import HfArgumentParser

    hints = _hints(cls)
    own = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = [n for n in (fields if fields is not None else own) if n not in set(exclude)]
    help, choices = help or {}, choices or {}
    unknown = sorted(set(names) - set(hints))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    columns = []
    for name in names:
        text = help.get(name, own[name].metadata.get("help"))
        columns.append((name, Literal[tuple(choices[name])] if name in choices else hints[name],
                        dataclasses.field(default=argparse.SUPPRESS,
                                          metadata={"help": text.replace("%", "%%")} if text else {})))
    proxy = dataclasses.make_dataclass(f"{cls.__name__}Flags", columns,
                                       namespace={"_argument_group_name": title} if title else None)
    return HfArgumentParser(proxy, add_help=False)


class CommandParser(argparse.ArgumentParser):
    """The parser of an ``l2s`` subcommand: the dataclass flags given to :func:`add_flags` are made when
    it first parses (or prints its help), so that building the ``l2s`` parser imports neither
    transformers nor the dataclasses' modules (``l2s --help`` stays fast)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending_flags: list[tuple[type | str, dict]] = []

    def parse_known_args(self, args=None, namespace=None):
        self._add_pending_flags()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_pending_flags()
        return super().format_help()

    def _add_pending_flags(self) -> None:
        while self._pending_flags:
            cls, kwargs = self._pending_flags.pop(0)
            self._add_container_actions(flags(_load(cls), **kwargs))


def add_flags(parser: argparse.ArgumentParser, cls: type | str, fields: typing.Iterable[str] | None = None,
              **options) -> None:
    """Add :func:`flags` of dataclass ``cls`` (or ``"module:Class"``, imported when needed) to ``parser``:
    when it first parses for a :class:`CommandParser`, at once for another parser. ``options`` are
    :func:`flags`' (``exclude``, ``help``, ``choices``, ``title``)."""
    kwargs = {"fields": tuple(fields) if fields is not None else None, **options}
    if isinstance(parser, CommandParser):
        parser._pending_flags.append((cls, kwargs))
    else:
        parser._add_container_actions(flags(_load(cls), **kwargs))


def _load(cls: type | str) -> type:
    if not isinstance(cls, str):
        return cls
    module, _, name = cls.partition(":")
    return getattr(importlib.import_module(module), name)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The fields of dataclass ``cls`` that ``args`` holds a value for (flags given; ``None`` is absent)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def options_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The mapping of ``--config FILE`` (``args.config``, if given), updated with :func:`given` flags."""
    options = read_file(args.config) if getattr(args, "config", None) else {}
    return merge(options, given(cls, args))


def where_of(args: argparse.Namespace) -> str:
    """How messages name the options of a command line: its ``--config`` file, else ``command line``."""
    return str(args.config) if getattr(args, "config", None) else "command line"


# -- pydantic ------------------------------------------------------------------------------------------

def _strict():
    import pydantic

    return pydantic.ConfigDict(strict=True, extra="forbid")


@functools.cache
def _model(cls: type):
    import pydantic

    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    return pydantic.create_model(f"{cls.__name__}Config", __config__=_strict(), value=(cls, ...))


@functools.cache
def _kwargs_dict(cls: type):
    """A TypedDict of the init fields of ``cls`` (none required); a field pydantic cannot check is Any."""
    import pydantic

    hints = {}
    for name, hint in _hints(cls, lenient=True).items():
        try:
            pydantic.TypeAdapter(hint)
        except Exception:  # an annotation pydantic has no schema for: not checked
            hint = Any
        hints[name] = hint
    kwargs = typing_extensions.TypedDict(cls.__name__, hints, total=False)
    kwargs.__module__, kwargs.__qualname__ = cls.__module__, cls.__qualname__  # messages name cls
    kwargs.__pydantic_config__ = _strict()
    return kwargs


@functools.cache
def _kwargs_model(cls: type):
    import pydantic

    return pydantic.create_model(f"{cls.__name__}Kwargs", __config__=_strict(), value=(_kwargs_dict(cls), ...))


def _validate(model, root: type, data: Any, where: str, key: str = ""):
    import pydantic
    import pydantic_core

    if not isinstance(data, Mapping):
        raise ConfigError(_prefix(where, f"expected a mapping of {root.__name__} fields, got {_show(data)}"))
    try:
        text = pydantic_core.to_json({"value": data}, inf_nan_mode="constants")
    except pydantic_core.PydanticSerializationError as e:
        raise ConfigError(_prefix(where, f"a value is not a config value ({e})")) from None
    try:
        return model.model_validate_json(text).value
    except pydantic.ValidationError as e:
        raise ConfigError(_prefix(where, "; ".join(_problems(root, data, e, key)))) from None


def _prefix(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


_ABSENT = object()


def _problems(root: type, data: Any, error, key: str) -> list[str]:
    """One line per problem of a pydantic ValidationError, unknown and missing keys grouped per mapping."""
    unknown: dict[str, tuple[Any, list[str]]] = {}
    missing: dict[str, list[str]] = {}
    lines: dict[str, str] = {}
    for e in error.errors(include_url=False):
        parts, hint, value, rest = _walk(root, data, e["loc"][1:])
        path = _path(parts, key)
        kind = e["type"]
        if kind in ("extra_forbidden", "unexpected_keyword_argument") and rest:
            unknown.setdefault(path, (hint, []))[1].append(str(rest[0]))
        elif kind == "missing" and not rest:
            parent = _path(parts[:-1], key)
            missing.setdefault(parent, []).append(f"{parts[-1]} ({_name(hint)})")
        elif kind in ("value_error", "assertion_error") and "error" in e.get("ctx", {}):
            lines.setdefault(path, _prefix(path, str(e["ctx"]["error"])))
        else:
            shown = value if value is not _ABSENT else e.get("input")
            lines.setdefault(path, f"{path or 'value'} must be {_name(hint)}, got {_show(shown)}")
    out = []
    for path, (hint, keys) in unknown.items():
        allowed = list(_fields(_strip_none(hint)) or {})
        guesses = [f"{k!r} (did you mean {m[0]!r}?)" for k in keys if (m := difflib.get_close_matches(k, allowed, 1))]
        shown = ", ".join(allowed) if len(allowed) <= 40 else f"the {len(allowed)} fields of {_qualname(hint)}"
        out.append(_prefix(path, f"unknown key(s) {keys}" + (f": {', '.join(guesses)}" if guesses else "")
                           + f"; allowed: {shown}"))
    out += [_prefix(path, f"missing key(s) {', '.join(names)}") for path, names in missing.items()]
    return out + list(lines.values())


def _path(parts: list, key: str = "") -> str:
    """``["steps", 3, "parameters"]`` -> ``steps[3].parameters`` (after ``key``, if given)."""
    out = key
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _walk(root: type, data: Any, loc: tuple) -> tuple[list, Any, Any, tuple]:
    """Follow a pydantic error location through the annotations: ``(keys followed, the annotation there,
    the value there, the rest of the location)``. It stops at a union of several types (pydantic's next
    items name the union's members) and at a key the annotation does not know."""
    hint, value, parts = root, data, []
    for i, elem in enumerate(loc):
        inner = _strip_none(hint)
        child = None if _is_union(inner) else _child(inner, elem)
        if child is None:
            return parts, hint, value, loc[i:]
        parts.append(elem)
        hint = child
        if isinstance(value, Mapping):
            value = value.get(elem, _ABSENT)
        elif isinstance(value, (list, tuple)) and isinstance(elem, int) and elem < len(value):
            value = value[elem]
        else:
            value = _ABSENT
    return parts, hint, value, ()


def _child(hint: Any, elem: Any) -> Any:
    fields = _fields(hint)
    if fields is not None:
        return fields.get(elem) if isinstance(elem, str) else None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(elem, int) and (origin in (list, tuple, set, frozenset) or hint in (list, tuple)):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return args[elem] if elem < len(args) else None
        return args[0] if args else Any
    if isinstance(elem, str) and (origin in (dict, Mapping) or hint is dict):
        return args[1] if args else Any
    return None


def _fields(hint: Any) -> dict[str, Any] | None:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _hints(hint)
    if typing_extensions.is_typeddict(hint):
        return dict(hint.__annotations__)
    return None


def _hints(cls: type, lenient: bool = False) -> dict[str, Any]:
    """Field name -> resolved annotation (``from __future__ import annotations`` writes them as strings);
    with ``lenient``, one that does not resolve is Any (PEP 563 modules of other packages)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        if not lenient:
            raise
        hints = {}
    return {f.name: hints.get(f.name, Any if isinstance(f.type, str) else f.type)
            for f in dataclasses.fields(cls) if f.init}


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) is Union or isinstance(hint, types.UnionType)


def _strip_none(hint: Any) -> Any:
    if not _is_union(hint):
        return hint
    rest = [a for a in typing.get_args(hint) if a is not type(None)]
    return rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007  (built from a tuple)


def _name(hint: Any, inner: bool = False) -> str:
    """An annotation as a reader writes it: ``int``, ``list[str]``, ``float | null``, ``one of 'a', 'b'``."""
    if hint is type(None) or hint is None:
        return "null"
    if hint is Any:
        return "Any" if inner else "any value"
    if hint is Ellipsis:
        return "..."
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(hint):
        return " | ".join(_name(a, inner) for a in args)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in hint)
    if _fields(hint) is not None and not inner:
        return f"a mapping of {hint.__name__} fields"
    if (origin is tuple and args[-1:] == (Ellipsis,)) or hint is tuple:  # a YAML/JSON list
        return f"list[{_name(args[0], True)}]" if args else "list"
    if origin is not None:
        return f"{_name(origin, True)}[{', '.join(_name(a, True) for a in args)}]"
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def _qualname(hint: Any) -> str:
    return f"{hint.__module__.split('.')[0]}.{hint.__qualname__}"


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN - 3] + "..."
    return f"{text} ({type(value).__name__})"
