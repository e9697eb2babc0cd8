"""Figures from synthetic run directories (following the evaluation contract): each figure's CSV is
checked against the runs' metrics, outputs are byte-deterministic, missing data skips a figure."""

import json
import re

import pandas as pd
import pytest

from l2s.cli import main
from l2s.figures import FIGURES, make_figures
from l2s.figures.tables import pareto_front, wilson_interval


def _block(n, acc, tokens, refl, hits, by_level=None):
    b = {"n": n, "accuracy": acc, "mean_tokens": tokens, "median_tokens": tokens - 1, "reflective_ratio": refl,
         "keyword_hits": hits, "truncated": 0.0}
    if by_level is not None:
        b["by_level"] = by_level
    return b


def _levels(acc, tokens, refl):
    return {str(lv): _block(10, max(0.0, acc - 0.1 * lv), tokens * lv, min(1.0, refl * lv / 3), refl * lv)
            for lv in range(1, 6)}


# run name -> (tags, {dataset: (accuracy, mean_tokens, reflective_ratio, keyword_hits)})
RUNS = {
    "s-quick": ({"size": "toy-s", "role": "quick"}, {"toy": (0.40, 20.0, 0.0, 0.0), "extra": (0.30, 10.0, 0.0, 0.0)}),
    "s-slow": ({"size": "toy-s", "role": "slow"}, {"toy": (0.80, 100.0, 0.90, 2.5), "extra": (0.70, 50.0, 0.80, 2.0)}),
    "s-ties": ({"size": "toy-s", "role": "merged", "method": "ties", "params": {"k": 0.8}},
               {"toy": (0.75, 40.0, 0.30, 0.5), "extra": (0.65, 30.0, 0.20, 0.25)}),
    "s-ta": ({"size": "toy-s", "role": "merged", "method": "task_arithmetic", "params": {"alpha": 0.7}},
             {"toy": (0.70, 60.0, 0.50, 1.0), "extra": (0.60, 45.0, 0.40, 1.0)}),
    "s-ta-a0.3": ({"size": "toy-s", "role": "merged", "method": "task_arithmetic", "params": {"alpha": 0.3},
                   "sweep": True}, {"toy": (0.50, 30.0, 0.10, 0.2), "extra": (0.40, 20.0, 0.10, 0.1)}),
    "s-ta-a1.0": ({"size": "toy-s", "role": "merged", "method": "task_arithmetic", "params": {"alpha": 1.0},
                   "sweep": True}, {"toy": (0.78, 90.0, 0.85, 2.0), "extra": (0.69, 48.0, 0.70, 1.5)}),
    "m-slow": ({"size": "toy-m", "role": "slow"}, {"toy": (0.90, 200.0, 0.95, 3.0)}),
    "m-ties": ({"size": "toy-m", "role": "merged", "method": "ties", "params": {"k": 0.8}},
               {"toy": (0.85, 80.0, 0.4, 1.0)}),
}
ADAR1 = ({"size": "toy-s", "role": "adar1", "method": "bi_level"}, {"toy": (0.79, 35.0, 0.35, 0.6),
                                                                     "extra": (0.66, 25.0, 0.2, 0.3)})


