"""``PairsConfig``: how preference pairs are built from a long and a short model's samples.

Defaults are Ada-R1's (Luo et al. 2025, arXiv 2504.21659, Sec. 3.2): ε = 1/(2K), M1 = 4 group-level
pairs and M2 = 2 instance-level pairs per problem.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VARIANTS = ("bilevel", "group", "instance", "sft", "shortest_vs_longest")
INSTANCE_REJECTED = ("any", "correct")
BASELINE_SOURCES = ("long", "pooled")


@dataclass
class PairsConfig:
    """Pair construction (Ada-R1 Table 3 ablation variants and the DPO baseline).

    variant: ``bilevel`` (group + instance pairs, Ada-R1), ``group`` (group level only),
        ``instance`` (instance level only), ``sft`` (prompt/completion rows: the group-level chosen
        responses, Table 3's "merge + SFT"), ``shortest_vs_longest`` (the DPO baseline of Table 2:
        shortest correct vs longest response of one problem's samples).
    epsilon: long is preferred iff acc_L - acc_S > epsilon; ``None`` means 1/(2K), K = the long
        model's number of samples for that problem (the authors' code).
    m1: group-level pairs per problem, drawn without replacement from chosen-pool x rejected-pool.
    m2: instance-level pairs per problem (the M2 longest responses of the preferred group).
    instance_rejected: ``any`` = the paper (rejected among all responses of the preferred group);
        ``correct`` = the authors' code (rejected among its correct responses; if it has none,
        shortest wrong vs longest wrong). A pair never has chosen == rejected in either case.
    baseline_source: samples the ``shortest_vs_longest`` baseline picks from: ``pooled`` (default:
        the long and the short model's together, so the shortest correct answer, mostly a short one,
        is chosen over the longest, mostly a long one: short chosen, long rejected, as in Wu et al.
        2025's DPO baseline, Table 1) or ``long`` (the long model's samples only: where those are
        near-identical, as on the toy world, almost every problem has no distinct pair and is
        dropped: 3 pairs from 500 problems on toy-s).
    baseline_pairs: pairs per problem for the baseline (the 1st, 2nd, ... longest as rejected).
    drop_both_zero: drop problems where both models score 0 (Ada-R1 does).
    require_same_problems: a problem sampled by only one model is an error (else: use the common ones).
    seed: draws of the group-level pairs (per problem: ``Random(f"{seed}:{dataset}:{id}")``).
    """

    variant: str = "bilevel"
    epsilon: float | None = None
    m1: int = 4
    m2: int = 2
    instance_rejected: str = "any"
    baseline_source: str = "pooled"
    baseline_pairs: int = 1
    drop_both_zero: bool = True
    require_same_problems: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.instance_rejected not in INSTANCE_REJECTED:
            raise ValueError(f"instance_rejected must be one of {INSTANCE_REJECTED}, got {self.instance_rejected!r}")
        if self.baseline_source not in BASELINE_SOURCES:
            raise ValueError(f"baseline_source must be one of {BASELINE_SOURCES}, got {self.baseline_source!r}")
        for name in ("m1", "m2", "baseline_pairs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.epsilon is not None and not (0 <= self.epsilon < 1):
            raise ValueError(f"epsilon must be in [0, 1) or null for 1/(2K), got {self.epsilon!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def outputs_key(self) -> dict[str, Any]:
        """The options that decide this variant's output (the others are not read by it): a pairs
        directory built with the same key holds the same rows."""
        return {k: v for k, v in self.to_dict().items() if k not in _UNUSED[self.variant]}


# Options a variant does not read (epsilon and the filters decide every variant's problems.csv).
_GROUP_ONLY, _INSTANCE_ONLY, _BASELINE_ONLY = ("m1", "seed"), ("m2", "instance_rejected"), ("baseline_source",
                                                                                          "baseline_pairs")
_UNUSED = {"bilevel": _BASELINE_ONLY, "group": _INSTANCE_ONLY + _BASELINE_ONLY,
           "sft": _INSTANCE_ONLY + _BASELINE_ONLY, "instance": _GROUP_ONLY + _BASELINE_ONLY,
           "shortest_vs_longest": _GROUP_ONLY + _INSTANCE_ONLY}


def _check_type(cls: type, name: str, value: Any, source: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return value
    for t in allowed:
        if typing.get_origin(t) is list:
            if isinstance(value, list) and all(isinstance(v, typing.get_args(t)[0]) for v in value):
                return value
        elif t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif t is not type(None) and isinstance(value, t) and not (t is int and isinstance(value, bool)):
            return value
    raise ValueError(f"{source}: {name} must be {hint}, got {value!r}")


def config_from_mapping(cls: type, mapping: dict[str, Any], source: str = "config"):
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types are errors naming them."""
    if not isinstance(mapping, dict):
        raise ValueError(f"{source}: expected a mapping of option -> value, got {type(mapping).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ValueError(f"{source}: unknown option(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: _check_type(cls, k, v, source) for k, v in mapping.items()})


def options_from_args(cls: type, args) -> dict[str, Any]:
    """The options of ``--config FILE`` (if given), overridden by every command-line flag named after a
    field of dataclass ``cls`` that was set (not None)."""
    options = read_config_file(args.config) if getattr(args, "config", None) else {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if value is not None:
            options[f.name] = value
    return options


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML mapping (by extension)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml and json raise different error types
        raise ValueError(f"{path}: cannot parse config ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of option -> value")
    return data
