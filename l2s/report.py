"""The notebooks' setup and results cells: each notebook ends with a table or figure and a short
reading of it, written from the numbers (:func:`show`).

- :func:`setup_notebook`: logging, pandas display, and progress bars as widgets in JupyterLab but none
  in a notebook run in batch (papermill, ``l2s study``): the executed notebooks in ``runs/`` keep the
  results, not thousands of progress updates;
- ``*_reading``: one markdown paragraph per notebook, from the table that notebook shows
  (:mod:`l2s.notebook_helpers`' tables, an Ada-R1 summary, the figures' CSV).
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd

# jupyter_server sets it for every kernel it starts for a notebook; papermill / nbclient do not.
SESSION_ENV = "JPY_SESSION_NAME"
FIGURE_WIDTH = 900  # px: figures are shown at this width in the notebook (the files keep theirs)


def setup_notebook() -> None:
    """Configure a notebook kernel: INFO logging, full-width table cells, and progress bars as widgets
    when a Jupyter frontend drives the kernel, none in batch (:func:`silence_progress_bars`)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    pd.set_option("display.max_colwidth", None)
    if not interactive():
        silence_progress_bars()


def interactive() -> bool:
    """Whether a Jupyter server started this kernel for a notebook (JupyterLab, Notebook), rather
    than papermill or another batch runner."""
    return bool(os.environ.get(SESSION_ENV))


def silence_progress_bars() -> None:
    """Switch every tqdm progress bar off from now on, in whatever module it was imported and even
    where a caller passes ``disable=False`` (``progress=True``): ``tqdm.std.tqdm`` is the base of the
    text, notebook and ``tqdm.auto`` bars (and of transformers' and datasets' own)."""
    from tqdm.std import tqdm

    if getattr(tqdm.__init__, "l2s_quiet", False):
        return
    init = tqdm.__init__

    def quiet_init(self, *args, **kwargs):
        kwargs["disable"] = True
        init(self, *args, **kwargs)

    quiet_init.l2s_quiet = True
    tqdm.__init__ = quiet_init


def show(result: Any, reading: str) -> None:
    """Display a table or figure, then its reading as markdown."""
    from IPython.display import Markdown, display

    display(result)
    display(Markdown(reading))


def _missing(x: Any) -> bool:
    return x is None or pd.isna(x)


def _pct(x: float | None) -> str:
    return "n/a" if _missing(x) else f"{x:.1f}%"


def _signed(x: float | None, unit: str = "%") -> str:
    return "n/a" if _missing(x) else f"{x:+.1f}{unit}"


def _tokens(x: float | None) -> str:
    return "n/a" if _missing(x) else f"{x:.1f}"


def _times100(x: float | None) -> float | None:
    return None if _missing(x) else 100 * x


def _level_key(level: str) -> tuple:
    return (0, int(level), "") if str(level).isdigit() else (1, 0, str(level))


# -- 00 models ----------------------------------------------------------------------------------------
def models_reading(cards: pd.DataFrame) -> str:
    """A models run in words, from :func:`l2s.notebook_helpers.training_cards`."""
    parts = []
    for role, row in cards.iterrows():
        if pd.isna(row.get("parameters", float("nan"))):
            if isinstance(row.get("checkpoint"), str):
                parts.append(f"**{role}** is `{row['checkpoint']}` (no training card: a given checkpoint or a "
                             "stand-in)")
            continue
        parent = "from scratch" if row["parent"] == "-" else f"from the {row['parent']} model"
        parts.append(f"**{role}** ({int(row['parameters']):,} parameters) was trained {parent} for "
                     f"{int(row['steps'])} steps (lr {row['lr']:g}) on {row['styles']} solutions, to a final loss "
                     f"of {row['final loss']:.4f} in {row['seconds']:.0f} s")
    if not parts:
        raise ValueError("models_reading: no model in the table (expected rows quick, slow, short)")
    return "; ".join(parts) + ". Every later step reads these checkpoints from `models.json`."


# -- 01 merge -----------------------------------------------------------------------------------------
def merge_reading(record: dict) -> str:
    """A merge record (``merge.json``) in words."""
    m = record["l2s_merge"]
    params = ", ".join(f"{k}={v}" for k, v in sorted(m["params"].items())) or "no parameters"
    inputs = [x["input"] for x in m["models"]]
    into = f"into the base `{m['base']['input']}`" if m.get("base") else "with each other (no base)"
    calibration = m["config"].get("calibration") or []
    calib = f", calibrated on {len(calibration)} file(s)" if calibration else ""
    return (f"**{m['method']}** ({params}) merged {', '.join(f'`{x}`' for x in inputs)} {into}{calib}, in "
            f"{m['dtype']}, to `{record['path']}` ({len(m['outputs'])} shard(s), in the cache, not in git). "
            "Nothing is measured yet: `02_evaluate` with `merge_run` set to this run says what the merge does "
            "to length and accuracy.")


