"""l2s.report: the notebooks' results readings (from the tables the notebooks show), the figures'
down-scaled display, and progress bars: widgets under a Jupyter server, none in batch."""

import io
import json
import logging

import pandas as pd
import pytest
import tqdm.std
from PIL import Image

from l2s import notebook_helpers as nh
from l2s import report


def _block(n, accuracy, tokens, reflective, truncated=0):
    return {"n": n, "accuracy": accuracy, "mean_tokens": tokens, "median_tokens": tokens,
            "reflective_ratio": reflective, "keyword_hits": 2 * reflective, "truncated": truncated}


def _run(path, levels: dict, truncated=0):
    """An evaluation run's metrics.json: {level: (n, accuracy, tokens, reflective)}."""
    by_level = {str(k): _block(*v) for k, v in levels.items()}
    n = sum(v[0] for v in levels.values())
    overall = _block(n, sum(v[0] * v[1] for v in levels.values()) / n, sum(v[0] * v[2] for v in levels.values()) / n,
                     sum(v[0] * v[3] for v in levels.values()) / n, truncated)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"tags": {}}))
    (path / "metrics.json").write_text(json.dumps({"datasets": {"toy": {**overall, "by_level": by_level}},
                                                   "overall": overall}))
    return path


@pytest.fixture
def slow_and_merge(tmp_path):
    slow = _run(tmp_path / "slow", {1: (10, 1.0, 40.0, 1.0), 5: (10, 0.9, 60.0, 1.0)})
    merge = _run(tmp_path / "merge", {1: (10, 1.0, 20.0, 0.0), 5: (10, 0.8, 57.0, 0.5)}, truncated=3)
    return slow, merge


def test_levels_reading_gives_the_whole_dataset_and_easiest_against_hardest(slow_and_merge):
    text = report.levels_reading(nh.metrics_table(slow_and_merge[1]))
    assert text.startswith("**toy** (20 responses): accuracy 90.0%, 38.5 tokens on average, 25.0% reflective.")
    assert "From level 1 to level 5 the mean length goes 20.0 → 57.0 tokens, accuracy 100.0% → 80.0%" in text
    assert "reflective 0.0% → 50.0%" in text and "3 response(s) hit the token budget" in text
    assert "token budget" not in report.levels_reading(nh.metrics_table(slow_and_merge[0]))


def test_compare_reading_names_the_levels_of_largest_and_smallest_change(slow_and_merge):
    table = nh.compare_by_level(*slow_and_merge)
    text = report.compare_reading(table, "slow", "ties")
    # all: (38.5 - 50) / 50 = -23.0%; level 1: -50.0%, level 5: -5.0%
    assert "ties against slow: length -23.0% (50.0 → 38.5 tokens), accuracy 95.0% → 90.0%" in text
    assert "shortest relative to slow at level 1 (-50.0%) and longest at level 5 (-5.0%)" in text


def test_adar1_reading_reports_deltas_and_the_long_cot_ratio_by_level():
    def entry(acc, tokens, refl, delta=None, change=None, levels=None):
        return {"toy": {"accuracy": acc, "mean_tokens": tokens, "reflective_ratio": refl, "n": 20,
                        "accuracy_delta": delta, "length_change": change,
                        "by_level": {str(k): {"accuracy": a, "mean_tokens": t, "n": 10, "reflective_ratio": r}
                                     for k, (a, t, r) in (levels or {}).items()}}}
    summary = {"reference": "long", "runs": {
        "long": entry(1.0, 40.0, 1.0, levels={1: (1.0, 34, 1.0), 5: (1.0, 48, 1.0)}),
        "merge": entry(0.85, 40.0, 1.0, -0.15, 0.0, levels={1: (0.8, 34, 1.0), 5: (0.9, 48, 1.0)}),
        "bilevel": entry(0.99, 29.0, 0.4, -0.01, -0.275, levels={10: (1.0, 17, 0.0), 2: (1.0, 17, 0.1),
                                                                  5: (0.98, 48, None)})}}
    text = report.adar1_reading(summary)
    assert text.startswith("**toy**: the long model answers 100.0% with 40.0 tokens on average.")
    assert "merge: 85.0% (-15.0 pts), length +0.0%." in text
    # levels in numeric order (2, 5, 10); an empty level's ratio is null
    assert "bilevel: 99.0% (-1.0 pts), length -27.5%; long-CoT ratio 10.0% at level 2 → 0.0% at level 10." in text


