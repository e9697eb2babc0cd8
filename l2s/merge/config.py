"""``MergeConfig``: everything a merge needs, validated before any tensor is read."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from l2s.merge.methods import METHODS, REQUIRED, aliases

DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method string: modifiers (``dare``, ``aim``: kinds ``pre`` and ``post``) around one core
    method. ``spec.<modifier>`` tells whether that modifier is used (``spec.dare``)."""

    core: str
    modifiers: tuple[str, ...] = ()  # sorted

    def __getattr__(self, name: str):
        if name in METHODS and METHODS[name].kind != "core":
            return name in self.modifiers
        raise AttributeError(name)

    @property
    def pre(self) -> list[str]:
        return [m for m in self.modifiers if METHODS[m].kind == "pre"]

    @property
    def post(self) -> list[str]:
        return [m for m in self.modifiers if METHODS[m].kind == "post"]

    @property
    def name(self) -> str:
        return "+".join(self.post + self.pre + [self.core])

    @property
    def components(self) -> list[str]:
        return self.pre + self.post + [self.core]

    @property
    def needs_base(self) -> bool:
        return any(METHODS[c].needs_base for c in self.components)

    @property
    def calibration(self) -> str | None:
        """What calibration statistics the method needs: None, "base" or "participants"."""
        kinds = {METHODS[c].needs.calibration for c in self.components} - {None}
        return "participants" if "participants" in kinds else next(iter(kinds), None)

    @property
    def needs_calibration(self) -> bool:
        return self.calibration is not None

    def base_participates(self, params: dict) -> bool:
        """Whether the base is one of the merged models (the core's ``base_participant`` parameter)."""
        flag = METHODS[self.core].needs.base_participant
        return bool(flag and params.get(flag))


def _components(text: str, names: dict[str, str]) -> list[str]:
    """The components of a method string: a whole key or alias stands for its method string
    (``dare`` -> ``dare+average``); inside a ``+`` string a component keeps its name and another
    spelling stands for its method string (``dare+ta`` -> dare, task_arithmetic)."""
    if "+" not in text and text in names:
        text = names[text]
    parts: list[str] = []
    for p in text.split("+"):
        parts += [p] if p in METHODS or p not in names else names[p].split("+")
    return parts


def parse_method(method: str) -> MethodSpec:
    """``"aim+dare+ties"`` -> MethodSpec(core="ties", modifiers=("aim", "dare")); the registry's keys and
    aliases (``dare_ties``, ``aim`` = ``aim+ties``, ``ta``) stand for their method strings."""
    names = aliases()
    text = method.strip().lower()
    parts = _components(text, names)
    cores = sorted(n for n, m in METHODS.items() if m.kind == "core")
    for p in parts:
        if p not in METHODS:
            raise ValueError(f"unknown merge method {p!r} in {method!r}; known: {', '.join(sorted(names))} "
                             f"(modifiers {', '.join(m for m in METHODS if METHODS[m].kind != 'core')} combine "
                             f"with '+', e.g. dare+ties, aim+ties)")
    *mods, core = parts
    if METHODS[core].kind != "core":
        raise ValueError(f"{method!r} must end in a core method ({', '.join(cores)}); {core!r} is a modifier")
    if any(METHODS[m].kind == "core" for m in mods) or len(set(mods)) != len(mods):
        raise ValueError(f"{method!r}: only modifiers, each at most once, may precede {core!r}")
    for m in mods:
        allowed = METHODS[m].combines_with
        if allowed is not None and core not in allowed:
            raise ValueError(f"{method!r}: {m} applies before {', '.join(allowed)}, not {core}")
        if METHODS[m].kind == "post" and METHODS[m].needs_base and not METHODS[core].needs_base:
            raise ValueError(f"{method!r}: {m} relaxes a merge towards its base; {core} has no base")
    return MethodSpec(core, tuple(sorted(mods)))


def parse_value(text: str) -> Any:
    """``"0.8"`` → 0.8, ``"3"`` → 3, ``"true"`` → True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.strip()


def parse_assignments(items: list[str], flag: str) -> dict[str, Any]:
    """Repeated ``NAME=VALUE`` flags (``--param k=0.8``) as a dict, each value by :func:`parse_value`."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{flag} {item!r}: expected NAME=VALUE, e.g. {flag} k=0.8")
        out[name.strip()] = parse_value(value)
    return out


def parse_size(size: int | str) -> int:
    """``"5GB"`` → 5·10⁹ bytes (also KB/MB/GB/KiB/MiB/GiB or a plain number of bytes)."""
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B)?\s*", str(size), re.IGNORECASE)
    if not m:
        raise ValueError(f"shard_size {size!r}: expected bytes or a size such as 2GB, 500MB")
    unit = (m.group(2) or "B").upper()
    mult = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}[unit]
    return int(float(m.group(1)) * mult)


