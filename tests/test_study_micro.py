"""CI for the study: the whole notebook chain (configs/micro.yaml) runs with papermill through
``l2s study`` into a throwaway root, every expected run and figure appears, each figure's CSV agrees
with the runs' metrics.json, a second study run has nothing left to do; plus the notebook helpers on
hand-made runs."""

import json
import math
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import study_in

from l2s import io
from l2s import notebook_helpers as nh
from l2s.figures import FIGURES
from l2s.study import MARKER, expand, load_config, run_study
from l2s.toy import task

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "configs" / "micro.yaml"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Run configs/micro.yaml with cwd = a tmp root (its runs/ and figures/) and a tmp L2S_CACHE."""
    root = tmp_path_factory.mktemp("study")
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    with study_in(root, MICRO) as code:
        yield root, code


def close(a, b):
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def metrics(root, run):
    return io.read_json(root / "runs" / run / "metrics.json")["datasets"]


def test_every_step_ran_and_left_its_run(study):
    root, code = study
    assert code == 0
    steps = expand(load_config(MICRO))
    for s in steps:
        run = root / s.run_dir
        assert (run / MARKER).is_file() and (run / s.notebook.name).is_file(), s.name
    runs = root / "runs"
    assert io.read_json(runs / "micro-models" / "models.json")["size"] == "toy-micro"
    for name in ("quick", "slow", "short", "task_arithmetic", "ties", "aim_ties", "ta-sweep-0.4"):
        assert (runs / f"micro-{name}" / "metrics.json").is_file(), name
    merge = io.read_json(runs / "micro-merge-aim_ties" / "merge.json")
    assert merge["method"] == "aim+ties" and merge["figure_method"] == "aim"
    assert merge["l2s_merge"]["params"]["omega"] == 0.4
    assert merge["path"].startswith("cache/merged/")  # relative to the study root: the same in every clone
    tags = io.read_json(runs / "micro-ta-sweep-0.4" / "config.json")["tags"]
    assert tags == {"size": "toy-micro", "role": "merged", "method": "task_arithmetic", "params": {"alpha": 0.4},
                    "sweep": True}
    assert io.read_json(runs / "micro-adar1" / "eval-bilevel" / "config.json")["tags"]["role"] == "adar1"
    assert not list(runs.rglob("*.safetensors")), "model weights must stay in the cache"
    assert not list(runs.glob("*.failed.ipynb")) and not list(runs.glob(".*.running.ipynb"))


def test_figures_agree_with_the_runs(study):
    root, _ = study
    fig = root / "figures"
    for name in FIGURES:
        for ext in ("png", "pdf", "csv"):
            assert (fig / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    # Ada-R1's eval-long (role "reference") re-evaluates micro-slow: read by the Ada-R1 summary, not plotted
    evaluated = {"micro-quick", "micro-slow", "micro-short", "micro-task_arithmetic", "micro-ties", "micro-aim_ties",
                 "micro-adar1/eval-merge", "micro-adar1/eval-bilevel"}

    la = pd.read_csv(fig / "length_accuracy.csv")
    la = la[la["source"] == "measured"].set_index("run")
    assert set(la.index) == evaluated  # sweep runs only on the Pareto plot
    slow = metrics(root, "micro-slow")["toy"]["mean_tokens"]
    for run, row in la.iterrows():
        m = metrics(root, run)["toy"]
        assert close(row["accuracy"], 100 * m["accuracy"]) and close(row["mean_tokens"], m["mean_tokens"])
        assert close(row["length_reduction"], (m["mean_tokens"] - slow) / slow)

    pareto = pd.read_csv(fig / "pareto.csv")
    pareto = pareto[pareto["source"] == "measured"].set_index("run")
    assert set(pareto.index) == evaluated | {"micro-ta-sweep-0.4"} and pareto.loc["micro-ta-sweep-0.4", "sweep"]
    for run, row in pareto.iterrows():
        assert close(row["mean_tokens"], metrics(root, run)["toy"]["mean_tokens"])

    sc = pd.read_csv(fig / "self_correction.csv")
    sc = sc[sc["source"] == "measured"]
    assert set(sc["run"]) == evaluated
    for row in sc.itertuples():
        m = metrics(root, row.run)[row.dataset]
        if row.quantity in ("correction_rate", "harmful_check_rate", "unchanged_check_rate"):  # by level
            v = m["by_level"][str(int(row.level))][row.quantity]
            assert pd.isna(row.value) if v is None else close(row.value, 100 * v)
            continue
        want = 100 * m["reflective_ratio"] if row.quantity == "reflective_ratio" else m["keyword_hits"]
        assert close(row.value, want)

    diff = pd.read_csv(fig / "difficulty.csv")
    diff = diff[diff["source"] == "measured"]
    assert set(diff["level"]) == {1, 2, 3, 4, 5}
    for row in diff.itertuples():
        m = metrics(root, row.run)[row.dataset]["by_level"][str(row.level)]
        assert row.n == m["n"] and close(row.mean_tokens, m["mean_tokens"])
        assert close(row.accuracy, 100 * m["accuracy"]) and close(row.reflective_ratio, 100 * m["reflective_ratio"])

    ada = pd.read_csv(fig / "adar1_by_level.csv")
    ada = ada[ada["source"] == "measured"]
    assert {"micro-adar1/eval-bilevel", "micro-adar1/eval-merge", "micro-slow", "micro-short"} == set(ada["run"])
    for row in ada.itertuples():
        m = metrics(root, row.run)[row.dataset]["by_level"][str(row.level)]
        assert close(row.long_cot_ratio, 100 * m["reflective_ratio"]) and close(row.mean_tokens, m["mean_tokens"])


def test_rerun_has_nothing_left_and_a_changed_merge_reruns_only_its_chain(study):
    import yaml

    root, _ = study
    cwd = os.getcwd()
    os.chdir(root)
    try:
        states = {o.task.name: o.state for o in run_study(load_config(MICRO), dry_run=True)}
        assert set(states.values()) == {"done"}, states
        config = yaml.safe_load(MICRO.read_text())
        config["steps"][2]["grid"]["merge"][1]["params"]["k"] = 0.5  # TIES's k; the eval step shares the list
        config["steps"][3]["grid"]["merge"] = config["steps"][2]["grid"]["merge"]
        changed = root / "changed.yaml"
        changed.write_text(yaml.safe_dump(config, sort_keys=False))
        plan = {o.task.name: o.state for o in run_study(load_config(changed), dry_run=True) if o.state != "done"}
    finally:
        os.chdir(cwd)
    assert plan == {"micro-merge-ties": "stale", "micro-ties": "stale", "figures": "stale"}


# -- the helpers on hand-made runs ------------------------------------------------------------------
def _run(path: Path, rows: list[dict], tags: dict) -> Path:
    from l2s.eval.metrics import compute_metrics

    path.mkdir(parents=True)
    io.atomic_write_json(path / "config.json", {"tags": tags})
    io.write_jsonl(path / "generations.jsonl", rows)
    io.atomic_write_json(path / "metrics.json", compute_metrics(rows))
    return path


def _row(pid, level, tokens, hits, correct):
    return {"id": pid, "dataset": "toy", "level": level, "sample": 0, "prompt": "p", "response": f"r{pid}-{tokens}",
            "answer": "1", "pred": "1" if correct else "2", "correct": correct, "n_tokens": tokens, "finished": True,
            "truncated": False, "reflective": hits > 0, "keyword_hits": hits}


def test_a_new_merge_in_a_fresh_clone_rebuilds_what_it_needs(study):
    """The committed runs without their cache (a fresh clone): a config with one more merge runs it,
    rebuilding the toy family it needs first, and leaves every other step alone."""
    import shutil

    import yaml

    root, _ = study
    shutil.rmtree(root / "cache")
    config = yaml.safe_load(MICRO.read_text())
    config["steps"][2]["grid"]["merge"].append({"name": "average", "method": "average", "params": {}})
    config["steps"][3]["grid"]["merge"] = config["steps"][2]["grid"]["merge"]
    grown = root / "grown.yaml"
    grown.write_text(yaml.safe_dump(config, sort_keys=False))
    before = {p: p.stat().st_mtime_ns for p in (root / "runs").glob("micro-*/metrics.json")}
    t0 = time.time_ns()
    with study_in(root, grown) as code:
        assert code == 0
    assert (root / "runs" / "micro-average" / "metrics.json").is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # no other evaluation reran
    ran = {s.name for s in expand(load_config(grown)) if (root / s.run_dir / MARKER).stat().st_mtime_ns > t0}
    assert ran == {"micro-models", "micro-merge-average", "micro-average", "figures"}
    family = io.read_json(root / "runs" / "micro-models" / "models.json")
    assert all(Path(family[r]).is_dir() for r in ("quick", "slow", "short"))


def test_metrics_side_by_side_and_compare(tmp_path):
    a = _run(tmp_path / "a", [_row("x", 1, 40, 1, True), _row("y", 2, 60, 2, False), _row("z", 2, 80, 0, True)],
             {"size": "toy-s", "role": "slow", "method": "slow"})
    b = _run(tmp_path / "b", [_row("x", 1, 10, 0, True), _row("y", 2, 30, 1, True), _row("z", 2, 20, 0, False)],
             {"size": "toy-s", "role": "merged", "method": "ties", "params": {"k": 0.8}})
    t = nh.metrics_table(b)
    assert t.loc[("toy", "all"), "mean tokens"] == 20 and t.loc[("toy", "2"), "accuracy %"] == 50
    assert t.loc[("toy", "1"), "reflective %"] == 0 and t.loc[("toy", "2"), "keyword hits"] == 0.5
    c = nh.compare_by_level(a, b)
    assert c.loc[("toy", "all"), "length change B vs A %"] == -66.7  # (20 - 60) / 60
    assert c.loc[("toy", "2"), "mean tokens A"] == 70
    s = nh.side_by_side(a, b, n=1)
    assert list(s["id"]) == ["x", "y"] and list(s["tokens B"]) == [10, 30] and list(s["hits A"]) == [1, 2]
    assert list(nh.side_by_side(a, b, n=5, level=2)["id"]) == ["y", "z"]
    assert nh.run_label(b) == "toy-s merged ties (k=0.8)" and nh.run_label(a) == "toy-s slow"
    wide = nh.runs_by_level({"A": a, "B": b})
    assert wide.loc[("toy", "all"), ("mean tokens", "B")] == 20 and wide.loc[("toy", "all"), ("mean tokens", "A")] == 60


def test_models_merge_inputs_and_resolution(tmp_path):
    with pytest.raises(ValueError, match="quick .* and slow"):
        nh.prepare_models(tmp_path / "m", size="7B", quick="Qwen/Qwen2.5-Math-7B")
    rec = nh.prepare_models(tmp_path / "m", size="7B", quick="Qwen/Qwen2.5-Math-7B",
                            slow="deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert json.loads((tmp_path / "m" / "models.json").read_text())["slow"] == rec["slow"]
    assert nh.resolve_model(models_run=tmp_path / "m", role="quick") == "Qwen/Qwen2.5-Math-7B"
    assert nh.default_tags(tmp_path / "m", "slow", tags={"sweep": True}) == {
        "size": "7B", "role": "slow", "method": "slow", "sweep": True}
    with pytest.raises(ValueError, match="no short model"):
        nh.resolve_model(models_run=tmp_path / "m", role="short")
    with pytest.raises(ValueError, match="exactly one"):
        nh.resolve_model(model="x", role="slow", models_run=tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="01_merge"):
        nh.resolve_model(merge_run=tmp_path / "nothing")
    models = {"quick": "q", "slow": "s", "short": "t"}
    assert nh.merge_inputs("ties", models) == {"base": "q", "models": ["s"]}
    assert nh.merge_inputs("average", models) == {"base": None, "models": ["q", "s"]}
    assert nh.merge_inputs("linear", models) == {"base": None, "models": ["s", "t"]}
    assert [nh.figure_method(m) for m in ("dare+ties", "dare_ta", "aim+ties", "sens")] == [
        "dare_ties", "dare_ta", "aim", "sens"]


def test_toy_calibration_files(tmp_path, monkeypatch):
    monkeypatch.setenv("L2S_CACHE", str(tmp_path))
    assert nh.calibration_files("ties", "toy") == []
    with pytest.raises(ValueError, match="uses no calibration"):
        nh.calibration_files("ties", ["x.jsonl"])
    with pytest.raises(ValueError, match="needs calibration"):
        nh.calibration_files("aim+ties", None)
    (aim,) = nh.calibration_files("aim+ties", "toy")
    long, short = nh.calibration_files("sens", "toy")
    assert short == aim and "long" in Path(long).name
    train = task.make_splits({"train": 20})["train"]
    for path, style in ((short, "short"), (long, "long")):
        rows = io.read_jsonl(Path(path))
        assert len(rows) == 100 and [r["problem"] for r in rows] == [t["problem"] for t in train]
        assert [r["solution"] for r in rows] == [task.solution(task.problem_from_row(t), style) for t in train]
    assert nh.calibration_files("sens", ["a.jsonl", "b.jsonl"]) == ["a.jsonl", "b.jsonl"]
