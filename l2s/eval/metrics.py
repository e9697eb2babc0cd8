"""Aggregates of scored responses, and a run compared with a reference run.

Per group (a dataset, a level of it, or everything): ``n``, ``accuracy`` and ``reflective_ratio``
(fractions in [0, 1]), ``mean_tokens`` and ``median_tokens``, ``keyword_hits`` (mean per response)
and ``truncated`` (a count) — :data:`METRIC_KEYS`, which every run's metrics have — and whether
reflection corrects answers, :data:`CORRECTION_KEYS` (:func:`correction`), which runs written before
l2s recorded interim answers lack. A run is compared with a reference by :func:`length_change` per
dataset, then the mean over datasets (Wu et al. 2025, Table 1 "Avg").
"""

from __future__ import annotations

import statistics
from collections import defaultdict

# The fields every metrics block has (l2s.runs.read_metrics requires them).
METRIC_KEYS = ("n", "accuracy", "mean_tokens", "median_tokens", "reflective_ratio", "keyword_hits",
               "truncated")
# Added later: absent from older runs' metrics (l2s.reproduce lists them as added, not as differences).
CORRECTION_KEYS = ("checked", "correction_rate", "harmful_check_rate", "unchanged_check_rate")


def length_change(tokens, ref_tokens):
    """Relative change of the mean response length vs a reference, ``(tokens - ref_tokens) / ref_tokens``:
    -0.4 is 40% shorter. This is the "length" column of Wu et al. 2025 (Tables 1-4; their length
    reduction, §4, against the slow model) and of Luo et al. 2025 (Table 2, against the long-CoT model),
    printed there in %. Scalars, or element by element on numpy arrays and pandas Series."""
    if ref_tokens is None or (isinstance(ref_tokens, (int, float)) and not ref_tokens):
        raise ValueError(f"reference mean length is {ref_tokens!r}: no length to compare with")
    return (tokens - ref_tokens) / ref_tokens


def _same_pred(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and "".join(a.split()) == "".join(b.split())


def correction(rows: list[dict]) -> dict:
    """Does reflection correct answers? Over the ``checked`` rows — those with an interim answer
    (``interim_pred``, the last box before the first of Wu et al. 2025's reflection keywords,
    :func:`l2s.eval.measures.interim_answer`), graded like the final one (``interim_correct``):

    - ``correction_rate`` = #(interim wrong, final right) / checked — the check fixed the answer;
    - ``harmful_check_rate`` = #(interim right, final wrong) / checked — the check broke it (a final
      without any answer, e.g. cut off by the budget, is wrong);
    - ``unchanged_check_rate`` = #(same grade and the same answer) / checked, where the same answer
      means both right (both equal the gold, so each other, whatever their form: ``1/2`` and
      ``\\frac{1}{2}``), or the same ``pred`` string up to whitespace. Without a third grading
      (interim against final) two wrong answers in different forms count as changed.

    The three are disjoint; the rest, 1 - their sum, is a wrong interim answer replaced by another wrong
    (or no) answer. Each is None when checked is 0. Rows without the fields (generations of an l2s
    that did not record them) or with ``interim_pred`` None (no keyword, or no box before it) are not
    checked."""
    checked = [r for r in rows if r.get("interim_pred") is not None and r.get("interim_correct") is not None]
    k = len(checked)
    if k == 0:
        return {"checked": 0, "correction_rate": None, "harmful_check_rate": None, "unchanged_check_rate": None}
    fixed = sum(not r["interim_correct"] and bool(r["correct"]) for r in checked)
    broke = sum(bool(r["interim_correct"]) and not r["correct"] for r in checked)
    same = sum(bool(r["interim_correct"]) == bool(r["correct"])
               and (bool(r["correct"]) or _same_pred(r["interim_pred"], r.get("pred"))) for r in checked)
    return {"checked": k, "correction_rate": fixed / k, "harmful_check_rate": broke / k,
            "unchanged_check_rate": same / k}


def aggregate(rows: list[dict]) -> dict:
    """:data:`METRIC_KEYS` then :data:`CORRECTION_KEYS` of one group of rows (None where n is 0)."""
    n = len(rows)
    if n == 0:
        return {"n": 0, "accuracy": None, "mean_tokens": None, "median_tokens": None,
                "reflective_ratio": None, "keyword_hits": None, "truncated": 0, **correction([])}
    tokens = [r["n_tokens"] for r in rows]
    return {"n": n,
            "accuracy": sum(bool(r["correct"]) for r in rows) / n,
            "mean_tokens": sum(tokens) / n,
            "median_tokens": float(statistics.median(tokens)),
            "reflective_ratio": sum(bool(r["reflective"]) for r in rows) / n,
            "keyword_hits": sum(r["keyword_hits"] for r in rows) / n,
            "truncated": sum(bool(r["truncated"]) for r in rows),
            **correction(rows)}


def compute_metrics(rows: list[dict]) -> dict:
    """``{"datasets": {name: {...keys, "by_level": {"1": {...}}}}, "overall": {...}}``."""
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_dataset[r["dataset"]].append(r)
    datasets = {}
    for name, drows in sorted(by_dataset.items()):
        levels: dict[int, list[dict]] = defaultdict(list)
        for r in drows:
            if r.get("level") is not None:
                levels[int(r["level"])].append(r)
        datasets[name] = {**aggregate(drows),
                          "by_level": {str(lv): aggregate(lrows) for lv, lrows in sorted(levels.items())}}
    return {"datasets": datasets, "overall": aggregate(rows)}


def compare(run: dict, ref: dict) -> dict:
    """Per dataset present in both metrics: accuracy delta (run - ref) and relative length change;
    ``avg`` = their means over those datasets (Wu et al.'s "Avg" column)."""
    common = sorted(set(run["datasets"]) & set(ref["datasets"]))
    if not common:
        raise ValueError("the run and the reference share no dataset")
    out = {}
    for name in common:
        a, b = run["datasets"][name], ref["datasets"][name]
        if not b["mean_tokens"]:
            raise ValueError(f"reference dataset {name!r} has no tokens to compare lengths with")
        out[name] = {"accuracy": a["accuracy"], "ref_accuracy": b["accuracy"],
                     "accuracy_delta": a["accuracy"] - b["accuracy"],
                     "mean_tokens": a["mean_tokens"], "ref_mean_tokens": b["mean_tokens"],
                     "length_change": length_change(a["mean_tokens"], b["mean_tokens"])}
    avg = {k: statistics.fmean(out[n][k] for n in common)
           for k in ("accuracy", "ref_accuracy", "accuracy_delta", "length_change")}
    return {"datasets": out, "avg": avg}
