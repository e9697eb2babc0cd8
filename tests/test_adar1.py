"""Ada-R1 end to end on the micro toy family: merge, sample, pairs, DPO/SFT, evaluate; resume; bad configs;
token limits; pair counts and warnings in summary.json; l2s sample."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from l2s.adar1 import AdaR1Config, pairs_overview, run_adar1, token_limits
from l2s.cli import main
from l2s.io import read_json, read_jsonl, write_jsonl
from l2s.prefs import PairsConfig, write_pairs
from l2s.prefs.sample import SampleConfig, eval_configs, interleave_levels

K, TRAIN_LIMIT, EVAL_LIMIT, MAX_NEW = 3, 10, 10, 48


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A micro family in a private cache (``L2S_CACHE``), so merged and trained weights land there."""
    from l2s.toy.build import build_family

    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(cache))
        family = build_family("micro", cache=cache)
        yield {"cache": cache, "family": family, "root": tmp_path_factory.mktemp("adar1")}


def _config(env, out: Path, **kw) -> AdaR1Config:
    return AdaR1Config(**{"long_model": str(env["family"]["slow"]), "short_model": str(env["family"]["short"]),
                          "out": str(out), "k": K, "train_limit": TRAIN_LIMIT, "eval_limit": EVAL_LIMIT,
                          "max_new_tokens": MAX_NEW, "variants": ("bilevel", "sft"), "tags": {"size": "toy-micro"},
                          **kw})


@pytest.fixture(scope="module")
def result(env):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(env["cache"]))
        return run_adar1(_config(env, env["root"] / "run"))


