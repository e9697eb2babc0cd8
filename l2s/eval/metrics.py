"""Aggregates of scored responses, and a run compared with a reference run.

Per group (a dataset, a level of it, or everything): ``n``, ``accuracy`` and ``reflective_ratio``
(fractions in [0, 1]), ``mean_tokens`` and ``median_tokens``, ``keyword_hits`` (mean per response)
and ``truncated`` (a count). A run is compared with a reference by :func:`length_change` per dataset,
then the mean over datasets (Wu et al. 2025, Table 1 "Avg").
"""

from __future__ import annotations

import statistics
from collections import defaultdict

METRIC_KEYS = ("n", "accuracy", "mean_tokens", "median_tokens", "reflective_ratio", "keyword_hits",
               "truncated")


def length_change(tokens, ref_tokens):
    """Relative change of the mean response length vs a reference, ``(tokens - ref_tokens) / ref_tokens``:
    -0.4 is 40% shorter. This is the "length" column of Wu et al. 2025 (Tables 1-4; their length
    reduction, §4, against the slow model) and of Luo et al. 2025 (Table 2, against the long-CoT model),
    printed there in %. Scalars, or element by element on numpy arrays and pandas Series."""
    if ref_tokens is None or (isinstance(ref_tokens, (int, float)) and not ref_tokens):
        raise ValueError(f"reference mean length is {ref_tokens!r}: no length to compare with")
    return (tokens - ref_tokens) / ref_tokens


def aggregate(rows: list[dict]) -> dict:
    n = len(rows)
    if n == 0:
        return {"n": 0, "accuracy": None, "mean_tokens": None, "median_tokens": None,
                "reflective_ratio": None, "keyword_hits": None, "truncated": 0}
    tokens = [r["n_tokens"] for r in rows]
    return {"n": n,
            "accuracy": sum(bool(r["correct"]) for r in rows) / n,
            "mean_tokens": sum(tokens) / n,
            "median_tokens": float(statistics.median(tokens)),
            "reflective_ratio": sum(bool(r["reflective"]) for r in rows) / n,
            "keyword_hits": sum(r["keyword_hits"] for r in rows) / n,
            "truncated": sum(bool(r["truncated"]) for r in rows)}


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
