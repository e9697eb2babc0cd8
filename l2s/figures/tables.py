"""The data behind each figure, as plain frames (also written as the figure's CSV).

Every function takes the frames of :func:`l2s.figures.frames.load_runs` and returns measured rows
(``source = "measured"``) next to the papers' rows (``source`` = their "reported (...)" or
"estimated from figure (...)" label). A ``panel`` column says where each row is drawn. Accuracy and
ratios are in %, lengths in tokens; ``length_reduction`` is a fraction (Wu et al. 2025, §4): the
mean over datasets of :func:`l2s.eval.metrics.length_change` against the slow model of the same size.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from l2s import reference
from l2s.eval.metrics import length_change
from l2s.figures.frames import Runs, display_labels, series_order
from l2s.runs import method_label, size_order

log = logging.getLogger(__name__)

MEASURED = "measured"


def measured_panel(size: str, dataset: str | None = None) -> str:
    return f"{size} · {dataset} — measured" if dataset else f"{size} — measured"


def _sort(df: pd.DataFrame, by_level: bool = False) -> pd.DataFrame:
    """Panels measured first (small to large size), then reported; inside, the papers' method order."""
    if df.empty:
        return df.reset_index(drop=True)
    key = pd.DataFrame({
        "source": [0 if src == MEASURED else (2 if reference.LUO in src else 1) for src in df["source"]],
        "size": df["size"].map(lambda s: size_order(str(s))),
        "panel": df["panel"],
        "series": [series_order(m, r) for m, r in zip(df["method"], df["role"])],
        "label": df["label"],
    })
    if "dataset" in df:
        key["dataset"] = df["dataset"].astype(str)
    if by_level:
        key["level"] = df["level"]
    order = sorted(range(len(df)), key=lambda i: tuple(key.iloc[i]))
    return df.iloc[order].reset_index(drop=True)


def _measured(runs: Runs, include_sweep: bool = False) -> pd.DataFrame:
    d = runs.datasets
    return (d if include_sweep else d[~d["sweep"]]).copy()


def length_accuracy(runs: Runs) -> pd.DataFrame:
    """Length reduction vs the slow model of the same size, and mean accuracy over the same datasets,
    per run (Wu et al. 2025 Tables 1-4 as bars); reported rows from Wu Tables 1-4 and Luo Table 2."""
    d = _measured(runs)
    d["label"] = display_labels(d)
    rows = []
    for size in sorted(d["size"].unique(), key=size_order):
        s = d[d["size"] == size]
        slow_runs = sorted(s.loc[s["role"] == "slow", "run"].unique())
        if not slow_runs:
            log.info("figures: length_accuracy: no slow run for size %s; its panel is skipped", size)
            continue
        if len(slow_runs) > 1:
            raise ValueError(f"size {size} has several slow runs ({', '.join(slow_runs)}); "
                             "tag all but one differently or mark them sweep")
        slow = s[s["run"] == slow_runs[0]].set_index("dataset")
        for run, r in s.groupby("run", sort=True):
            r = r.set_index("dataset")
            common = sorted(set(r.index) & set(slow.index))
            if not common:
                log.info("figures: length_accuracy: %s shares no dataset with %s; skipped", run, slow_runs[0])
                continue
            rel = length_change(r.loc[common, "mean_tokens"], slow.loc[common, "mean_tokens"])
            first = r.iloc[0]
            rows.append({"source": MEASURED, "panel": measured_panel(size), "size": size, "run": run,
                         "role": first["role"], "method": first["method"], "label": first["label"],
                         "params": first["params"], "datasets": " ".join(common), "n_datasets": len(common),
                         "accuracy": float(r.loc[common, "accuracy"].mean()),
                         "mean_tokens": float(r.loc[common, "mean_tokens"].mean()),
                         "slow_mean_tokens": float(slow.loc[common, "mean_tokens"].mean()),
                         "length_reduction": float(rel.mean())})
    measured = pd.DataFrame(rows)
    reported = []
    for frame in (reference.wu2025_merging(), reference.luo2025_adar1()):
        lr = reference.length_reduction(frame[frame["table"].isin(["Table 1", "Table 2", "Table 3", "Table 4"])])
        datasets = frame.groupby(["table", "size"])["dataset"].agg(lambda x: " ".join(sorted(set(x))))
        slow_tokens = frame[frame["role"] == "slow"].groupby(["table", "size"])["mean_tokens"].mean()
        reported.append(pd.DataFrame({
            "source": lr["label"], "panel": [f"{s} — {lab}" for s, lab in zip(lr["size"], lr["label"])],
            "size": lr["size"], "run": "", "role": lr["role"], "method": lr["method"],
            "label": lr["method"].map(method_label), "params": "",
            "datasets": [datasets[(t, s)] for t, s in zip(lr["table"], lr["size"])],
            "n_datasets": lr["n_datasets"], "accuracy": lr["accuracy"], "mean_tokens": lr["mean_tokens"],
            "slow_mean_tokens": [slow_tokens[(t, s)] for t, s in zip(lr["table"], lr["size"])],
            "length_reduction": lr["length_reduction"]}))
    return _sort(pd.concat([measured, *reported], ignore_index=True))