def write_runs(root, runs):
    for name, (tags, datasets) in runs.items():
        d = root / name
        d.mkdir(parents=True)
        metrics = {ds: _block(100, *v, by_level=_levels(v[0], v[1], v[2]) if ds == "toy" else {})
                   for ds, v in datasets.items()}
        (d / "config.json").write_text(json.dumps({"model": f"/ckpt/{name}", "tags": tags}))
        (d / "metrics.json").write_text(json.dumps({"datasets": metrics, "overall": {}}))
        (d / "provenance.json").write_text("{}")
    (root / "toy-s-checkpoints").mkdir()  # not a run: skipped
    (root / "toy-s-checkpoints" / "config.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    runs = write_runs(tmp_path_factory.mktemp("runs"), {**RUNS, "s-adar1": ADAR1})
    out = tmp_path_factory.mktemp("figures")
    written = make_figures(runs, out)
    return runs, out, written


def _csv(out, name):
    return pd.read_csv(out / f"{name}.csv", keep_default_na=False, na_values=[""])


def test_writes_png_pdf_csv(figures):
    _, out, written = figures
    assert sorted(written) == sorted(FIGURES)
    for name in written:
        assert [p.name for p in written[name]] == [f"{name}.csv", f"{name}.png", f"{name}.pdf"]
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_length_accuracy_csv_matches_metrics(figures):
    _, out, _ = figures
    df = _csv(out, "length_accuracy")
    m = df[df["source"] == "measured"].set_index("run")
    assert set(m.index) == {"s-quick", "s-slow", "s-ties", "s-ta", "s-adar1", "m-slow", "m-ties"}  # sweeps: Pareto only
    slow, ties = RUNS["s-slow"][1], RUNS["s-ties"][1]
    expected = sum((ties[d][1] - slow[d][1]) / slow[d][1] for d in ("toy", "extra")) / 2
    assert m.loc["s-ties", "length_reduction"] == pytest.approx(expected)  # (-0.6 + -0.4) / 2
    assert m.loc["s-ties", "accuracy"] == pytest.approx(100 * (0.75 + 0.65) / 2)
    assert m.loc["s-ties", "slow_mean_tokens"] == pytest.approx(75.0)
    assert m.loc["m-ties", "length_reduction"] == pytest.approx((80 - 200) / 200)
    assert m.loc["s-slow", "length_reduction"] == 0
    assert m.loc["s-ties", "label"] == "TIES" and m.loc["s-quick", "label"] == "Quick (System-1)"
    wu = df[df["source"] == "reported (Wu et al. 2025, Table 2)"].set_index("method")
    assert wu.loc["ties", "length_reduction"] == pytest.approx(
        ((393.8 - 2744.3) / 2744.3 + (1102.4 - 4510.0) / 4510.0 + (2818.7 - 8952.3) / 8952.3) / 3)
    assert "reported (Luo et al. 2025, Table 2)" in set(df["source"])
    assert list(dict.fromkeys(df["panel"]))[:2] == ["toy-s — measured", "toy-m — measured"]


def test_self_correction_csv_matches_metrics(figures):
    _, out, _ = figures
    df = _csv(out, "self_correction")
    m = df[df["source"] == "measured"]
    for run, (_, datasets) in RUNS.items():
        if run.startswith("s-ta-"):
            assert run not in set(m["run"])
            continue
        for ds, (_, _, refl, hits) in datasets.items():
            rows = m[(m["run"] == run) & (m["dataset"] == ds)].set_index("quantity")["value"]
            assert rows["reflective_ratio"] == pytest.approx(100 * refl)
            assert rows["keyword_hits"] == pytest.approx(hits)
    t6 = df[(df["source"] == "reported (Wu et al. 2025, Table 6)") & (df["method"] == "ties")]
    assert t6.set_index("dataset").loc["gsm8k", "value"] == pytest.approx(19.2)


def _add_corrections(run_dir, rates):
    """Give a run's toy levels the correction fields: ``rates(level) -> (checked, correction, harmful, unchanged)``."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    for lv, block in metrics["datasets"]["toy"]["by_level"].items():
        checked, *values = rates(int(lv))
        block.update(checked=checked, **dict(zip(("correction_rate", "harmful_check_rate", "unchanged_check_rate"),
                                                 values if checked else (None, None, None))))
    path.write_text(json.dumps(metrics))


def _figure_texts(fig):
    """Every note and left title of the figure, line breaks (wrapping) as spaces."""
    return " ".join(" ".join(t.get_text() for ax in fig.axes for t in ax.texts).split() +
                    " ".join(ax.get_title(loc="left") for ax in fig.axes).split())


def test_self_correction_by_level_for_runs_with_interim_answers(tmp_path):
    """toy-s slow and TIES record interim answers (TIES checked nothing at level 5), the quick run does not;
    toy-m's run checked nothing: the CSV has the rates by level, the figure draws toy-s's, a note for toy-m."""
    from l2s.figures import build_tables
    from l2s.figures.plots import draw

    runs = write_runs(tmp_path / "runs", {k: RUNS[k] for k in ("s-quick", "s-slow", "s-ties", "m-slow")})
    _add_corrections(runs / "s-slow", lambda lv: (4 * lv, 0.05 * lv, 0.02, 0.9 - 0.05 * lv))
    _add_corrections(runs / "s-ties", lambda lv: (0, 0, 0, 0) if lv == 5 else (2, 0.5, 0.25, 0.25))
    _add_corrections(runs / "m-slow", lambda lv: (0, 0, 0, 0))
    table = build_tables(runs)["self_correction"]
    c = table[table["quantity"].isin(["correction_rate", "harmful_check_rate", "unchanged_check_rate"])]
    assert set(c["run"]) == {"s-slow", "s-ties", "m-slow"} and c.loc[c["run"] == "m-slow", "value"].isna().all()
    assert list(dict.fromkeys(c["panel"])) == ["toy-s · toy — measured, by level", "toy-m · toy — measured, by level"]
    slow = c[c["run"] == "s-slow"].set_index(["quantity", "level"])
    assert slow.loc[("correction_rate", 3), "value"] == pytest.approx(15.0)
    assert slow.loc[("unchanged_check_rate", 2), "value"] == pytest.approx(80.0)
    assert slow.loc[("harmful_check_rate", 4), "checked"] == 16
    ties = c[c["run"] == "s-ties"].set_index(["quantity", "level"])
    assert ties.loc[("correction_rate", 1), "value"] == pytest.approx(50.0)
    assert pd.isna(ties.loc[("correction_rate", 5), "value"]) and ties.loc[("correction_rate", 5), "checked"] == 0
    bars = table[table["quantity"] == "reflective_ratio"]
    assert bars["level"].isna().all() and "s-quick" in set(bars["run"])  # the bars keep every run
    fig = draw("self_correction", table)
    texts = _figure_texts(fig)
    assert "toy-m · toy — measured, by level: no response boxed an answer before its first reflection" in texts
    assert "no run records interim answers" not in texts
    assert "toy-s · toy — measured, by level — % of the checked responses" in texts
    assert "68 in all its runs" in texts  # 4+8+...+20 of the slow run, 4 x 2 of TIES
    assert "bars: 95% Wilson intervals" in texts
    # the error bars drawn are the CSV's interval: TIES level 1, 1 of 2 checked -> [9.45, 90.55] %
    assert ties.loc[("correction_rate", 1), "value_lo"] == pytest.approx(9.453, abs=1e-3)
    assert ties.loc[("correction_rate", 1), "value_hi"] == pytest.approx(90.547, abs=1e-3)
    ax = next(a for a in fig.axes if a.get_title(loc="left").startswith("toy-s · toy"))
    bars = {tuple(round(float(v), 3) for v in (seg[0][0], seg[0][1], seg[1][1]))
            for coll in ax.collections for seg in coll.get_segments() if len(seg)}
    assert (1.0, 9.453, 90.547) in bars
    expected = c[c["panel"].str.startswith("toy-s") & c["value"].notna()]
    assert {(float(r.level), round(r.value_lo, 3), round(r.value_hi, 3))
            for r in expected[expected["quantity"] != "unchanged_check_rate"].itertuples()} == bars


def test_wilson_interval_hand_numbers():
    """Wilson (1927) 95% score interval: 7 of 52, 0 of 10, 10 of 10; NaN where nothing was observed."""
    lo, hi = wilson_interval([7 / 52, 0.0, 1.0, 0.5, float("nan")], [52, 10, 10, 2, 0])
    assert lo[:4] == pytest.approx([0.06677, 0.0, 0.72246, 0.09453], abs=1e-5)
    assert hi[:4] == pytest.approx([0.25274, 0.27754, 1.0, 0.90547], abs=1e-5)
    assert pd.isna(lo[4]) and pd.isna(hi[4])
    narrow_lo, narrow_hi = wilson_interval(7 / 52, 5200)  # 100 times the problems: about a tenth as wide
    assert narrow_hi - narrow_lo == pytest.approx((hi[0] - lo[0]) / 10, rel=0.1)


def test_self_correction_csv_has_the_wilson_interval(tmp_path):
    """The CSV written holds what is drawn: value_lo/value_hi beside every rate, the Wilson interval of
    value/100 over n = checked (NaN where none was checked), around the rate."""
    runs = write_runs(tmp_path / "runs", {k: RUNS[k] for k in ("s-slow", "s-ties")})
    _add_corrections(runs / "s-slow", lambda lv: (52 if lv == 1 else 10, 7 / 52 if lv == 1 else 0.0, 0.0, 1.0))
    _add_corrections(runs / "s-ties", lambda lv: (0, 0, 0, 0) if lv == 5 else (10, 1.0, 0.0, 0.0))
    make_figures(runs, tmp_path / "fig", only=["self_correction"])
    df = _csv(tmp_path / "fig", "self_correction")
    assert {"value_lo", "value_hi", "checked", "level"} <= set(df.columns)
    c = df[df["level"].notna()]
    assert df.loc[df["level"].isna(), ["value_lo", "value_hi"]].isna().all().all()  # the bars have none
    lo, hi = wilson_interval(c["value"] / 100, c["checked"])
    assert c["value_lo"].to_numpy() == pytest.approx(100 * lo, nan_ok=True)
    assert c["value_hi"].to_numpy() == pytest.approx(100 * hi, nan_ok=True)
    drawn = c[c["value"].notna()]
    assert ((drawn["value_lo"] <= drawn["value"]) & (drawn["value"] <= drawn["value_hi"])).all()
    bounds = c[c["quantity"] == "correction_rate"].set_index(["run", "level"])[["value_lo", "value_hi"]]
    assert bounds.loc[("s-slow", 1)].tolist() == pytest.approx([6.677, 25.274], abs=1e-3)  # 7 of 52
    assert bounds.loc[("s-slow", 2)].tolist() == pytest.approx([0.0, 27.754], abs=1e-3)  # 0 of 10
    assert bounds.loc[("s-ties", 3)].tolist() == pytest.approx([72.246, 100.0], abs=1e-3)  # 10 of 10
    assert bounds.loc[("s-ties", 5)].isna().all()  # none checked


def test_self_correction_without_interim_answers_notes_each_size(figures):
    """Runs of an l2s before interim answers: the table is the bars' alone (no level, checked columns: the
    CSV of such runs is unchanged) and the figure says, per size, that there is nothing to draw."""
    from l2s.figures.plots import draw

    _, out, _ = figures
    df = _csv(out, "self_correction")
    assert not {"level", "checked", "value_lo", "value_hi"} & set(df.columns)
    assert set(df["quantity"]) == {"reflective_ratio", "keyword_hits"}
    texts = _figure_texts(draw("self_correction", df))
    for size in ("toy-s", "toy-m"):
        assert f"{size}: no run records interim answers by level" in texts


def test_difficulty_csv_matches_by_level_metrics(figures):
    runs, out, _ = figures
    df = _csv(out, "difficulty")
    assert set(df["dataset"]) == {"toy"}  # "extra" has no levels
    by_level = json.loads((runs / "s-ta" / "metrics.json").read_text())["datasets"]["toy"]["by_level"]
    r = df[df["run"] == "s-ta"].set_index("level")
    for lv, v in by_level.items():
        assert r.loc[int(lv), "mean_tokens"] == pytest.approx(v["mean_tokens"])
        assert r.loc[int(lv), "reflective_ratio"] == pytest.approx(100 * v["reflective_ratio"])


def test_pareto_csv_includes_sweep_and_marks_the_front(figures):
    _, out, _ = figures
    df = _csv(out, "pareto")
    m = df[df["panel"] == "toy-s — measured"].set_index("run")
    assert {"s-ta-a0.3", "s-ta-a1.0"} <= set(m.index)
    assert m.loc["s-ta-a0.3", "accuracy"] == pytest.approx(45.0) and m.loc["s-ta-a0.3", "mean_tokens"] == 25.0
    # (tokens, accuracy): quick (15, 35), ta0.3 (25, 45), adar1 (30, 72.5), ties (35, 70), ta0.7 (52.5, 65),
    # ta1.0 (69, 73.5), slow (75, 75): ties and ta0.7 are dominated by adar1
    assert sorted(m.index[m["on_front"].astype(bool)]) == ["s-adar1", "s-quick", "s-slow", "s-ta-a0.3", "s-ta-a1.0"]
    assert m.loc["s-ta-a1.0", "label"] == "TA (alpha=1.0)"


def test_pareto_front_function():
    assert pareto_front([10, 20, 30, 25, 10], [50, 60, 70, 55, 40]) == [True, True, True, False, False]
    assert pareto_front([10, 10], [50, 50]) == [True, True]  # equal points do not dominate each other


def test_deterministic_bytes(figures, tmp_path):
    runs, out, written = figures
    again = make_figures(runs, tmp_path / "again")
    for name in FIGURES:
        for pa, pb in zip(written[name], again[name]):
            assert pa.read_bytes() == pb.read_bytes(), pa.name


def test_adar1_by_level_csv(figures):
    _, out, _ = figures
    df = _csv(out, "adar1_by_level")
    ada = df[(df["run"] == "s-adar1")].set_index("level")
    assert ada.loc[1, "long_cot_ratio"] == pytest.approx(100 * 0.35 / 3)
    assert ada.loc[2, "mean_tokens"] == pytest.approx(70.0) and ada.loc[1, "label"] == "Ada-R1 (bi_level)"
    assert set(df.loc[df["run"] == "s-adar1", "method"]) == {"ada_r1"}
    assert "s-ties" not in set(df["run"])  # only long, short, Ada-R1 and DPO runs
    est = df[df["source"] == "estimated from figure (Luo et al. 2025, Figs. 5-6)"]
    assert est[(est["method"] == "ada_r1") & (est["level"] == 5)]["mean_tokens"].item() == 3009


def test_stale_figure_removed_and_bad_metrics_named(tmp_path):
    runs = write_runs(tmp_path / "runs", {"s-slow": RUNS["s-slow"]})
    out = tmp_path / "out"
    out.mkdir()
    (out / "adar1_by_level.png").write_bytes(b"old")
    written = make_figures(runs, out, only=["adar1_by_level"])
    assert written == {} and not (out / "adar1_by_level.png").exists()
    metrics = json.loads((runs / "s-slow" / "metrics.json").read_text())
    metrics["datasets"]["empty"] = {"n": 0, "accuracy": None, "mean_tokens": None, "median_tokens": None,
                                    "reflective_ratio": None, "keyword_hits": None, "truncated": 0, "by_level": {}}
    (runs / "s-slow" / "metrics.json").write_text(json.dumps(metrics))
    make_figures(runs, out, only=["self_correction"])  # an empty dataset is skipped, not a crash
    assert "empty" not in set(_csv(out, "self_correction")["dataset"])
    del metrics["datasets"]["toy"]["mean_tokens"]
    (runs / "s-slow" / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"metrics.json datasets.toy: missing metric field\(s\) mean_tokens"):
        make_figures(runs, out)
    with pytest.raises(ValueError, match="unknown figure"):
        make_figures(runs, out, only=["nope"])


def test_cli(tmp_path, capsys):
    runs = write_runs(tmp_path / "runs", {k: RUNS[k] for k in ("s-slow", "s-ties")})
    assert main(["figures", "--runs", str(runs), "--out", str(tmp_path / "f"), "--only", "difficulty"]) == 0
    assert (tmp_path / "f" / "difficulty.png").is_file()
    assert str(tmp_path / "f" / "difficulty.csv") in capsys.readouterr().out
    assert main(["figures", "--runs", str(tmp_path / "missing"), "--out", str(tmp_path / "f")]) == 2


def test_reference_runs_are_read_but_not_plotted(tmp_path):
    """A run tagged role "reference" (Ada-R1's re-evaluation of the slow model) is not a series."""
    from l2s.figures.frames import load_runs

    metrics = {"n": 2, "accuracy": 1.0, "mean_tokens": 10.0, "median_tokens": 10.0, "reflective_ratio": 1.0,
               "keyword_hits": 1.0, "truncated": 0, "by_level": {}}
    for name, role in (("slow", "slow"), ("adar1-long", "reference")):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"tags": {"size": "toy-s", "role": role, "method": "long"}}))
        (run / "metrics.json").write_text(json.dumps({"datasets": {"toy": metrics}}))
        (run / "provenance.json").write_text("{}")
    assert load_runs(tmp_path).datasets["run"].tolist() == ["slow"]


def test_empty_or_missing_runs_dir_says_what_to_run(tmp_path):
    from l2s.figures.frames import load_runs

    (tmp_path / "toy-s-checkpoints").mkdir()  # a directory, but no finished evaluation run
    for runs_dir, what in ((tmp_path, "holds no finished evaluation run"), (tmp_path / "nope", "does not exist")):
        with pytest.raises(ValueError, match=re.escape(f"runs directory {runs_dir} {what}: run the study first")):
            load_runs(runs_dir)
