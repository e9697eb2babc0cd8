"""Ada-R1's bi-level preference rules (Luo et al. 2025, arXiv 2504.21659, Sec. 3.2), one problem at a time.

Group level: acc_L, acc_S = fraction correct of each model's samples; long is preferred iff
acc_L - acc_S > ε, else short (ties go to short). Pairs: chosen from the preferred group's correct
responses (all of it if none), rejected from the other group's wrong ones (all of it if none).

Instance level: inside the preferred group, chosen = the shortest correct response, rejected = the
M2 longest responses. No pair ever has chosen == rejected (same sample or same text: such a pair
has zero DPO gradient). Ties in length are broken by (style, sample index): deterministic.
"""

from __future__ import annotations

import random

from l2s.prefs.groups import Sample

Pair = tuple[Sample, Sample]  # (chosen, rejected)

# Two floats closer than this count as equal when comparing acc_L - acc_S with ε.
_TIE = 1e-9


def _shortest(s: Sample):
    return (s.n_tokens, s.style, s.sample)


def _longest(s: Sample):
    return (-s.n_tokens, s.style, s.sample)


def accuracy(samples: list[Sample]) -> float:
    return sum(s.correct for s in samples) / len(samples) if samples else 0.0


def default_epsilon(k: int) -> float:
    """ε = 1/(2K), the authors' threshold: one more correct answer out of K is a real difference."""
    return 1.0 / (2 * k)


def preferred_style(acc_long: float, acc_short: float, epsilon: float) -> str:
    """``long`` iff acc_L - acc_S > ε (beyond float noise), else ``short``."""
    return "long" if acc_long - acc_short > epsilon + _TIE else "short"


def _distinct(chosen: Sample, rejected: Sample) -> bool:
    return chosen != rejected and chosen.response != rejected.response


def group_pairs(preferred: list[Sample], other: list[Sample], m1: int, rng: random.Random) -> list[Pair]:
    """Up to ``m1`` distinct pairs drawn uniformly from chosen-pool x rejected-pool."""
    chosen_pool = [s for s in preferred if s.correct] or list(preferred)
    rejected_pool = [s for s in other if not s.correct] or list(other)
    candidates = [(c, r) for c in sorted(chosen_pool, key=_shortest) for r in sorted(rejected_pool, key=_shortest)
                  if _distinct(c, r)]
    return rng.sample(candidates, min(m1, len(candidates)))


def instance_pairs(preferred: list[Sample], m2: int, rejected_from: str = "any") -> list[Pair]:
    """Shortest correct vs the ``m2`` longest others of the preferred group.

    ``rejected_from="any"`` (the paper): rejected among all the group's responses; no pair when the
    group has no correct response. ``"correct"`` (the authors' code): rejected among the correct
    responses only, or, when none is correct, shortest wrong vs longest wrong.
    """
    correct = [s for s in preferred if s.correct]
    if rejected_from == "any":
        if not correct:
            return []
        pool = preferred
    elif rejected_from == "correct":
        pool = correct or [s for s in preferred if not s.correct]
        if not pool:
            return []
    else:
        raise ValueError(f"rejected_from must be 'any' or 'correct', got {rejected_from!r}")
    chosen = min(correct or pool, key=_shortest)
    rejected = sorted((s for s in pool if _distinct(chosen, s)), key=_longest)[:m2]
    return [(chosen, r) for r in rejected]


def shortest_vs_longest(samples: list[Sample], n_pairs: int = 1) -> list[Pair]:
    """The DPO baseline: shortest correct response chosen over the longest ones (Ada-R1 Table 2).

    ``samples``: one problem's samples of the long model, or of both models pooled (the default of
    :class:`~l2s.prefs.config.PairsConfig`, ``baseline_source``): then the chosen is mostly a short
    answer and the rejected a long one, and near-identical long samples still give a pair.
    """
    correct = [s for s in samples if s.correct]
    if not correct:
        return []
    chosen = min(correct, key=_shortest)
    rejected = sorted((s for s in samples if _distinct(chosen, s)), key=_longest)[:n_pairs]
    return [(chosen, r) for r in rejected]