@dataclass
class MergeConfig:
    """A merge: method, inputs, hyper-parameters, output. Paths may be local dirs or hub ids.

    ``models`` are the fine-tunes merged into ``base`` (for ``linear``: [long, short], no base).
    ``tokenizer_source`` (default: the first model, i.e. the slow-thinking one) gives the tokenizer,
    config.json and the extra embedding rows when vocabularies differ. ``calibration``: the AIM /
    Sens-Merging calibration texts, one file for all, or (Sens) one per merged model.
    """

    method: str
    models: list[str]
    out: str
    base: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    dtype: str = "auto"  # output dtype; auto = the inputs' dtype
    compute_dtype: str = "float32"
    seed: int = 0
    overwrite: bool = False
    tokenizer_source: str | None = None
    shard_size: int | str = "5GB"
    calibration: list[str] = field(default_factory=list)
    calibration_samples: int = 100
    calibration_max_tokens: int = 2048
    # How l2s_merge.json fingerprints local input shards: "sampled" (SHA-256 of the size, the header
    # and 64 windows of 64 KiB spread over the data: milliseconds, tells different weights apart)
    # or "full" (SHA-256 of every byte: about 0.6 s per GB of CPU). Hub downloads always get their
    # full SHA-256, free: it is the name of the cached blob. Outputs are always hashed in full.
    input_hash: Literal["sampled", "full"] = "sampled"

    def __post_init__(self):
        if isinstance(self.models, str):
            self.models = [m for m in self.models.split(",") if m]
        if isinstance(self.calibration, str):
            self.calibration = [c for c in self.calibration.split(",") if c]
        self.models = [str(m) for m in self.models]
        self.calibration = [str(c) for c in self.calibration]
        self.out = str(self.out)
        self.base = None if self.base is None else str(self.base)

    @classmethod
    def from_dict(cls, d: dict, where: str = "merge config") -> MergeConfig:
        """A config from a mapping (a YAML file, ``l2s_merge.json``), every value type-checked
        (:func:`l2s.config.parse`)."""
        from l2s.config import parse

        return parse(cls, d, where)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def spec(self) -> MethodSpec:
        return parse_method(self.method)

    def resolved_params(self) -> dict[str, Any]:
        """The parameters of every component of the method, defaults filled in, checked."""
        spec = self.spec
        owners = {name: c for c in spec.components for name in METHODS[c].params}
        for name in self.params:
            if name not in owners:
                raise ValueError(f"unknown parameter {name!r} for method {spec.name!r}; "
                                 f"known: {', '.join(sorted(owners)) or 'none'}")
        out = {}
        for name, comp in owners.items():
            p = METHODS[comp].params[name]
            value = self.params.get(name, p.default)
            if value is REQUIRED:
                raise ValueError(f"method {spec.name!r} needs parameter {name!r} ({p.doc}); "
                                 f"pass --param {name}=VALUE")
            if p.type is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, str) and p.type is not str:
                value = parse_value(value)
            if not p.check(value):
                raise ValueError(f"parameter {name}={value!r} of {comp} is out of range: {p.rule} ({p.doc})")
            out[name] = value
        return out

    def validate(self) -> None:
        """Raise a ValueError naming the problem; touches no file except to check it exists."""
        spec = self.spec
        params = self.resolved_params()
        if not self.models:
            raise ValueError("no models to merge: pass --models PATH[,PATH...]")
        lo, hi = METHODS[spec.core].n_models
        if len(self.models) < lo or (hi is not None and len(self.models) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}"
            raise ValueError(f"{spec.core} merges {want} model(s), got {len(self.models)}: {self.models}")
        if spec.needs_base and not self.base:
            raise ValueError(f"method {spec.name!r} needs a base model (task vectors are θ_i − θ_0): pass --base")
        if not spec.needs_base and self.base:
            raise ValueError(f"method {spec.name!r} does not use a base model; drop --base")
        participants = len(self.models) + spec.base_participates(params)
        least = METHODS[spec.core].min_participants
        if participants < least:
            flag = METHODS[spec.core].needs.base_participant
            raise ValueError(f"{spec.core} estimates from at least {least} merged models, got {participants}: add a "
                             f"model" + (f" or set {flag}=true" if flag else ""))
        if self.dtype.lower() not in DTYPES or DTYPES.get(self.compute_dtype.lower(), "auto") == "auto":
            raise ValueError(f"dtype {self.dtype!r} / compute_dtype {self.compute_dtype!r}: expected one of "
                             f"{sorted(set(DTYPES.values()))} (compute dtype not auto)")
        if parse_size(self.shard_size) <= 0:
            raise ValueError("shard_size must be positive")
        if self.tokenizer_source is not None and self.tokenizer_source not in self.inputs:
            raise ValueError(f"tokenizer_source {self.tokenizer_source!r} must be the base or one of the models")
        if spec.needs_calibration:
            if not self.calibration:
                raise ValueError(f"method {spec.name!r} needs calibration texts: pass --calibration FILE")
            n_files = participants if spec.calibration == "participants" else 1
            if len(self.calibration) not in (1, n_files):
                raise ValueError(f"calibration: give one file, or one per merged model ({n_files}), "
                                 f"got {len(self.calibration)}")
            for c in self.calibration:
                if not Path(c).is_file():
                    raise FileNotFoundError(f"calibration file {c} not found")
        elif self.calibration:
            raise ValueError(f"method {spec.name!r} uses no calibration texts; drop --calibration")
        if self.input_hash not in ("sampled", "full"):
            raise ValueError(f"input_hash {self.input_hash!r}: expected 'sampled' or 'full'")
        if self.calibration_samples < 1 or self.calibration_max_tokens < 2:
            raise ValueError("calibration_samples must be >= 1 and calibration_max_tokens >= 2")
        if Path(self.out).exists() and not self.overwrite:
            raise FileExistsError(f"{self.out} already exists; pass --overwrite to replace it")

    @property
    def inputs(self) -> list[str]:
        return ([self.base] if self.base else []) + list(self.models)

    @property
    def tokenizer_input(self) -> str:
        return self.tokenizer_source or self.models[0]

    def out_dtype_name(self) -> str:
        return DTYPES[self.dtype.lower()]

    def compute_dtype_name(self) -> str:
        return DTYPES[self.compute_dtype.lower()]
