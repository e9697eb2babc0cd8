"""Published numbers of the two papers, as tidy pandas frames for figures and notebooks.

The CSVs in ``l2s/reference/`` are typed from the papers (see its README): Wu et al. 2025, "Unlocking
Efficient Long-to-Short LLM Reasoning with Model Merging" (arXiv 2503.20641), Tables 1-4, 6, 7; and
Luo et al. 2025, "Ada-R1: Hybrid CoT via Bi-Level Adaptive Reasoning Optimization" (arXiv 2504.21659),
Tables 2-3 plus per-level values read off its figures. Every frame carries a ``label`` column —
"reported (Wu et al. 2025, Table 1)" or "estimated from figure (Luo et al. 2025, Figs. 5-6)" — that
plots must show. Units: accuracy and ratios in % (as the papers print them), lengths in tokens.

Method names are mapped to the canonical key of the run contract (:func:`l2s.runs.canonical_method`:
the merge registry's keys) shared with the measured runs' tags, and every row gets the role of the
model in the study ("quick", "slow", "short", "merged", "dpo", "adar1", or "baseline" for other
papers' methods).
"""

from __future__ import annotations

import functools
import importlib.resources
import re

import pandas as pd

from l2s.eval.metrics import length_change
from l2s.runs import canonical_method

WU = "Wu et al. 2025"
LUO = "Luo et al. 2025"
LUO_BY_LEVEL_FIGURES = "Figs. 5-6"

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*b\b", re.IGNORECASE)


def canonical_size(size: str | None) -> str | None:
    """"qwen-7b", "7B", "Qwen2.5-Math-1.5B" -> "7B" / "1.5B"; other names (toy sizes) unchanged."""
    if size is None:
        return None
    m = _SIZE_RE.search(str(size).replace("_", "-").split("/")[-1].replace("-", " "))
    return f"{m.group(1)}B" if m else str(size)


def reported_label(paper: str, table: str) -> str:
    return f"reported ({paper}, {table})"


def estimated_label(paper: str, figure: str) -> str:
    return f"estimated from figure ({paper}, {figure})"


def _read(name: str) -> pd.DataFrame:
    path = importlib.resources.files("l2s").joinpath("reference", name)
    with path.open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def _table_name(code: str) -> str:
    """"T1" -> "Table 1"."""
    if not re.fullmatch(r"T\d+", code):
        raise ValueError(f"unexpected table code {code!r} in the reference data")
    return f"Table {code[1:]}"


def _wu_role(model: str) -> tuple[str, str]:
    """(role, canonical method) of a row of Wu et al.'s tables, from its method/model column."""
    if model.startswith("DeepSeek-R1-Distill"):
        return "slow", "slow"
    if model.startswith("Qwen2.5"):
        return "quick", "quick"
    if model == "DPO":
        return "dpo", "dpo"
    return "merged", canonical_method(model)


_LUO_ROLES = {"long_cot": "slow", "short_cot": "short", "merge": "merged",
              "dpo_shortest_vs_longest": "dpo", "o1_pruner": "baseline", "cot_valve": "baseline",
              "ada_r1": "adar1"}


def _luo_role(method: str) -> str:
    if method.startswith("merge_"):  # Table 3 ablation: merge followed by SFT or DPO
        return "adar1"
    return _LUO_ROLES[method]


@functools.cache
def _merging() -> pd.DataFrame:
    raw = _read("wu2025_long_to_short_merging.csv")
    roles = raw["method"].map(_wu_role)
    df = pd.DataFrame({
        "paper": WU,
        "table": raw["table"].map(_table_name),
        "size": raw["scale"],
        "model": raw["method"],
        "role": [r for r, _ in roles],
        "method": [m for _, m in roles],
        "dataset": raw["dataset"],
        "accuracy": raw["accuracy"].astype(float),
        "mean_tokens": raw["mean_length_tokens"].astype(float),
        "reflective_responses": raw["reflective_responses"].astype("Float64"),
        "keyword_hits": raw["reflection_keywords_per_response"].astype("Float64"),
    })
    df["label"] = [reported_label(WU, t) for t in df["table"]]
    return df


def wu2025_merging() -> pd.DataFrame:
    """Wu et al. 2025 Tables 1-4: accuracy (%) and mean tokens per size, model/method and dataset;
    reflective response counts (Tables 2-4) and keyword hits per response (Tables 3-4) where printed."""
    return _merging().copy()


