"""The run contract (l2s.runs): run directories written by the evaluation's writers read back whole,
malformed ones are errors naming the file, one method vocabulary labels every method, one length change."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from l2s import io
from l2s.eval.metrics import compare, compute_metrics, length_change
from l2s.eval.run import EvalConfig, finalize
from l2s.provenance import provenance
from l2s.runs import (
    REFERENCE_ROLE,
    Run,
    RunTags,
    canonical_method,
    check_tags,
    find_runs,
    is_finished,
    method_key,
    method_label,
    read_metrics,
    read_run,
    series_key,
    series_label,
)


def _row(pid, level, tokens, correct, hits=0):
    return {"id": pid, "dataset": "toy", "level": level, "sample": 0, "prompt": "p", "response": f"r{pid}",
            "answer": "1", "pred": "1" if correct else "2", "correct": correct, "n_tokens": tokens,
            "finished": True, "truncated": False, "reflective": hits > 0, "keyword_hits": hits}


ROWS = [_row("a", 1, 10, True), _row("b", 2, 30, False, 2), _row("c", 2, 50, True, 1)]


def write_run(out, tags, rows=ROWS, finished=True):
    """A run directory as :func:`l2s.eval.run.evaluate` leaves it: its config (tags checked by
    EvalConfig), the rows, metrics.json from :func:`l2s.eval.run.finalize`, provenance.json last."""
    cfg = EvalConfig(model="/ckpt/m", datasets=("toy",), out=str(out), tags=tags)
    io.atomic_write_json(out / "config.json", cfg.to_dict())
    io.write_jsonl(out / "generations.jsonl", rows)
    finalize(out, [(r["dataset"], {"id": r["id"]}, r["sample"]) for r in rows], max_new_tokens=64)
    if finished:
        io.atomic_write_json(out / "provenance.json", provenance(seed=0))
    return out


def test_write_read_round_trip(tmp_path):
    tags = {"size": "toy-s", "role": "merged", "method": "ties", "params": {"k": 0.8}, "sweep": True,
            "stage": "extra-tag"}
    run = read_run(write_run(tmp_path / "toy-s-ties", tags))
    assert isinstance(run, Run) and run.name == "toy-s-ties"
    assert run.tags == RunTags(size="toy-s", role="merged", method="ties", params={"k": 0.8}, sweep=True,
                               extra={"stage": "extra-tag"})
    assert run.tags.to_dict() == tags == run.config["tags"] and RunTags.from_dict(tags).to_dict() == tags
    assert run.config["model"] == "/ckpt/m" and run.provenance["seed"] == 0
    assert {k: v for k, v in run.metrics.items() if k != "token_limit"} == compute_metrics(ROWS)
    assert run.metrics["token_limit"]["max_new_tokens"] == 64
    assert "generations" not in vars(run)  # read on first use
    assert run.generations == ROWS
    toy = run.datasets["toy"]
    assert (toy["n"], toy["mean_tokens"], toy["accuracy"]) == (3, 30.0, pytest.approx(2 / 3))
    assert [(d, lv, b["n"]) for d, lv, b in run.blocks()] == [("toy", None, 3), ("toy", 1, 1), ("toy", 2, 2)]
    assert run.tags.plotted and run.tags.series == "ties" and run.tags.label == "TIES"
    assert run.tags.text() == "toy-s merged ties (k=0.8)"


def test_tags_unset_and_untagged():
    assert RunTags.from_dict(None) == RunTags() and RunTags().to_dict() == {}
    assert check_tags({"size": "7B", "role": "slow", "method": None}) == {"size": "7B", "role": "slow"}
    sample = RunTags.from_dict({"size": "toy-s", "stage": "sample", "style": "long"})
    assert not sample.plotted and sample.extra == {"stage": "sample", "style": "long"}
    assert not RunTags(size="toy-s", role=REFERENCE_ROLE).plotted
    assert RunTags(size="toy-s", role="slow", method="slow").text() == "toy-s slow"


@pytest.mark.parametrize("tags, message", [
    ({"size": 7}, r"tags.size: expected a string \(or null\), got int 7"),
    ({"sweep": "yes"}, r"tags.sweep: expected true or false \(or null\), got str 'yes'"),
    ({"params": [0.8]}, r"tags.params: expected a mapping"),
    ("toy-s", r"tags: expected a mapping of tags, got str"),
])
def test_the_writer_checks_tags(tmp_path, tags, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig(model="m", datasets=("toy",), out=str(tmp_path), tags=tags)


def test_bad_tags_in_a_run_name_the_file(tmp_path):
    out = write_run(tmp_path / "r", {"size": "toy-s", "role": "slow"})
    config = io.read_json(out / "config.json")
    config["tags"]["role"] = ["slow"]
    io.atomic_write_json(out / "config.json", config)
    with pytest.raises(ValueError, match=re.escape(f"{out / 'config.json'} tags.role: expected a string")):
        read_run(out)


def _bad_metrics(tmp_path, content):
    out = write_run(tmp_path / "r", {"size": "toy-s", "role": "slow"})
    (out / "metrics.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return out, re.escape(str(out / "metrics.json"))


def test_metrics_that_are_a_list(tmp_path):
    out, file = _bad_metrics(tmp_path, [1, 2])
    with pytest.raises(ValueError, match=f"{file}: expected a JSON object with a 'datasets' mapping, got list"):
        read_run(out)
    (out / "metrics.json").write_text(json.dumps({"overall": {}}))
    with pytest.raises(ValueError, match=f"{file}: expected a JSON object with a 'datasets' mapping"):
        read_run(out)


def test_metrics_with_missing_or_mistyped_fields(tmp_path):
    metrics = compute_metrics(ROWS)
    del metrics["datasets"]["toy"]["mean_tokens"]
    out, file = _bad_metrics(tmp_path, metrics)
    with pytest.raises(ValueError, match=f"{file} datasets.toy: missing metric field\\(s\\) mean_tokens"):
        read_run(out)
    metrics = compute_metrics(ROWS)
    del metrics["datasets"]["toy"]["by_level"]["2"]["accuracy"]
    io.atomic_write_json(out / "metrics.json", metrics)
    with pytest.raises(ValueError, match=f"{file} datasets.toy.by_level.2: missing metric field\\(s\\) accuracy"):
        read_run(out)
    metrics = compute_metrics(ROWS)
    metrics["datasets"]["toy"]["accuracy"] = "high"
    io.atomic_write_json(out / "metrics.json", metrics)
    with pytest.raises(ValueError, match=f"{file} datasets.toy: field\\(s\\) accuracy must be numbers"):
        read_run(out)
    metrics["datasets"]["toy"] = {**compute_metrics([])["overall"], "by_level": {}}  # an empty group: nulls
    io.atomic_write_json(out / "metrics.json", metrics)
    assert list(read_run(out).blocks()) == []


def test_metrics_that_are_not_json_or_missing(tmp_path):
    out, file = _bad_metrics(tmp_path, '{"datasets": {')
    with pytest.raises(ValueError, match=f"{file}:1: corrupt JSON"):
        read_run(out)
    (out / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"{file} not found: .* is not a finished evaluation run"):
        read_run(out)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nothing' / 'config.json'} not found")):
        read_run(tmp_path / "nothing")


def test_compare_reads_only_what_it_needs(tmp_path):
    io.atomic_write_json(tmp_path / "metrics.json", {"datasets": {"toy": {"accuracy": 0.5, "mean_tokens": 60.0}}})
    toy = read_metrics(tmp_path / "metrics.json", required=("accuracy", "mean_tokens"))["datasets"]["toy"]
    assert toy == {"accuracy": 0.5, "mean_tokens": 60.0}
    with pytest.raises(ValueError, match="missing metric field\\(s\\) n, median_tokens"):
        read_metrics(tmp_path)


def test_find_runs_sorted_finished_only(tmp_path):
    tags = {"size": "toy-s", "role": "slow"}
    write_run(tmp_path / "b-run", tags)
    write_run(tmp_path / "a-run" / "eval-x", {**tags, "role": "adar1", "method": "bilevel"})
    write_run(tmp_path / "c-killed", tags, finished=False)  # metrics written, provenance not yet
    write_run(tmp_path / ".tmp-run", tags)
    found = find_runs(tmp_path)
    assert [r.path.relative_to(tmp_path).as_posix() for r in found] == ["a-run/eval-x", "b-run"]
    assert not is_finished(tmp_path / "c-killed") and is_finished(tmp_path / "b-run")
    assert find_runs(tmp_path / "a-run" / "eval-x") == []
    missing = tmp_path / "nope"
    with pytest.raises(ValueError, match=re.escape(f"runs directory {missing} does not exist: run the study")):
        find_runs(tmp_path / "nope")


def test_length_change_numbers():
    assert length_change(60, 100) == pytest.approx(-0.4)
    assert length_change(150.0, 100.0) == pytest.approx(0.5) and length_change(7, 7) == 0
    series = length_change(pd.Series([20.0, 80.0], index=["a", "b"]), pd.Series([40.0, 100.0], index=["a", "b"]))
    assert series.tolist() == pytest.approx([-0.5, -0.2]) and list(series.index) == ["a", "b"]
    assert length_change(np.array([30.0]), np.array([60.0])).tolist() == [-0.5]
    for ref in (0, 0.0, None):
        with pytest.raises(ValueError, match="reference mean length"):
            length_change(10, ref)
    run, ref = ({"datasets": {d: {"accuracy": 0.5, "mean_tokens": t} for d, t in tokens.items()}}
                for tokens in ({"x": 30.0, "y": 90.0}, {"x": 60.0, "y": 100.0}))
    cmp = compare(run, ref)
    assert cmp["datasets"]["x"]["length_change"] == pytest.approx(-0.5)
    assert cmp["avg"]["length_change"] == pytest.approx((-0.5 - 0.1) / 2)


def test_one_label_for_every_method():
    from l2s.merge.methods import entries
    from l2s.notebook_helpers import figure_method
    from l2s.prefs.config import VARIANTS

    labels = {}
    for e in entries():
        assert canonical_method(e.method) == e.key and method_key(e.method) == e.key == figure_method(e.method)
        assert series_key("merged", e.method) == e.key and series_label("merged", e.key) == e.label
        assert method_label(e.key) == e.label and e.label != e.key
        labels[e.key] = e.label
    single = {role: series_label(role, role) for role in ("quick", "slow", "short")}
    assert single == {"quick": "Quick (System-1)", "slow": "Slow (System-2)", "short": "Short-CoT"}
    ada = {v: series_label("adar1", v) for v in VARIANTS}
    assert ada["bilevel"] == "Ada-R1 (bilevel)" and all(series_key("adar1", v) == "ada_r1" for v in VARIANTS)
    every = [*labels.values(), *single.values(), *ada.values()]
    assert len(set(every)) == len(every), "two methods share a label"
    assert method_label("dpo") == "DPO" and canonical_method("Ada-R1") == "ada_r1"
    assert method_label("not_a_method") == "not_a_method"
    with pytest.raises(ValueError):
        method_key("not_a_method")
