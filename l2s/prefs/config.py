"""``PairsConfig``: how preference pairs are built from a long and a short model's samples.

Defaults are Ada-R1's (Luo et al. 2025, arXiv 2504.21659, Sec. 3.2): ε = 1/(2K), M1 = 4 group-level
pairs and M2 = 2 instance-level pairs per problem.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

Variant = Literal["bilevel", "group", "instance", "sft", "shortest_vs_longest"]
InstanceRejected = Literal["any", "correct"]
BaselineSource = Literal["long", "pooled"]
VARIANTS, INSTANCE_REJECTED, BASELINE_SOURCES = (typing.get_args(t) for t in (Variant, InstanceRejected,
                                                                              BaselineSource))


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

    variant: Variant = "bilevel"
    epsilon: float | None = None
    m1: int = 4
    m2: int = 2
    instance_rejected: InstanceRejected = "any"
    baseline_source: BaselineSource = "pooled"
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