# -- 02 evaluate --------------------------------------------------------------------------------------
def _correction_text(overall: pd.Series, levels: pd.DataFrame) -> str:
    """Whether the reflection corrects answers (:func:`l2s.eval.metrics.correction`), where the table has
    the columns (a run that records interim answers) and the run reflects at all: the rates among the
    checked responses, and the correction rate of the easiest against the hardest level checked."""
    if "correction %" not in overall.index or _missing(overall["checked"]) or not overall["reflective %"]:
        return ""
    checked = int(overall["checked"])
    if not checked:
        return (" No reflective response boxed an answer before its first reflection keyword, so whether the "
                "check corrects answers cannot be read off this run.")
    text = (f" Of the {checked} response(s) that boxed an answer before their first reflection keyword, the check "
            f"corrected {_pct(overall['correction %'])} (wrong → right), broke {_pct(overall['harmful check %'])} "
            f"(right → wrong) and left {_pct(overall['unchanged check %'])} unchanged.")
    seen = levels[levels["checked"] > 0] if "checked" in levels else levels.iloc[:0]
    if len(seen) > 1:
        lo, hi = seen.iloc[0], seen.iloc[-1]
        text = text[:-1] + (f"; its correction rate goes {_pct(lo['correction %'])} → {_pct(hi['correction %'])} "
                            f"from level {seen.index[0]} to level {seen.index[-1]}.")
    return text


def levels_reading(table: pd.DataFrame) -> str:
    """An evaluation run in words, from :func:`l2s.notebook_helpers.metrics_table`: the whole dataset,
    then the easiest against the hardest level, and, for a run that records interim answers, how often
    its reflection corrects (or breaks) the answer given before it."""
    paragraphs = []
    for dataset, rows in table.groupby(level="dataset", sort=False):
        rows = rows.droplevel("dataset")
        if "all" not in rows.index:
            continue
        overall = rows.loc["all"]
        text = (f"**{dataset}** ({int(overall['n'])} responses): accuracy {_pct(overall['accuracy %'])}, "
                f"{_tokens(overall['mean tokens'])} tokens on average, {_pct(overall['reflective %'])} reflective.")
        levels = rows.drop(index="all")
        if len(levels) > 1:
            lo, hi = levels.iloc[0], levels.iloc[-1]
            text += (f" From level {levels.index[0]} to level {levels.index[-1]} the mean length goes "
                     f"{_tokens(lo['mean tokens'])} → {_tokens(hi['mean tokens'])} tokens, accuracy "
                     f"{_pct(lo['accuracy %'])} → {_pct(hi['accuracy %'])}, reflective "
                     f"{_pct(lo['reflective %'])} → {_pct(hi['reflective %'])}.")
        text += _correction_text(overall, levels)
        if overall["truncated"]:
            text += (f" {int(overall['truncated'])} response(s) hit the token budget: their lengths are lower "
                     "bounds and their answers may be cut off.")
        paragraphs.append(text)
    if not paragraphs:
        raise ValueError("levels_reading: the metrics table is empty")
    return "\n\n".join(paragraphs)


# -- 03 Ada-R1 ----------------------------------------------------------------------------------------
def adar1_reading(summary: dict) -> str:
    """An Ada-R1 run in words, from its summary (``run_adar1(...)["summary"]``): each model's accuracy
    and length change against the reference (long) model, and how the Ada-R1 variants' long-CoT
    (reflective) ratio moves with difficulty."""
    reference, runs = summary["reference"], summary["runs"]
    paragraphs = []
    for dataset in runs[reference]:
        ref = runs[reference][dataset]
        text = [f"**{dataset}**: the {reference} model answers {_pct(_times100(ref['accuracy']))} with "
                f"{_tokens(ref['mean_tokens'])} tokens on average."]
        for name, by_dataset in runs.items():
            if name == reference or dataset not in by_dataset:
                continue
            r = by_dataset[dataset]
            text.append(f"{name}: {_pct(_times100(r['accuracy']))} "
                        f"({_signed(_times100(r.get('accuracy_delta')), ' pts')}), "
                        f"length {_signed(_times100(r.get('length_change')))}.")
            levels = sorted(r.get("by_level", {}).items(), key=lambda kv: _level_key(kv[0]))
            if name != "merge" and len(levels) > 1:
                (l0, v0), (l1, v1) = levels[0], levels[-1]
                text[-1] = text[-1][:-1] + (f"; long-CoT ratio {_pct(_times100(v0['reflective_ratio']))} at level "
                                            f"{l0} → {_pct(_times100(v1['reflective_ratio']))} at level {l1}.")
        paragraphs.append(" ".join(text))
    return "\n\n".join(paragraphs)


# -- 04 figures ---------------------------------------------------------------------------------------
FIGURE_COLUMNS = ["size", "role", "model", "accuracy %", "mean tokens", "length vs slow %"]