def test_models_reading_tells_trained_and_given_models_apart():
    cards = pd.DataFrame([
        {"role": "quick", "checkpoint": "c/quick", "parameters": 81360, "parent": "-", "styles": "direct 1",
         "steps": 1000, "lr": 0.003, "batch": 64, "final loss": 0.10544, "seconds": 517.3},
        {"role": "slow", "checkpoint": "c/slow", "parameters": 81360, "parent": "quick", "styles": "long 1",
         "steps": 500, "lr": 0.0005, "batch": 64, "final loss": 0.0039, "seconds": 169.7},
        {"role": "short", "checkpoint": "hub/short"}]).set_index("role")
    text = report.models_reading(cards)
    assert ("**quick** (81,360 parameters) was trained from scratch for 1000 steps (lr 0.003) on direct 1 "
            "solutions, to a final loss of 0.1054 in 517 s") in text
    assert "**slow** (81,360 parameters) was trained from the quick model for 500 steps" in text
    assert "**short** is `hub/short` (no training card" in text
    with pytest.raises(ValueError, match="no model in the table"):
        report.models_reading(pd.DataFrame({"checkpoint": [None]}, index=["quick"]))


def test_merge_reading():
    record = {"path": ".cache/merged/x", "l2s_merge": {
        "method": "ties", "params": {"k": 0.8, "alpha": 1.0}, "base": {"input": "q"}, "models": [{"input": "s"}],
        "dtype": "float32", "config": {"calibration": []}, "outputs": {"model.safetensors": "sha"}}}
    text = report.merge_reading(record)
    assert text.startswith("**ties** (alpha=1.0, k=0.8) merged `s` into the base `q`, in float32, to "
                           "`.cache/merged/x` (1 shard(s)")
    record["l2s_merge"].update(base=None, models=[{"input": "a"}, {"input": "b"}], config={"calibration": ["f"]})
    assert "merged `a`, `b` with each other (no base), calibrated on 1 file(s)" in report.merge_reading(record)


def test_figures_table_and_reading(tmp_path):
    rows = [("measured", "toy-s", "slow", "Slow", "", 100.0, 40.0, 0.0),
            ("measured", "toy-s", "merged", "TIES", "k=0.8", 95.0, 30.0, -0.25),
            ("measured", "toy-s", "merged", "TA", "alpha=0.7", 99.0, 39.0, -0.025),
            ("reported (Wu et al. 2025, Table 1)", "7B", "merged", "TIES", "", 60.0, 500.0, -0.4)]
    cols = ["source", "size", "role", "label", "params", "accuracy", "mean_tokens", "length_reduction"]
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "length_accuracy.csv", index=False)
    table = report.figures_table(tmp_path)
    assert list(table.columns) == report.FIGURE_COLUMNS and len(table) == 3  # measured rows only
    assert table["model"].tolist() == ["Slow", "TIES k=0.8", "TA alpha=0.7"]
    assert table["length vs slow %"].tolist() == [0.0, -25.0, -2.5]
    assert report.figures_reading(table) == (
        "**toy-s**: the slow model answers 100.0% with 40.0 tokens. Of 2 merges the shortest is TIES k=0.8 "
        "(-25.0% length, 95.0% accuracy), the most accurate TA alpha=0.7 (99.0%, -2.5% length).")
    empty = report.figures_table(tmp_path / "none")
    assert empty.empty and "No measured run" in report.figures_reading(empty)
    pd.DataFrame(rows, columns=cols).drop(columns="label").to_csv(tmp_path / "length_accuracy.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        report.figures_table(tmp_path)


def test_scaled_png_keeps_the_aspect_and_shrinks(tmp_path):
    path = tmp_path / "f.png"
    Image.new("RGBA", (1800, 600), (255, 0, 0, 255)).save(path)
    with Image.open(io.BytesIO(report.scaled_png(path, 900))) as im:
        assert im.size == (900, 300) and im.convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    with Image.open(io.BytesIO(report.scaled_png(path, 3000))) as im:
        assert im.size == (1800, 600)  # never scaled up


@pytest.fixture
def restore_tqdm(monkeypatch):
    """Undo silence_progress_bars (it patches tqdm for the rest of the process)."""
    monkeypatch.setattr(tqdm.std.tqdm, "__init__", tqdm.std.tqdm.__dict__["__init__"])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    pd.reset_option("display.max_colwidth")


def _draws(**kwargs) -> str:
    out = io.StringIO()
    for _ in tqdm.std.tqdm(range(3), file=out, mininterval=0, **kwargs):
        pass
    return out.getvalue()


def test_batch_kernels_draw_no_progress_bar_even_when_asked(restore_tqdm, monkeypatch):
    from tqdm.auto import tqdm as auto_tqdm  # imported before: still silenced

    monkeypatch.delenv(report.SESSION_ENV, raising=False)
    assert "3/3" in _draws(disable=False)
    report.setup_notebook()
    assert not report.interactive()
    assert _draws(disable=False) == "" and _draws() == ""
    assert auto_tqdm(range(3), disable=False).disable
    report.silence_progress_bars()  # idempotent
    assert _draws(disable=False) == ""


def test_jupyter_kernels_keep_their_progress_bars(restore_tqdm, monkeypatch):
    monkeypatch.setenv(report.SESSION_ENV, "notebooks/02_evaluate.ipynb")
    report.setup_notebook()
    assert report.interactive() and "3/3" in _draws(disable=False)
    assert pd.get_option("display.max_colwidth") is None
