"""Draw each figure from its table (see :mod:`l2s.figures.tables`); no data is computed here."""

from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from l2s.figures.style import _HATCHES, new_figure, series_styles, style
from l2s.figures.tables import MEASURED
from l2s.runs import method_label

QUANTITY_LABELS = {
    "reflective_ratio": "reflective responses (%)",
    "keyword_hits": "reflection keywords per response",
}


def _panels(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["panel"]))


def _title(panel: str, width: int = 60) -> str:
    return "\n".join(textwrap.wrap(panel, width))


# Series that share a colour (labels of one method) differ by hatch in bars and by marker in lines.
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _marker(hatch: str) -> str:
    return _MARKERS[_HATCHES.index(hatch) % len(_MARKERS)] if hatch in _HATCHES else "o"


def _fit_ncols(fig: Figure, labels: list[str], ncols: int) -> int:
    """At most ``ncols`` legend columns, fewer when long labels would run off the figure's edges
    (about 15 characters per inch at the legend's 8 pt, plus the handle)."""
    widest = max((len(lab) for lab in labels), default=1) + 8
    return max(1, min(ncols, int(fig.get_figwidth() * 15 // widest)))


def _legend(fig: Figure, styles: dict[str, tuple[str, str]], labels: list[str], ncols: int = 4) -> None:
    handles = [Patch(facecolor=styles[lab][0], hatch=styles[lab][1], edgecolor="white", label=lab)
               for lab in labels]
    fig.legend(handles=handles, loc="outside lower center", ncols=_fit_ncols(fig, labels, ncols), frameon=False)


def _hbars(ax, rows: pd.DataFrame, column: str, styles, fmt: str) -> None:
    y = np.arange(len(rows))
    values = rows[column].to_numpy(dtype=float)
    for yi, v, lab in zip(y, values, rows["label"]):
        color, hatch = styles[lab]
        ax.barh(yi, v, color=color, hatch=hatch, edgecolor="white", height=0.75)
        ax.annotate(fmt.format(v), (v, yi), xytext=(3 if v >= 0 else -3, 0), textcoords="offset points",
                    ha="left" if v >= 0 else "right", va="center", fontsize=7)
    ax.set_yticks(y, rows["label"])
    ax.invert_yaxis()
    ax.grid(axis="y", visible=False)


def length_accuracy(table: pd.DataFrame) -> Figure:
    """(a) Per panel (size × source): length reduction (%) and mean accuracy (%) as horizontal bars."""
    panels = _panels(table)
    sizes = [len(table[table["panel"] == p]) for p in panels]
    fig = new_figure(11, sum(0.24 * n + 0.9 for n in sizes) + 0.6)
    grid = fig.add_gridspec(len(panels), 2, height_ratios=[0.24 * n + 0.9 for n in sizes])
    styles = series_styles(table)
    red = table["length_reduction"].to_numpy(dtype=float) * 100
    lo, hi = min(red.min(), 0.0), max(red.max(), 0.0)
    pad = 0.18 * (hi - lo or 1.0)
    first = None
    for i, panel in enumerate(panels):
        rows = table[table["panel"] == panel].assign(length_reduction_pct=lambda f: f["length_reduction"] * 100)
        ax_l = fig.add_subplot(grid[i, 0], sharex=first[0] if first else None)
        ax_a = fig.add_subplot(grid[i, 1], sharex=first[1] if first else None)
        first = first or (ax_l, ax_a)
        _hbars(ax_l, rows, "length_reduction_pct", styles, "{:+.0f}%")
        _hbars(ax_a, rows, "accuracy", styles, "{:.1f}")
        ax_a.set_yticklabels([])
        ax_l.axvline(0, color="black", lw=0.8)
        ax_l.set_xlim(lo - pad, hi + pad)
        ax_a.set_xlim(0, 112)
        ax_l.set_title(_title(panel), loc="left")
        ax_l.set_xlabel("length change vs slow model of the same size (%)")
        ax_a.set_xlabel("accuracy, mean over datasets (%)")
    fig.suptitle("Length reduction and accuracy per method and model size (cf. Wu et al. 2025, Tables 1-4)",
                 fontweight="bold")
    return fig


def _grouped_bars(ax, rows: pd.DataFrame, styles) -> None:
    datasets = list(dict.fromkeys(rows["dataset"]))
    labels = list(dict.fromkeys(rows["label"]))
    width = 0.8 / len(labels)
    for j, lab in enumerate(labels):
        r = rows[rows["label"] == lab].set_index("dataset")
        xs = [i + (j - (len(labels) - 1) / 2) * width for i, d in enumerate(datasets) if d in r.index]
        vals = [float(r.loc[d, "value"]) for d in datasets if d in r.index]
        color, hatch = styles[lab]
        ax.bar(xs, vals, width=width, color=color, hatch=hatch, edgecolor="white")
    ax.set_xticks(range(len(datasets)), datasets, rotation=20 if len(datasets) > 3 else 0)
    ax.grid(axis="x", visible=False)


CORRECTION_LABELS = {
    "correction_rate": "wrong → right (correction)",
    "harmful_check_rate": "right → wrong (harmful)",
    "unchanged_check_rate": "unchanged by the check",
}
NO_CORRECTION_DATA = ("{size}: no run records interim answers by level, so whether reflection corrects answers "
                      "cannot be drawn (runs evaluated before l2s recorded them: rerun their evaluation, or "
                      "re-score their generations with `l2s score`; or datasets without levels).")
NOTHING_CHECKED = ("{panel}: no response boxed an answer before its first reflection keyword, so none could be "
                   "checked: no correction rate to draw.")


def _note(ax, text: str) -> None:
    ax.axis("off")
    ax.text(0.0, 0.5, _title(text, 110), transform=ax.transAxes, va="center", fontsize=8, style="italic")


def _correction_rows(table: pd.DataFrame, size: str) -> list[tuple[str, pd.DataFrame | None]]:
    """The figure rows of one measured size's correction rates: one per dataset with levels, or (None) a
    note that no run of that size records interim answers."""
    if "level" not in table:
        return [(size, None)]
    rows = table[(table["source"] == MEASURED) & (table["size"] == size) & table["quantity"].isin(CORRECTION_LABELS)]
    return [(panel, rows[rows["panel"] == panel]) for panel in dict.fromkeys(rows["panel"])] or [(size, None)]


def _rate_lines(ax, rows: pd.DataFrame, quantity: str, styles, ls: str) -> None:
    """One line per series, with its 95% Wilson interval (``value_lo``, ``value_hi``) as error bars
    drawn in the line's colour and style."""
    r = rows[rows["quantity"] == quantity]
    for lab in dict.fromkeys(r["label"]):
        x = r[r["label"] == lab].sort_values("level")
        color, hatch = styles[lab]
        value = x["value"].to_numpy(dtype=float)
        ax.plot(x["level"], value, marker=_marker(hatch), ms=4, lw=1.4, color=color, ls=ls)
        if "value_lo" in x:
            err = np.stack([value - x["value_lo"].to_numpy(dtype=float), x["value_hi"].to_numpy(dtype=float) - value])
            bars = ax.errorbar(x["level"], value, yerr=err, fmt="none", ecolor=color, elinewidth=0.8, capsize=2,
                               alpha=0.6)
            bars.lines[2][0].set_linestyle(ls)


def _nothing_to_draw(rows: pd.DataFrame | None) -> bool:
    return rows is None or rows["value"].isna().all()


def _correction_axes(ax_c, ax_u, panel: str, rows: pd.DataFrame | None, styles) -> None:
    """Correction (solid) and harmful-check (dotted) rates by level on ``ax_c``, unchanged on ``ax_u``;
    a note on ``ax_c`` (``ax_u`` removed) where there is nothing to draw."""
    if _nothing_to_draw(rows):
        _note(ax_c, NO_CORRECTION_DATA.format(size=panel) if rows is None else NOTHING_CHECKED.format(panel=panel))
        ax_u.remove()
        return
    checked = int(rows.drop_duplicates(["run", "level"])["checked"].sum())
    _rate_lines(ax_c, rows, "correction_rate", styles, "-")
    _rate_lines(ax_c, rows, "harmful_check_rate", styles, ":")
    _rate_lines(ax_u, rows, "unchanged_check_rate", styles, "-")
    ax_c.legend(handles=[Line2D([], [], color="black", ls=ls, label=CORRECTION_LABELS[q]) for q, ls in
                         (("correction_rate", "-"), ("harmful_check_rate", ":"))], loc="best", frameon=False)
    ax_c.set_title(_title(f"{panel} — % of the checked responses (answer boxed before the first reflection "
                          f"keyword; {checked} in all its runs; bars: 95% Wilson intervals)", 55), loc="left")
    ax_c.set_ylabel("checked responses (%)")
    ax_u.set_ylabel("checked responses unchanged (%)")
    for ax in (ax_c, ax_u):
        ax.set_ylim(-3, 103)
        ax.set_xticks(sorted(rows["level"].unique()))
        ax.set_xlabel("difficulty level")


def self_correction(table: pd.DataFrame) -> Figure:
    """(b) Reflective-response ratio and keyword hits per response, per dataset and method; below each
    measured size, whether the reflection corrects the interim answer (the last box before the first
    reflection keyword), by level and dataset: wrong → right and right → wrong (left), unchanged (right),
    as % of the checked responses, each point with its 95% Wilson score interval as error bars. A size
    without such data gets a one-line note instead of empty axes; the reported panels (the papers give no
    such rate) follow."""
    bars = table[~table["quantity"].isin(CORRECTION_LABELS)]
    cells = list(dict.fromkeys(zip(bars["panel"], bars["quantity"], bars["source"] == MEASURED, bars["size"])))
    layout: list[tuple] = []  # ("bars", cells) or ("rates", panel, rows)

    def flow(group: list[tuple]) -> None:
        layout.extend(("bars", group[i:i + 2]) for i in range(0, len(group), 2))

    measured = [c for c in cells if c[2]]
    for panel in dict.fromkeys(c[0] for c in measured):
        flow([c for c in measured if c[0] == panel])
        size = next(c[3] for c in measured if c[0] == panel)
        layout.extend(("rates", *r) for r in _correction_rows(table, size))
    flow([c for c in cells if not c[2]])
    heights = [0.5 if item[0] == "rates" and _nothing_to_draw(item[2]) else 2.9 for item in layout]
    fig = new_figure(11, sum(heights) + 1.0)
    styles = series_styles(table)
    axes = fig.add_gridspec(len(layout), 2, height_ratios=heights).subplots(squeeze=False)
    for (ax_l, ax_r), item in zip(axes, layout):
        if item[0] == "rates":
            _correction_axes(ax_l, ax_r, item[1], item[2], styles)
            continue
        for ax, (panel, quantity, _, _) in zip((ax_l, ax_r), item[1]):
            _grouped_bars(ax, bars[(bars["panel"] == panel) & (bars["quantity"] == quantity)], styles)
            ax.set_title(_title(panel, 55), loc="left")
            ax.set_ylabel(QUANTITY_LABELS[quantity])
            ax.set_xlabel("dataset")
            if quantity == "reflective_ratio":
                ax.set_ylim(0, 105)
        if len(item[1]) == 1:
            ax_r.remove()
    _legend(fig, styles, list(styles), ncols=5)
    fig.suptitle("Self-correction: reflective responses, reflection keywords (cf. Wu et al. 2025, Table 6) "
                 "and what the check changes", fontweight="bold")
    return fig


def _lines(ax, rows: pd.DataFrame, column: str, styles, linestyle: str = "-") -> None:
    for lab in dict.fromkeys(rows["label"]):
        r = rows[rows["label"] == lab].sort_values("level")
        vals = r[column].to_numpy(dtype=float)
        if np.isnan(vals).all():
            continue
        color, hatch = styles[lab]
        ax.plot(r["level"], vals, marker=_marker(hatch), ms=4, lw=1.6, color=color,
                ls="--" if hatch else linestyle)
    levels = sorted(rows["level"].unique())
    ax.set_xticks(levels)
    ax.set_xlabel("difficulty level")


def _line_legend(fig: Figure, styles, labels, ncols: int = 5) -> None:
    handles = [Line2D([], [], color=styles[lab][0], ls="--" if styles[lab][1] else "-", marker=_marker(styles[lab][1]),
                      ms=4, label=lab) for lab in labels]
    fig.legend(handles=handles, loc="outside lower center", ncols=_fit_ncols(fig, labels, ncols), frameon=False)


def difficulty(table: pd.DataFrame) -> Figure:
    """(c) Mean length and reflective ratio by difficulty level, one line per model (cf. Wu Fig. 2a/2b)."""
    panels = _panels(table)
    fig = new_figure(11, 2.8 * len(panels) + 0.9)
    styles = series_styles(table)
    axes = fig.subplots(len(panels), 2, squeeze=False)
    for (ax_t, ax_r), panel in zip(axes, panels):
        rows = table[table["panel"] == panel]
        _lines(ax_t, rows, "mean_tokens", styles)
        _lines(ax_r, rows, "reflective_ratio", styles)
        ax_t.set_ylabel("mean response length (tokens)")
        ax_r.set_ylabel("reflective responses (%)")
        ax_r.set_ylim(-3, 103)
        ax_t.set_title(_title(panel), loc="left")
    _line_legend(fig, styles, list(styles))
    fig.suptitle("Difficulty-adaptive length: length and reflection by level (cf. Wu et al. 2025, Fig. 2)",
                 fontweight="bold")
    return fig


def adar1_by_level(table: pd.DataFrame) -> Figure:
    """(c) Ada-R1 by level: long-CoT ratio, accuracy and tokens (cf. Luo et al. 2025, Figs. 4-6)."""
    panels = _panels(table)
    fig = new_figure(12, 2.8 * len(panels) + 0.9)
    styles = series_styles(table)
    axes = fig.subplots(len(panels), 3, squeeze=False)
    columns = (("long_cot_ratio", "long-CoT responses (%)"), ("accuracy", "accuracy (%)"),
               ("mean_tokens", "mean response length (tokens)"))
    for row_axes, panel in zip(axes, panels):
        rows = table[table["panel"] == panel]
        for ax, (column, ylabel) in zip(row_axes, columns):
            if rows[column].isna().all():
                ax.axis("off")
                ax.text(0.0, 0.5, _title(f"{panel}: the paper's long-CoT ratio per level (Fig. 4) is not "
                                         "in the reference data; accuracy and tokens are read off its "
                                         "figures (estimates).", 45),
                        transform=ax.transAxes, va="center", fontsize=8, style="italic")
                continue
            _lines(ax, rows, column, styles)
            ax.set_ylabel(ylabel)
            ax.set_title(_title(panel, 45), loc="left", fontsize=8.5)
            if column != "mean_tokens":
                ax.set_ylim(-3, 103)
    _line_legend(fig, styles, list(styles))
    fig.suptitle("Ada-R1 by difficulty level (cf. Luo et al. 2025, Figs. 4-6)", fontweight="bold")
    return fig


_OFFSETS = [(4, 3), (4, -9), (-4, 3), (-4, -9), (4, 10), (4, -16), (-4, 10), (-4, -16), (4, 17), (-4, 17),
            (4, -23), (-4, -23)]


def _place_labels(fig: Figure, annotations: list) -> None:
    """Move each point label to the first nearby offset where it overlaps no label placed before it
    (a tiny greedy label placer: matplotlib has none, and adjustText is not a dependency)."""
    canvas = FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    placed: dict = {}
    for ann in annotations:
        boxes = placed.setdefault(ann.axes, [])
        for dx, dy in _OFFSETS:
            ann.xyann = (dx, dy)
            ann.set_horizontalalignment("left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in boxes):
                break
        else:
            ann.xyann, _ = _OFFSETS[0], ann.set_horizontalalignment("left")
            box = ann.get_window_extent(renderer)
        boxes.append(box)


def pareto(table: pd.DataFrame) -> Figure:
    """(d) Accuracy vs mean length of every run (α sweep included, joined by a thin line), Pareto
    front dashed; points on the front have a black edge."""
    panels = _panels(table)
    ncols = 2
    nrows = -(-len(panels) // ncols)
    fig = new_figure(11, 3.8 * nrows + 1.0)
    styles = series_styles(table.assign(label=table["method"]))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    annotations = []
    for ax, panel in zip(axes.flat, panels):
        rows = table[table["panel"] == panel]
        front = rows[rows["on_front"]].sort_values("mean_tokens")
        ax.plot(front["mean_tokens"], front["accuracy"], ls="--", color="black", lw=0.9, zorder=1)
        for method, sweep in rows[rows["sweep"]].groupby("method", sort=True):
            sweep = sweep.sort_values("params")
            ax.plot(sweep["mean_tokens"], sweep["accuracy"], lw=0.8, alpha=0.6, color=styles[method][0], zorder=1)
        for r in rows.itertuples(index=False):
            ax.scatter(r.mean_tokens, r.accuracy, s=44 if r.on_front else 26, color=styles[r.method][0], zorder=2,
                       edgecolors="black" if r.on_front else "none", linewidths=0.8)
            text = r.params if r.sweep else r.label
            annotations.append(ax.annotate(text, (r.mean_tokens, r.accuracy), xytext=_OFFSETS[0],
                                           textcoords="offset points", fontsize=6.5))
        ax.set_title(_title(panel, 55), loc="left")
        ax.set_xlabel("mean response length (tokens)")
        ax.set_ylabel("accuracy, mean over datasets (%)")
        ax.margins(x=0.18, y=0.12)
    for ax in axes.flat[len(panels):]:
        ax.remove()
    legend_styles = {lab: styles[m] for lab, m in dict.fromkeys(
        zip(table["method"].map(method_label), table["method"]))}
    _legend(fig, legend_styles, list(legend_styles), ncols=6)
    fig.suptitle("Accuracy vs length: every run and method, Pareto front dashed (black edge: on the front)",
                 fontweight="bold")
    _place_labels(fig, annotations)
    return fig


def draw(name: str, table: pd.DataFrame) -> Figure:
    with style():
        return DRAWERS[name](table)


DRAWERS = {"length_accuracy": length_accuracy, "self_correction": self_correction,
           "difficulty": difficulty, "adar1_by_level": adar1_by_level, "pareto": pareto}
__all__ = ["DRAWERS", "MEASURED", "draw"]


def sweep_front(table: pd.DataFrame) -> Figure:
    """A hyper-parameter sweep (:func:`l2s.figures.tables.sweep_points`): (left) accuracy vs mean length
    of every evaluated value, labelled ``value #order``, the dev front dashed, its test results hollow,
    a reference sweep's dev points in grey; (right) accuracy and length against the value."""
    from l2s.figures.style import method_color

    with style():
        fig = new_figure(11, 4.2)
        ax, ax_v = fig.subplots(1, 2)
        ax_t = ax_v.twinx()
        param = table["param"].iloc[0]
        sweep = table[table["source"] == "sweep"].sort_values("value")
        color = method_color(sweep["method"].iloc[0]) if len(sweep) else "#1f77b4"
        annotations = []
        for source, kw in (("reference", {"color": "#a6a6a6", "s": 18, "zorder": 1}),
                           ("sweep", {"color": color, "s": 36, "zorder": 3}),
                           ("sweep (test)", {"facecolors": "none", "edgecolors": color, "marker": "s", "s": 44,
                                             "zorder": 3})):
            rows = table[table["source"] == source]
            if rows.empty:
                continue
            front = rows[rows["on_front"]].sort_values("mean_tokens")
            ax.plot(front["mean_tokens"], front["accuracy"], ls="--" if source != "sweep (test)" else ":",
                    lw=0.9, color="black" if source == "sweep" else kw.get("color", color), zorder=2)
            ax.scatter(rows["mean_tokens"], rows["accuracy"], label=f"{source} ({len(rows)})", **kw)
            if source == "sweep":
                for r in rows.itertuples(index=False):
                    annotations.append(ax.annotate(f"{r.value:g} #{r.order}", (r.mean_tokens, r.accuracy),
                                                   xytext=_OFFSETS[0], textcoords="offset points", fontsize=6.5))
            if source != "sweep (test)":
                r = rows.sort_values("value")
                ax_v.plot(r["value"], r["accuracy"], marker="o", ms=3, lw=1.2, color=kw.get("color", color),
                          zorder=kw["zorder"])
                ax_t.plot(r["value"], r["mean_tokens"], marker="s", ms=3, lw=1.2, ls="--",
                          color=kw.get("color", color), zorder=kw["zorder"])
        ax.set_xlabel("mean response length (tokens)")
        ax.set_ylabel("accuracy, mean over datasets (%)")
        ax.set_title("dev front (dashed) and its test results (hollow)", loc="left")
        ax.legend(loc="lower right", frameon=False)
        ax.margins(x=0.15, y=0.12)
        ax_v.set_xlabel(param)
        ax_v.set_ylabel("accuracy (%), solid")
        ax_t.set_ylabel("mean tokens, dashed")
        ax_t.spines["right"].set_visible(True)
        ax_t.grid(False)
        ax_v.set_title(f"accuracy and length against {param} (dev)", loc="left")
        fig.suptitle(f"Sweep of {param}: {len(sweep)} dev evaluations", fontweight="bold")
        _place_labels(fig, annotations)
    return fig