def figures_table(out_dir: str | Path) -> pd.DataFrame:
    """The measured rows of ``length_accuracy.csv``: size, role, model, accuracy %, mean tokens and
    length change vs the slow model (%), one row per run; empty when that figure was skipped (no run
    had its data)."""
    path = Path(out_dir) / "length_accuracy.csv"
    if not path.is_file():
        return pd.DataFrame(columns=FIGURE_COLUMNS)
    frame = pd.read_csv(path)
    missing = sorted({"source", "size", "role", "label", "params", "accuracy", "mean_tokens",
                      "length_reduction"} - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    frame = frame[frame["source"] == "measured"].fillna({"params": ""})
    return pd.DataFrame({"size": frame["size"], "role": frame["role"],
                         "model": (frame["label"] + " " + frame["params"]).str.strip(),
                         "accuracy %": frame["accuracy"].round(2), "mean tokens": frame["mean_tokens"].round(2),
                         "length vs slow %": (100 * frame["length_reduction"]).round(1)}).reset_index(drop=True)


def figures_reading(table: pd.DataFrame) -> str:
    """Per size: the slow model, then the shortest and the most accurate merge (:func:`figures_table`)."""
    if table.empty:
        return ("No measured run has what **length_accuracy** draws yet (evaluations of the slow model and "
                "of merges, tagged with a size): run the evaluation steps, then this notebook again.")
    paragraphs = []
    for size, rows in table.groupby("size", sort=False):
        slow, merged = rows[rows["role"] == "slow"], rows[rows["role"] == "merged"]
        text = f"**{size}**:"
        if not slow.empty:
            s = slow.iloc[0]
            text += f" the slow model answers {_pct(s['accuracy %'])} with {_tokens(s['mean tokens'])} tokens."
        if not merged.empty:
            short = merged.sort_values(["length vs slow %", "accuracy %"], ascending=[True, False]).iloc[0]
            best = merged.sort_values(["accuracy %", "length vs slow %"], ascending=[False, True]).iloc[0]
            text += (f" Of {len(merged)} merges the shortest is {short['model']} "
                     f"({_signed(short['length vs slow %'])} length, {_pct(short['accuracy %'])} accuracy)")
            text += (", also the most accurate." if best.name == short.name else
                     f", the most accurate {best['model']} ({_pct(best['accuracy %'])}, "
                     f"{_signed(best['length vs slow %'])} length).")
        paragraphs.append(text)
    return "\n\n".join(paragraphs)


def show_figures(written: dict[str, list[Path]], width: int = FIGURE_WIDTH) -> None:
    """Display each figure's PNG, scaled down to ``width`` pixels so that the executed notebook stays
    small (the PNG/PDF files are untouched)."""
    from IPython.display import Image, Markdown, display

    for name, files in written.items():
        png = next((Path(p) for p in files if Path(p).suffix == ".png"), None)
        if png is None:
            raise FileNotFoundError(f"figure {name}: no PNG among {[str(p) for p in files]}")
        display(Markdown(f"**{name}** (`{png}`)"), Image(data=scaled_png(png, width)))


def scaled_png(path: str | Path, width: int) -> bytes:
    """The PNG at ``path`` scaled to at most ``width`` pixels wide (aspect kept), on white, in 256
    colours (a plot has few), as PNG bytes: a third of the original's size or less."""
    from PIL import Image

    with Image.open(path) as im:
        rgba = im.convert("RGBA")
    if rgba.width > width:
        rgba = rgba.resize((width, round(rgba.height * width / rgba.width)), Image.Resampling.LANCZOS)
    flat = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    out = io.BytesIO()
    flat.quantize(colors=256).save(out, format="PNG", optimize=True)
    return out.getvalue()


# -- 05 explore ---------------------------------------------------------------------------------------
def compare_reading(table: pd.DataFrame, label_a: str = "A", label_b: str = "B") -> str:
    """Two runs in words, from :func:`l2s.notebook_helpers.compare_by_level`: B against A on the whole
    dataset, and the levels where B's length changes most and least."""
    change = "length change B vs A %"
    paragraphs = []
    for dataset, rows in table.groupby(level="dataset", sort=False):
        rows = rows.droplevel("dataset")
        text = f"**{dataset}**:"
        if "all" in rows.index:
            r = rows.loc["all"]
            text += (f" {label_b} against {label_a}: length {_signed(r[change])} "
                     f"({_tokens(r['mean tokens A'])} → {_tokens(r['mean tokens B'])} tokens), accuracy "
                     f"{_pct(r['accuracy % A'])} → {_pct(r['accuracy % B'])}, reflective "
                     f"{_pct(r['reflective % A'])} → {_pct(r['reflective % B'])}.")
        levels = rows.drop(index="all", errors="ignore").dropna(subset=[change])
        if len(levels) > 1:
            most, least = levels[change].idxmin(), levels[change].idxmax()
            text += (f" By level, {label_b} is shortest relative to {label_a} at level {most} "
                     f"({_signed(levels.loc[most, change])}) and longest at level {least} "
                     f"({_signed(levels.loc[least, change])}).")
        paragraphs.append(text)
    if not paragraphs:
        raise ValueError("compare_reading: the two runs share no dataset")
    return "\n\n".join(paragraphs)