def test_pipeline_runs_every_stage_and_wires_them(env, result):
    out, cache = env["root"] / "run", env["cache"]
    assert set(result["stages"].values()) == {"ran"}
    assert list(result["stages"]) == ["merge", "sample", "pairs-bilevel", "train-bilevel", "pairs-sft", "train-sft",
                                      "eval-long", "eval-merge", "eval-bilevel", "eval-sft"]

    # merge: θ = 0.8 θ_L + 0.2 θ_S, in the cache, recorded in the run dir, no weights under out
    merged = result["merged"]
    assert merged.parent == cache / "merged" and read_json(merged / "l2s_merge.json")["method"] == "linear"
    long_w, short_w = (load_file(env["family"][r] / "model.safetensors") for r in ("slow", "short"))
    merged_w = load_file(merged / "model.safetensors")
    for name in long_w:
        torch.testing.assert_close(merged_w[name], 0.8 * long_w[name] + 0.2 * short_w[name])
    record = read_json(out / "adar1.json")
    assert record["models"]["merged"] == str(merged) and record["config"]["alpha"] == 0.8
    assert record["provenance"]["seed"] == 0 and not list(out.rglob("*.safetensors"))

    # sample: K samples of each model per training problem, the paper's sampling, levels balanced
    for style, model in (("long", "slow"), ("short", "short")):
        run = result["sample_runs"][style]
        cfg = read_json(run / "config.json")
        assert cfg["model"] == str(env["family"][model]) and cfg["split"] == "train"
        assert {k: cfg["sampling"][k] for k in ("n", "temperature", "top_p")} == {"n": K, "temperature": 0.6,
                                                                                  "top_p": 0.95}
        rows = read_jsonl(run / "generations.jsonl")
        assert all(r["messages"] == [{"role": "user", "content": r["messages"][0]["content"]}] for r in rows)
        assert len(rows) == TRAIN_LIMIT * K and {r["sample"] for r in rows} == set(range(K))
        assert Counter(r["level"] for r in rows) == {lv: TRAIN_LIMIT // 5 * K for lv in range(1, 6)}
        assert all(r["n_tokens"] <= MAX_NEW and isinstance(r["correct"], bool) for r in rows)
    assert read_json(result["sample_runs"]["long"] / "config.json")["tags"] == {"size": "toy-micro", "stage": "sample",
                                                                              "style": "long"}

    # pairs and training: from the sample runs, onto the merged model, checkpoints in the cache
    for variant, method in (("bilevel", "dpo"), ("sft", "sft")):
        pairs_cfg = read_json(result["pairs"][variant] / "config.json")
        assert pairs_cfg["pairs"]["variant"] == variant
        assert pairs_cfg["inputs"]["long"]["path"] == str(result["sample_runs"]["long"] / "generations.jsonl")
        model = result["models"][variant]
        assert model.parent == cache / "adar1" and record["models"][variant] == str(model)
        card = read_json(model / "l2s_train.json")
        assert card["method"] == method and card["model"]["path"] == str(merged)
        assert card["pairs"]["path"] == str(result["pairs"][variant]) and card["config"]["preset"] == "toy"
        pairs_summary = read_json(result["pairs"][variant] / "summary.json")
        assert pairs_summary["token_limit"]["long"]["max_new_tokens"] == MAX_NEW
        sample_rows = {r["id"]: r for r in read_jsonl(result["sample_runs"]["long"] / "generations.jsonl")}
        assert all(r["prompt"] == sample_rows[r["id"]]["messages"] for r in read_jsonl(result["pairs"][variant]
                                                                                       / "pairs.jsonl"))

    # evaluation: greedy on the test split, tagged for the figures
    want = {"long": ({"role": "reference", "method": "long"}, env["family"]["slow"]),
            "merge": ({"role": "merged", "method": "linear", "params": {"alpha": 0.8}}, merged),
            "bilevel": ({"role": "adar1", "method": "bilevel"}, result["models"]["bilevel"]),
            "sft": ({"role": "adar1", "method": "sft"}, result["models"]["sft"])}
    assert set(result["eval_runs"]) == set(want)
    summary = read_json(out / "summary.json")
    for name, (tags, model) in want.items():
        run = result["eval_runs"][name]
        assert run == out / f"eval-{name}"
        cfg = read_json(run / "config.json")
        assert cfg["tags"] == {"size": "toy-micro", **tags} and cfg["model"] == str(model)
        assert cfg["split"] == "test" and cfg["sampling"]["temperature"] == 0 and cfg["sampling"]["n"] == 1
        metrics = read_json(run / "metrics.json")["datasets"]["toy"]
        rows = read_jsonl(run / "generations.jsonl")
        assert metrics["n"] == EVAL_LIMIT == len(rows)
        ours, ref = summary["runs"][name]["toy"], read_json(out / "eval-long/metrics.json")["datasets"]["toy"]
        assert ours["accuracy"] == sum(r["correct"] for r in rows) / len(rows)
        assert ours["mean_tokens"] == pytest.approx(sum(r["n_tokens"] for r in rows) / len(rows))
        assert ours["length_change"] == pytest.approx((ours["mean_tokens"] - ref["mean_tokens"]) / ref["mean_tokens"])
        assert set(ours["by_level"]) == {"1", "2", "3", "4", "5"}
        assert cfg["sampling"]["max_new_tokens"] == MAX_NEW

    # the stated token limits, and how many responses hit them; pair counts per variant
    assert record["token_limits"] == summary["token_limits"] == {"sample": MAX_NEW, "eval": MAX_NEW}
    assert set(summary["token_limit"]) == {"sample-long", "sample-short", "eval-long", "eval-merge", "eval-bilevel",
                                           "eval-sft"}
    for name, limit in summary["token_limit"].items():
        rows = read_jsonl(out / name / "generations.jsonl")
        assert limit == {"max_new_tokens": MAX_NEW, "capped_by_context": 0, "min_budget": None,
                         "hit_limit": sum(r["truncated"] for r in rows)}
    for variant in ("bilevel", "sft"):
        pairs_summary = read_json(result["pairs"][variant] / "summary.json")
        overview = summary["pairs"][variant]
        n_rows = len(read_jsonl(result["pairs"][variant] / "pairs.jsonl"))
        assert overview["n_rows"] == pairs_summary["n_rows"] == n_rows
        assert overview["n_problems"] == TRAIN_LIMIT and overview["warnings"] == pairs_summary["warnings"]
    assert summary["warnings"] == list(dict.fromkeys(w for v in summary["pairs"].values() for w in v["warnings"]))


def test_second_call_does_no_work_and_a_killed_eval_resumes(env, result, monkeypatch):
    out = env["root"] / "run"
    monkeypatch.setenv("L2S_CACHE", str(env["cache"]))
    gens = sorted(out.glob("*/generations.jsonl"))
    before = {p: p.stat().st_mtime_ns for p in gens}

    def forbidden(*a, **k):
        raise AssertionError("a finished stage ran again")

    import l2s.dpo.train
    import l2s.eval.run
    import l2s.merge
    import l2s.prefs
    import l2s.prefs.sample

    for module, name in ((l2s.merge, "merge"), (l2s.dpo.train, "train"), (l2s.prefs, "write_pairs"),
                         (l2s.prefs.sample, "sample"), (l2s.eval.run, "evaluate")):
        monkeypatch.setattr(module, name, forbidden)
    again = run_adar1(_config(env, out))
    assert set(again["stages"].values()) == {"skipped"}
    assert again["eval_runs"] == result["eval_runs"] and again["models"] == result["models"]
    assert {p: p.stat().st_mtime_ns for p in gens} == before
    monkeypatch.undo()
    monkeypatch.setenv("L2S_CACHE", str(env["cache"]))

    # a run killed mid-evaluation: half its rows written, no metrics yet -> only the rest is generated
    run = out / "eval-merge"
    full = (run / "generations.jsonl").read_bytes()
    lines = full.splitlines(keepends=True)
    (run / "generations.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:10])  # torn last line
    (run / "metrics.json").unlink()
    resumed = run_adar1(_config(env, out))
    assert resumed["stages"]["eval-merge"] == "ran"
    assert [k for k, v in resumed["stages"].items() if v == "ran"] == ["eval-merge"]
    assert (run / "generations.jsonl").read_bytes() == full


def test_bad_configs_are_rejected_with_clear_errors(env, result, tmp_path):
    for kw, msg in (({"alpha": 1.5}, "alpha"), ({"alpha": -0.1}, "alpha"), ({"k": 0}, "k "),
                    ({"variants": ("bilevel", "magic")}, "variant"), ({"variants": ()}, "variants"),
                    ({"dpo_preset": "huge"}, "dpo_preset"), ({"train_limit": 0}, "train_limit")):
        with pytest.raises(ValueError, match=msg):
            AdaR1Config(long_model="a", short_model="b", out=str(tmp_path / "x"), **kw)
    assert not (tmp_path / "x").exists()


def test_a_changed_dpo_preset_reruns_exactly_the_training_and_evaluation_it_feeds(env, result, monkeypatch,
                                                                               tmp_path):
    import shutil

    from l2s.dpo.config import PRESETS

    monkeypatch.setenv("L2S_CACHE", str(env["cache"]))
    out = tmp_path / "run"
    shutil.copytree(env["root"] / "run", out)  # the module's run stays as it was for the other tests
    (out / "eval-bilevel" / "leftover.txt").write_text("from the old model")
    monkeypatch.setitem(PRESETS, "toy", {**PRESETS["toy"], "learning_rate": 3e-4})
    again = run_adar1(_config(env, out))
    ran = [k for k, v in again["stages"].items() if v == "ran"]
    assert ran == ["train-bilevel", "train-sft", "eval-bilevel", "eval-sft"]
    assert not (out / "eval-bilevel" / "leftover.txt").exists()  # a stale stage reruns from a cleared dir
    record = read_json(out / "adar1.json")
    assert record["models"]["bilevel"] != str(result["models"]["bilevel"])
    assert read_json(Path(record["models"]["bilevel"]) / "l2s_train.json")["config"]["learning_rate"] == 3e-4
    assert read_json(out / "eval-bilevel" / "config.json")["model"] == record["models"]["bilevel"]
    assert (out / "eval-long" / "generations.jsonl").read_bytes() == (
        env["root"] / "run" / "eval-long" / "generations.jsonl").read_bytes()


def test_interleave_levels_balances_a_prefix():
    rows = [{"id": f"{lv}-{i}", "level": lv} for lv in (1, 2, 3) for i in range(3)] + [{"id": "x", "level": None}]
    got = [r["id"] for r in interleave_levels(rows)]
    assert got == ["1-0", "2-0", "3-0", "x", "1-1", "2-1", "3-1", "1-2", "2-2", "3-2"]


def test_sample_cli_with_config_file(env, tmp_path, capsys):
    cfg = tmp_path / "sample.yaml"
    cfg.write_text(f"long_model: {env['family']['slow']}\nshort_model: {env['family']['short']}\n"
                   "k: 2\nlimit: 5\nmax_new_tokens: 16\n")
    assert main(["sample", "--config", str(cfg), "--out", str(tmp_path / "s"), "--seed", "3"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "s" / "sample-long"), str(tmp_path / "s" / "sample-short")]
    for style in ("long", "short"):
        run = tmp_path / "s" / f"sample-{style}"
        conf = read_json(run / "config.json")
        assert conf["sampling"]["seed"] == 3 and conf["sampling"]["max_new_tokens"] == 16
        assert conf["tags"] == {"stage": "sample", "style": style}
        rows = read_jsonl(run / "generations.jsonl")
        assert len(rows) == 10 and sorted(r["level"] for r in rows[::2]) == [1, 2, 3, 4, 5]
        assert json.loads((run / "metrics.json").read_text())["datasets"]["toy"]["n"] == 10
    assert main(["sample", "--short", "x", "--out", str(tmp_path / "t")]) == 2
    assert "--long is required" in capsys.readouterr().err
    assert main(["sample", "--long", "a", "--short", "b", "--out", str(tmp_path / "t"), "--k", "0"]) == 2
    assert "k (samples per problem)" in capsys.readouterr().err


def test_same_config_elsewhere_gives_the_same_bytes_and_reuses_cached_models(env, result, monkeypatch):
    monkeypatch.setenv("L2S_CACHE", str(env["cache"]))
    other = env["root"] / "again"
    import l2s.dpo.train
    import l2s.merge

    def forbidden(*a, **k):
        raise AssertionError("a cached model was made again")

    monkeypatch.setattr(l2s.merge, "merge", forbidden)
    monkeypatch.setattr(l2s.dpo.train, "train", forbidden)
    twin = run_adar1(_config(env, other))  # merge and training reuse the cache: same inputs, same keys
    assert twin["merged"] == result["merged"] and twin["models"] == result["models"]
    first = env["root"] / "run"
    for name in ("sample-long", "sample-short", "pairs-bilevel", "pairs-sft", "eval-long", "eval-merge",
                 "eval-bilevel", "eval-sft"):
        for f in ("generations.jsonl", "pairs.jsonl", "metrics.json", "problems.csv"):
            if (first / name / f).is_file():
                assert (other / name / f).read_bytes() == (first / name / f).read_bytes(), f"{name}/{f}"


def test_token_limits_are_stated_never_inherited(tmp_path):
    def cfg(**kw):
        return AdaR1Config(long_model="a", short_model="b", out=str(tmp_path / "x"), **kw)

    assert token_limits(cfg()) == {"sample": 16384, "eval": 10240}           # Ada-R1's: 16k sampling, 10,240 eval
    assert token_limits(cfg(max_new_tokens=128)) == {"sample": 128, "eval": 128}          # the toy study's
    assert token_limits(cfg(max_new_tokens=128, eval_max_new_tokens=7)) == {"sample": 128, "eval": 7}
    assert token_limits(cfg(sample_max_new_tokens=9)) == {"sample": 9, "eval": 10240}
    with pytest.raises(ValueError, match="eval_max_new_tokens"):
        cfg(eval_max_new_tokens=0)
    assert cfg().variants == ("bilevel", "group", "instance", "sft", "shortest_vs_longest")
    assert cfg().baseline_source == "pooled"
    with pytest.raises(ValueError, match="baseline_source"):
        cfg(baseline_source="short")


def test_sampling_defaults_to_16k_whatever_the_generation_config(env, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "generation_config.json").write_text(json.dumps({"max_new_tokens": 99}))
    configs = eval_configs(SampleConfig(long_model=str(model), short_model=str(model), out=str(tmp_path / "s")))
    assert {c.sampling.max_new_tokens for c in configs.values()} == {16384}
    with pytest.raises(ValueError, match="max_new_tokens must be an integer"):
        SampleConfig(long_model="a", short_model="b", out="o", max_new_tokens=None)


def test_pairs_built_with_other_options_are_rebuilt(env, result, monkeypatch, tmp_path):
    """The baseline's options are part of its pairs stage's inputs; bilevel does not read them."""
    import shutil

    monkeypatch.setenv("L2S_CACHE", str(env["cache"]))
    out = tmp_path / "run"
    shutil.copytree(env["root"] / "run", out)
    again = run_adar1(_config(env, out, baseline_source="long"))
    assert [k for k, v in again["stages"].items() if v == "ran"] == [], "bilevel and sft pairs do not read it"
    cfg = _config(env, out, variants=("bilevel", "shortest_vs_longest"), baseline_source="long")
    first = run_adar1(cfg)
    assert [k for k, v in first["stages"].items() if v == "ran"] == [
        "pairs-shortest_vs_longest", "train-shortest_vs_longest", "eval-shortest_vs_longest"]
    pooled = run_adar1(_config(env, out, variants=("bilevel", "shortest_vs_longest")))
    assert [k for k, v in pooled["stages"].items() if v == "ran"] == [
        "pairs-shortest_vs_longest", "train-shortest_vs_longest", "eval-shortest_vs_longest"]
    pairs = read_json(out / "pairs-shortest_vs_longest" / "config.json")["pairs"]
    assert PairsConfig(**pairs).baseline_source == "pooled"


def test_pairs_overview_of_older_pairs_dirs(env, result, tmp_path):
    import shutil

    new = result["pairs"]["bilevel"]
    old = tmp_path / "pairs-bilevel"
    shutil.copytree(new, old)
    summary = read_json(old / "summary.json")
    for key in ("coverage", "warnings", "token_limit", "prompt_format"):
        summary.pop(key)
    (old / "summary.json").write_text(json.dumps(summary))
    assert pairs_overview({"bilevel": old}) == pairs_overview({"bilevel": new})
    rows = read_jsonl(result["sample_runs"]["long"] / "generations.jsonl")
    legacy = tmp_path / "legacy-long.jsonl"
    write_jsonl(legacy, [{k: v for k, v in r.items() if k != "messages"} for r in rows])
    again = write_pairs(tmp_path / "again", legacy, result["sample_runs"]["short"], PairsConfig())
    assert (again / "pairs.jsonl").read_bytes() == (new / "pairs.jsonl").read_bytes()   # ChatML read back