CORRECTION_QUANTITIES = ("correction_rate", "harmful_check_rate", "unchanged_check_rate")


def wilson_interval(p, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson (1927) score interval of a proportion ``p`` (a fraction) observed in ``n`` trials:
    centre ``(p + z²/2n) / (1 + z²/n)``, half-width ``z·sqrt(p(1−p)/n + z²/4n²) / (1 + z²/n)``;
    ``z = 1.96`` is the 95% interval. Element-wise over arrays; NaN where ``n`` is 0 or ``p`` is NaN.
    (Neither scipy nor statsmodels is a dependency, so the formula is written out here.)"""
    p = np.asarray(p, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2n = np.where(n > 0, z * z / n, np.nan)
        centre = (p + z2n / 2) / (1 + z2n)
        half = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)



def correction_panel(size: str, dataset: str) -> str:
    return f"{size} · {dataset} — measured, by level"


def _corrections(runs: Runs) -> pd.DataFrame:
    """Per (run, dataset, level) of the runs whose metrics record interim answers: the correction,
    harmful-check and unchanged-check rates (%) among the ``checked`` responses (those with an answer
    boxed before their first reflection keyword, :func:`l2s.eval.metrics.correction`), with their 95%
    Wilson score interval (``value_lo``, ``value_hi``, %; :func:`wilson_interval` of the rate over
    ``n = checked``); NaN where none was checked. Empty when no run records them (metrics of an l2s
    before interim answers)."""
    lv = runs.levels[~runs.levels["sweep"] & runs.levels["checked"].notna()].copy()
    if lv.empty:
        return pd.DataFrame()
    lv["label"] = display_labels(lv)
    parts = []
    for quantity in CORRECTION_QUANTITIES:
        value = lv[quantity].astype(float)
        lo, hi = wilson_interval(value.to_numpy() / 100, lv["checked"].to_numpy(dtype=float))
        parts.append(pd.DataFrame({
            "source": MEASURED, "panel": [correction_panel(s, ds) for s, ds in zip(lv["size"], lv["dataset"])],
            "size": lv["size"], "run": lv["run"], "role": lv["role"], "method": lv["method"], "label": lv["label"],
            "dataset": lv["dataset"], "quantity": quantity, "value": value,
            "level": lv["level"].astype(int), "checked": lv["checked"].astype(int),
            "value_lo": 100 * lo, "value_hi": 100 * hi}))
    return pd.concat(parts, ignore_index=True)


def self_correction(runs: Runs) -> pd.DataFrame:
    """Reflective-response ratio (%) and keyword hits per response, per dataset and run (Wu et al. 2025
    Table 6 for the reported ratio at 7B; Tables 3-4 for reported keyword hits at 14B and 32B), then
    whether the reflection corrects answers, by level, for the runs that record interim answers
    (:func:`_corrections`; the papers report no such rate). Long format: one row per (panel, method,
    dataset, quantity), and per level for the correction rates, whose rows alone fill the columns
    ``level``, ``checked`` and the 95% Wilson interval ``value_lo``, ``value_hi`` (the table of runs
    without interim answers has none of them)."""
    d = _measured(runs)
    d["label"] = display_labels(d)
    parts = []
    for quantity in ("reflective_ratio", "keyword_hits"):
        parts.append(pd.DataFrame({
            "source": MEASURED, "panel": d["size"].map(measured_panel), "size": d["size"], "run": d["run"],
            "role": d["role"], "method": d["method"], "label": d["label"], "dataset": d["dataset"],
            "quantity": quantity, "value": d[quantity].astype(float)}))
    t6 = reference.wu2025_reflection_ratio()
    parts.append(pd.DataFrame({
        "source": t6["label"], "panel": [f"{s} — {lab}" for s, lab in zip(t6["size"], t6["label"])],
        "size": t6["size"], "run": "", "role": t6["role"], "method": t6["method"],
        "label": t6["method"].map(method_label), "dataset": t6["dataset"],
        "quantity": "reflective_ratio", "value": t6["reflective_ratio"]}))
    wu = reference.wu2025_merging()
    wu = wu[wu["keyword_hits"].notna()]
    parts.append(pd.DataFrame({
        "source": wu["label"], "panel": [f"{s} — {lab}" for s, lab in zip(wu["size"], wu["label"])],
        "size": wu["size"], "run": "", "role": wu["role"], "method": wu["method"],
        "label": wu["method"].map(method_label), "dataset": wu["dataset"],
        "quantity": "keyword_hits", "value": wu["keyword_hits"].astype(float)}))
    out = _sort(pd.concat(parts, ignore_index=True))
    panel_rank = {p: i for i, p in enumerate(dict.fromkeys(out["panel"]))}
    rank = [(panel_rank[p], q != "reflective_ratio") for p, q in zip(out["panel"], out["quantity"])]
    out = out.iloc[sorted(range(len(out)), key=rank.__getitem__)].reset_index(drop=True)
    corrections = _corrections(runs)
    if corrections.empty:
        return out
    corrections = _sort(corrections, by_level=True)
    order = {q: i for i, q in enumerate(CORRECTION_QUANTITIES)}
    corrections = corrections.iloc[sorted(range(len(corrections)), key=lambda i: (
        size_order(str(corrections["size"].iloc[i])), corrections["panel"].iloc[i],
        order[corrections["quantity"].iloc[i]]))].reset_index(drop=True)
    return pd.concat([out, corrections], ignore_index=True)


def difficulty(runs: Runs) -> pd.DataFrame:
    """Mean length and reflective ratio (%) by difficulty level, per run (Wu et al. 2025 Fig. 2a/2b),
    for every dataset whose metrics have levels."""
    lv = runs.levels[~runs.levels["sweep"]].copy()
    if lv.empty:
        return pd.DataFrame()
    lv["label"] = display_labels(lv)
    out = pd.DataFrame({
        "source": MEASURED, "panel": [measured_panel(s, ds) for s, ds in zip(lv["size"], lv["dataset"])],
        "size": lv["size"], "dataset": lv["dataset"], "run": lv["run"], "role": lv["role"],
        "method": lv["method"], "label": lv["label"], "level": lv["level"], "n": lv["n"],
        "accuracy": lv["accuracy"], "mean_tokens": lv["mean_tokens"],
        "reflective_ratio": lv["reflective_ratio"], "keyword_hits": lv["keyword_hits"]})
    return _sort(out, by_level=True)


ADAR1_ROLES = ("slow", "short", "adar1", "dpo")


def adar1_by_level(runs: Runs) -> pd.DataFrame:
    """Ada-R1 by difficulty level (Luo et al. 2025 Figs. 4-6): long-CoT ratio (= reflective ratio, %),
    accuracy (%) and mean tokens of the long (slow), short, Ada-R1 and DPO runs of every size that has an
    Ada-R1 run; the paper's per-level accuracy and tokens (estimated from its figures) beside them."""
    lv = runs.levels[~runs.levels["sweep"]].copy()
    sizes = sorted(lv.loc[lv["role"] == "adar1", "size"].unique(), key=size_order)
    if not sizes:
        return pd.DataFrame()
    lv = lv[lv["size"].isin(sizes) & (lv["role"].isin(ADAR1_ROLES) | (lv["method"] == "linear"))].copy()
    lv["label"] = display_labels(lv)
    measured = pd.DataFrame({
        "source": MEASURED, "panel": [measured_panel(s, ds) for s, ds in zip(lv["size"], lv["dataset"])],
        "size": lv["size"], "dataset": lv["dataset"], "run": lv["run"], "role": lv["role"],
        "method": lv["method"], "label": lv["label"], "level": lv["level"], "n": lv["n"],
        "long_cot_ratio": lv["reflective_ratio"], "accuracy": lv["accuracy"], "mean_tokens": lv["mean_tokens"]})
    est = reference.luo2025_by_level()
    reported = pd.DataFrame({
        "source": est["label"], "panel": "MATH levels — " + est["label"], "size": "", "dataset": "MATH",
        "run": "", "role": est["role"], "method": est["method"], "label": est["method"].map(method_label),
        "level": est["level"], "n": pd.NA, "long_cot_ratio": float("nan"), "accuracy": est["accuracy"],
        "mean_tokens": est["mean_tokens"]})
    return _sort(pd.concat([measured, reported], ignore_index=True), by_level=True)


def pareto_front(tokens: list[float], accuracy: list[float]) -> list[bool]:
    """True where no other point is at least as short and at least as accurate, and better in one."""
    pts = list(zip(tokens, accuracy))
    return [not any((t2 <= t and a2 >= a) and (t2 < t or a2 > a) for t2, a2 in pts) for t, a in pts]


def pareto(runs: Runs) -> pd.DataFrame:
    """Mean accuracy (%) vs mean tokens over the datasets every run of a size shares, for all runs
    including sweeps, with the Pareto front per panel; Wu et al. 2025 Tables 1-4 as reported panels."""
    d = _measured(runs, include_sweep=True)
    rows = []
    for size in sorted(d["size"].unique(), key=size_order):
        s = d[d["size"] == size]
        common = sorted(set.intersection(*(set(g["dataset"]) for _, g in s.groupby("run"))))
        if not common:
            log.info("figures: pareto: runs of size %s share no dataset; panel skipped", size)
            continue
        s = s[s["dataset"].isin(common)]
        for run, r in s.groupby("run", sort=True):
            first = r.iloc[0]
            label = first["method_label"] + (f" ({first['params']})" if first["params"] and first["sweep"] else "")
            rows.append({"source": MEASURED, "panel": measured_panel(size), "size": size, "run": run,
                         "role": first["role"], "method": first["method"], "label": label,
                         "params": first["params"], "sweep": bool(first["sweep"]), "datasets": " ".join(common),
                         "accuracy": float(r["accuracy"].mean()), "mean_tokens": float(r["mean_tokens"].mean())})
    lr = reference.length_reduction(reference.wu2025_merging())
    reported = pd.DataFrame({
        "source": lr["label"], "panel": [f"{s} — {lab}" for s, lab in zip(lr["size"], lr["label"])],
        "size": lr["size"], "run": "", "role": lr["role"], "method": lr["method"],
        "label": lr["method"].map(method_label), "params": "", "sweep": False, "datasets": "",
        "accuracy": lr["accuracy"], "mean_tokens": lr["mean_tokens"]})
    out = _sort(pd.concat([pd.DataFrame(rows), reported], ignore_index=True))
    out["on_front"] = False
    for _, idx in out.groupby("panel", sort=False).groups.items():
        out.loc[idx, "on_front"] = pareto_front(out.loc[idx, "mean_tokens"].tolist(), out.loc[idx, "accuracy"].tolist())
    return out


def sweep_points(record: dict, reference: dict | None = None) -> pd.DataFrame:
    """The points of a hyper-parameter sweep (``sweep.json`` of :mod:`l2s.sweep`): one row per dev
    evaluation (``source`` ``sweep``) and per test evaluation of its dev front (``sweep (test)``), and,
    given the record of a ``reference`` sweep (a grid), its dev evaluations (``reference``); accuracy
    in %, mean tokens, ``on_front`` within its source and split."""
    from l2s.runs import method_key

    rows = []
    for source, rec in (("sweep", record), ("reference", reference)):
        if rec is None:
            continue
        key = method_key(rec["method"])
        for p in rec["points"]:
            for split, block in (("dev", p["dev"]), ("test", p.get("test"))):
                if block is None or (split == "test" and source == "reference"):
                    continue
                rows.append({"source": source if split == "dev" else f"{source} (test)", "method": key,
                             "param": rec["param"], "value": p["value"], "order": p["order"], "split": split,
                             "accuracy": 100.0 * block["accuracy"], "mean_tokens": block["mean_tokens"]})
    columns = ["source", "method", "param", "value", "order", "split", "accuracy", "mean_tokens", "on_front"]
    out = pd.DataFrame(rows, columns=columns[:-1])
    out["on_front"] = False
    for _, idx in out.groupby("source", sort=False).groups.items():
        out.loc[idx, "on_front"] = pareto_front(out.loc[idx, "mean_tokens"].tolist(), out.loc[idx, "accuracy"].tolist())
    return out.sort_values(["source", "value"], kind="stable").reset_index(drop=True)[columns]