def wu2025_reflection_ratio() -> pd.DataFrame:
    """Wu et al. 2025 Table 6 (7B): % of reflective responses per method and dataset (long format;
    the table's "avg" column is left out — it is the mean of the others)."""
    raw = _read("wu2025_reflection_ratio.csv")
    datasets = [c for c in raw.columns if c not in ("table", "scale", "method", "avg")]
    long = raw.melt(id_vars=["table", "scale", "method"], value_vars=datasets,
                    var_name="dataset", value_name="reflective_ratio")
    roles = long["method"].map(_wu_role)
    df = pd.DataFrame({
        "paper": WU,
        "table": long["table"].map(_table_name),
        "size": long["scale"],
        "model": long["method"],
        "role": [r for r, _ in roles],
        "method": [m for _, m in roles],
        "dataset": long["dataset"],
        "reflective_ratio": long["reflective_ratio"].astype(float),
    })
    df["label"] = [reported_label(WU, t) for t in df["table"]]
    return df


def _parse_params(text: str) -> dict[str, float]:
    """"k=0.8;alpha=1.0" -> {"k": 0.8, "alpha": 1.0}."""
    out = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"malformed hyper-parameter {item!r} in wu2025_hyperparameters.csv")
        out[key.strip()] = float(value)
    return out


def wu2025_hyperparameters() -> pd.DataFrame:
    """Wu et al. 2025 Table 7: per method and size, the hyper-parameters as a dict (TIES ``k`` is the
    TRIM ratio, DARE ``p`` the drop rate, AIM ``omega``, Sens-Merging ``alpha`` and ``T``)."""
    raw = _read("wu2025_hyperparameters.csv")
    return pd.DataFrame({
        "paper": WU,
        "table": "Table 7",
        "size": raw["scale"],
        "model": raw["method"],
        "method": raw["method"].map(canonical_method),
        "params": raw["params"].map(_parse_params),
        "label": reported_label(WU, "Table 7"),
    })


def luo2025_adar1() -> pd.DataFrame:
    """Luo et al. 2025 Table 2 (7B and 1.5B main results) and Table 3 (7B ablation): accuracy (%) and
    mean tokens per method and dataset."""
    raw = _read("luo2025_adar1.csv")
    df = pd.DataFrame({
        "paper": LUO,
        "table": raw["table"].map(_table_name),
        "size": raw["scale"],
        "model": raw["method"],
        "role": raw["method"].map(_luo_role),
        "method": raw["method"].map(canonical_method),
        "dataset": raw["dataset"],
        "accuracy": raw["accuracy"].astype(float),
        "mean_tokens": raw["mean_length_tokens"].astype(float),
    })
    df["label"] = [reported_label(LUO, t) for t in df["table"]]
    return df


def luo2025_by_level() -> pd.DataFrame:
    """Luo et al. 2025, accuracy (%) and mean tokens per MATH level, READ OFF THE PAPER'S FIGURES
    (about +-10 tokens, accuracy to 2 decimals): estimates, labelled so."""
    raw = _read("luo2025_adar1_by_level_estimated.csv")
    if set(raw["source"]) != {"figure_estimate"}:
        raise ValueError("luo2025_adar1_by_level_estimated.csv: expected only figure_estimate rows")
    return pd.DataFrame({
        "paper": LUO,
        "figure": LUO_BY_LEVEL_FIGURES,
        "model": raw["method"],
        "role": raw["method"].map(_luo_role),
        "method": raw["method"].map(canonical_method),
        "level": raw["math_level"].astype(int),
        "accuracy": (raw["accuracy"].astype(float) * 100).round(6),
        "mean_tokens": raw["mean_length_tokens"].astype(float),
        "label": estimated_label(LUO, LUO_BY_LEVEL_FIGURES),
    })


def length_reduction(df: pd.DataFrame) -> pd.DataFrame:
    """Wu et al.'s length reduction of each (table, size, method) against the slow model of the same
    table: the mean over datasets of :func:`l2s.eval.metrics.length_change` (L_method − L_slow) / L_slow,
    with mean accuracy over the same datasets. Input: a frame like :func:`wu2025_merging` or
    :func:`luo2025_adar1`."""
    rows = []
    for (table, size), g in df.groupby(["table", "size"], sort=True):
        slow = g[g["role"] == "slow"].set_index("dataset")
        if slow.empty:
            continue
        for (model, role, method, label), m in g.groupby(["model", "role", "method", "label"], sort=True):
            m = m.set_index("dataset")
            common = sorted(set(m.index) & set(slow.index))
            rel = length_change(m.loc[common, "mean_tokens"], slow.loc[common, "mean_tokens"])
            rows.append({"table": table, "size": size, "model": model, "role": role, "method": method,
                         "n_datasets": len(common), "accuracy": float(m.loc[common, "accuracy"].mean()),
                         "mean_tokens": float(m.loc[common, "mean_tokens"].mean()),
                         "length_reduction": float(rel.mean()), "label": label})
    return pd.DataFrame(rows)
