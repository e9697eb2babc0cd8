"""Read a runs/ directory into tidy frames: one row per (run, dataset), and per (run, dataset, level).

A run directory follows the evaluation contract: ``config.json`` with a ``"tags"`` dict (``size``,
``role``, ``method``, ``params``; optional ``sweep: true`` for runs that only belong on the Pareto
plot) and ``metrics.json`` (``datasets.NAME.{n, accuracy, mean_tokens, median_tokens,
reflective_ratio, keyword_hits, truncated, by_level}``, fractions in [0, 1]). Frames here carry
accuracy and reflective ratio in % so that they sit beside the papers' numbers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from l2s.io import read_json
from l2s.reference import canonical_method, method_label, method_labels

log = logging.getLogger(__name__)

METRIC_KEYS = ("n", "accuracy", "mean_tokens", "median_tokens", "reflective_ratio", "keyword_hits", "truncated")
ROLE_ORDER = ("quick", "slow", "short", "merged", "dpo", "adar1", "baseline")
# Runs tagged with this role re-evaluate a model that has its own run (Ada-R1's ``eval-long`` is the
# slow model again, kept for the Ada-R1 run's summary): they are read by their owners, not plotted.
REFERENCE_ROLE = "reference"
SINGLE_MODEL_ROLES = ("quick", "slow", "short")
_SIZE_SUFFIXES = ("xxs", "xs", "s", "m", "l", "xl", "xxl")


@dataclass(frozen=True)
class Runs:
    """``datasets``: one row per (run, dataset); ``levels``: one row per (run, dataset, level)."""

    datasets: pd.DataFrame
    levels: pd.DataFrame


def series_key(role: str, method: str | None) -> str:
    """What a bar or line stands for: the role for single models, "ada_r1" for every Ada-R1 run (its
    method tag names the variant), else the canonical method."""
    if role in SINGLE_MODEL_ROLES:
        return role
    if role == "adar1":
        return "ada_r1"
    return canonical_method(method) or role


def series_label(role: str, method: str | None) -> str:
    """Printable series name: "TIES", "Slow (System-2)", "Ada-R1 (group_level)"."""
    key = series_key(role, method)
    variant = canonical_method(method)
    if role == "adar1" and variant and variant != key:
        return f"{method_label(key)} ({method})"
    return method_label(key)


def params_text(params: dict | None) -> str:
    """{"alpha": 0.7, "k": 0.8} -> "alpha=0.7, k=0.8" (sorted keys)."""
    if not params:
        return ""
    return ", ".join(f"{k}={params[k]}" for k in sorted(params))


def series_order(key: str, role: str) -> tuple:
    """Sort key: role order of the study, then the method order of the papers' tables."""
    known = list(method_labels())
    return (ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER),
            known.index(key) if key in known else len(known), key)


def size_order(size: str) -> tuple:
    """Model sizes from small to large: "1.5B" < "7B"; toy "…-xs" < "…-s" < "…-m"; else by name."""
    s = str(size)
    if s.endswith("B"):
        try:
            return (1, float(s[:-1]), s)
        except ValueError:
            pass
    suffix = s.rsplit("-", 1)[-1].lower()
    if suffix in _SIZE_SUFFIXES:
        return (0, float(_SIZE_SUFFIXES.index(suffix)), s)
    return (0, float(len(_SIZE_SUFFIXES)), s)


def _metric_row(values: dict, where: str) -> dict:
    missing = [k for k in METRIC_KEYS if k not in values]
    if missing:
        raise ValueError(f"{where}: missing metric field(s) {', '.join(missing)}")
    row = {k: values[k] for k in METRIC_KEYS}
    row["accuracy"] = 100.0 * float(row["accuracy"])
    row["reflective_ratio"] = 100.0 * float(row["reflective_ratio"])
    return row


def load_runs(runs_dir: str | Path) -> Runs:
    """Every ``runs_dir/*/`` with a config.json carrying tags.size and tags.role and a metrics.json,
    and every evaluation run nested deeper (e.g. Ada-R1's ``runs/<run>/eval-*``), named by its path
    relative to ``runs_dir``.

    Directories without them (checkpoints, sampling runs, unfinished runs) are skipped with a logged
    note; a malformed metrics file is an error naming the file and field.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs directory {runs_dir} does not exist")
    rows, level_rows = [], []
    top = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    nested = {m.parent for t in top for m in t.glob("*/**/metrics.json") if (m.parent / "config.json").is_file()
              and not any(x.startswith(".") for x in m.parent.relative_to(runs_dir).parts)}
    for run in sorted(top + list(nested)):
        config_path, metrics_path = run / "config.json", run / "metrics.json"
        if not config_path.is_file() or not metrics_path.is_file():
            log.info("figures: skipping %s (no config.json/metrics.json: not a finished evaluation run)", run)
            continue
        tags = read_json(config_path).get("tags") or {}
        if not tags.get("size") or not tags.get("role"):
            log.info("figures: skipping %s (config.json has no tags.size/tags.role)", run)
            continue
        metrics = read_json(metrics_path)
        if not isinstance(metrics.get("datasets"), dict):
            raise ValueError(f"{metrics_path}: missing the 'datasets' mapping")
        role, method = str(tags["role"]), tags.get("method")
        if role == REFERENCE_ROLE:
            log.info("figures: skipping %s (role %r: a re-evaluation of a model another run plots)", run, role)
            continue
        key = series_key(role, method)
        base = {"run": run.relative_to(runs_dir).as_posix(), "size": str(tags["size"]), "role": role, "method": key,
                "method_label": series_label(role, method), "params": params_text(tags.get("params")),
                "sweep": bool(tags.get("sweep", False))}
        for dataset in sorted(metrics["datasets"]):
            values = metrics["datasets"][dataset]
            if not values.get("n"):  # an empty group has no accuracy or length to plot
                log.info("figures: %s: dataset %s has no responses; skipped", run.name, dataset)
                continue
            rows.append({**base, "dataset": dataset, **_metric_row(values, f"{metrics_path} datasets.{dataset}")})
            for level in sorted(values.get("by_level") or {}, key=int):
                if values["by_level"][level].get("n"):
                    where = f"{metrics_path} datasets.{dataset}.by_level.{level}"
                    level_rows.append({**base, "dataset": dataset, "level": int(level),
                                       **_metric_row(values["by_level"][level], where)})
    columns = ["run", "size", "role", "method", "method_label", "params", "sweep", "dataset", *METRIC_KEYS]
    return Runs(datasets=pd.DataFrame(rows, columns=columns),
                levels=pd.DataFrame(level_rows, columns=[*columns[:8], "level", *METRIC_KEYS]))


def display_labels(df: pd.DataFrame) -> pd.Series:
    """Method label per row, with the run's parameters appended where one size has several runs of
    the same method (e.g. a TIES run per k) so that bars and points stay distinguishable."""
    counts = df.groupby(["size", "method"])["run"].transform("nunique")
    return pd.Series([f"{lab} ({p})" if n > 1 and p else (f"{lab} [{r}]" if n > 1 else lab)
                      for lab, p, r, n in zip(df["method_label"], df["params"], df["run"], counts)],
                     index=df.index)
