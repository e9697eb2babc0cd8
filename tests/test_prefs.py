"""Ada-R1 pair construction on hand-made groups: every branch of the group and instance rules."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from l2s.cli import main
from l2s.io import read_jsonl, write_jsonl
from l2s.prefs import PairsConfig, build_pairs, write_pairs
from l2s.prefs.config import config_from_mapping
from l2s.prefs.groups import Sample, chatml_messages
from l2s.prefs.pairs import default_epsilon, group_pairs, instance_pairs, preferred_style, shortest_vs_longest


def S(style, i, correct, n, text=None):
    return Sample(style, i, text if text is not None else f"{style}-{i}", correct, n)


def prompt_of(problem: str) -> str:
    return f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"


def rows(pid, level, samples, dataset="toy"):
    return [{"id": pid, "dataset": dataset, "level": level, "sample": s.sample, "prompt": prompt_of(f"problem {pid}"),
             "response": s.response, "correct": s.correct, "n_tokens": s.n_tokens, "answer": "1"} for s in samples]


# ---- group level -------------------------------------------------------------------------------------------

def test_preferred_style_threshold():
    eps = default_epsilon(12)
    assert eps == pytest.approx(1 / 24)
    assert preferred_style(9 / 12, 3 / 12, eps) == "long"       # long clearly better
    assert preferred_style(3 / 12, 9 / 12, eps) == "short"      # short better
    assert preferred_style(6 / 12, 6 / 12, eps) == "short"      # tie goes to short
    assert preferred_style(7 / 12, 6 / 12, eps) == "long"       # one more correct answer out of 12 is enough
    # acc_L - acc_S == epsilon is not "greater", even when the float subtraction rounds up
    assert 7 / 12 - 6 / 12 > 1 / 12
    assert preferred_style(7 / 12, 6 / 12, 1 / 12) == "short"


def test_group_pairs_long_preferred_uses_correct_chosen_and_wrong_rejected():
    long = [S("long", 0, True, 50), S("long", 1, True, 60), S("long", 2, False, 70)]
    short = [S("short", 0, False, 10), S("short", 1, True, 12), S("short", 2, False, 11)]
    pairs = group_pairs(long, short, m1=4, rng=random.Random(0))
    assert len(pairs) == 4 == len(set(pairs))                   # 2 x 2 candidates, all of them
    assert {c.sample for c, _ in pairs} == {0, 1} and all(c.correct and c.style == "long" for c, _ in pairs)
    assert {r.sample for _, r in pairs} == {0, 2} and all(not r.correct and r.style == "short" for _, r in pairs)


def test_group_pairs_draws_m1_of_the_product_with_the_seed():
    long = [S("long", i, i % 2 == 0, 40 + i) for i in range(8)]        # 4 correct
    short = [S("short", i, i < 2, 10 + i) for i in range(8)]            # 6 wrong -> 24 candidates
    a = group_pairs(long, short, 4, random.Random("0:toy:p"))
    assert a == group_pairs(list(reversed(long)), list(reversed(short)), 4, random.Random("0:toy:p"))  # order-free
    assert len(a) == 4 and len(set(a)) == 4
    draws = {tuple(group_pairs(long, short, 4, random.Random(s))) for s in range(10)}
    assert len(draws) > 1                                               # the seed matters


def test_group_pairs_fallbacks_when_pools_are_empty():
    # preferred group has no correct answer: chosen from all of it; other group has no wrong one: rejected from all
    pref = [S("short", 0, False, 5), S("short", 1, False, 6)]
    other = [S("long", 0, True, 50)]
    pairs = group_pairs(pref, other, 4, random.Random(0))
    assert sorted((c.sample, r.sample) for c, r in pairs) == [(0, 0), (1, 0)]


def test_group_pairs_one_correct_answer():
    pref = [S("long", 0, False, 30), S("long", 1, True, 31), S("long", 2, False, 29)]
    other = [S("short", 0, False, 5), S("short", 1, False, 6)]
    pairs = group_pairs(pref, other, 4, random.Random(0))
    assert len(pairs) == 2 and all(c.sample == 1 for c, _ in pairs)


# ---- instance level ----------------------------------------------------------------------------------------

GROUP = [S("long", 0, True, 40), S("long", 1, True, 35), S("long", 2, False, 90),
         S("long", 3, True, 70), S("long", 4, False, 20)]


def test_instance_pairs_paper_rule():
    pairs = instance_pairs(GROUP, m2=2)
    assert [(c.sample, r.sample) for c, r in pairs] == [(1, 2), (1, 3)]    # shortest correct vs 2 longest (any)


def test_instance_pairs_code_variant_rejects_among_correct_only():
    pairs = instance_pairs(GROUP, m2=2, rejected_from="correct")
    assert [(c.sample, r.sample) for c, r in pairs] == [(1, 3), (1, 0)]
    # no correct answer: the code pairs shortest wrong with longest wrong; the paper makes no pair
    wrong = [S("short", 0, False, 5), S("short", 1, False, 9), S("short", 2, False, 7)]
    assert [(c.sample, r.sample) for c, r in instance_pairs(wrong, 2, "correct")] == [(0, 1), (0, 2)]
    assert instance_pairs(wrong, 2) == []


def test_instance_pairs_one_correct_answer_never_pairs_it_with_itself():
    one = [S("long", 0, False, 80), S("long", 1, True, 50), S("long", 2, False, 60)]
    assert [(c.sample, r.sample) for c, r in instance_pairs(one, 2)] == [(1, 0), (1, 2)]
    assert instance_pairs(one, 2, "correct") == []        # the authors' code would pair sample 1 with itself


def test_never_chosen_equals_rejected_even_with_equal_text():
    same = [S("long", 0, True, 10, "x"), S("long", 1, True, 30, "x"), S("long", 2, False, 20, "y")]
    assert [(c.sample, r.sample) for c, r in instance_pairs(same, 2)] == [(0, 2)]
    assert group_pairs([S("long", 0, True, 3, "z")], [S("short", 0, False, 3, "z")], 4, random.Random(0)) == []
    for c, r in instance_pairs(GROUP, 5) + shortest_vs_longest(GROUP, 5):
        assert c != r and c.response != r.response


def test_shortest_vs_longest_baseline():
    assert [(c.sample, r.sample) for c, r in shortest_vs_longest(GROUP)] == [(1, 2)]
    assert shortest_vs_longest([S("long", 0, False, 3), S("long", 1, False, 9)]) == []


# ---- whole runs --------------------------------------------------------------------------------------------

@pytest.fixture
def runs(tmp_path: Path):
    """Four problems: long preferred (L3), short preferred (L1), tie (L1), both zero (L5); K = 4."""
    long, short = [], []
    long += rows("p-long", 3, [S("long", 0, True, 40), S("long", 1, True, 45), S("long", 2, True, 60),
                               S("long", 3, False, 80)])
    short += rows("p-long", 3, [S("short", 0, False, 8), S("short", 1, True, 9), S("short", 2, False, 7),
                                S("short", 3, False, 6)])
    long += rows("p-short", 1, [S("long", i, i < 2, 30 + i) for i in range(4)])
    short += rows("p-short", 1, [S("short", i, i < 4, 5 + i) for i in range(4)])
    long += rows("p-tie", 1, [S("long", i, i < 2, 30 + i) for i in range(4)])
    short += rows("p-tie", 1, [S("short", i, i in (1, 3), 5 + i) for i in range(4)])
    long += rows("p-zero", 5, [S("long", i, False, 90 + i) for i in range(4)])
    short += rows("p-zero", 5, [S("short", i, False, 9 + i) for i in range(4)])
    for d, rs in (("long", long), ("short", short)):
        (tmp_path / d).mkdir()
        write_jsonl(tmp_path / d / "generations.jsonl", list(reversed(rs)) if d == "short" else rs)
    return tmp_path / "long", tmp_path / "short"


def test_build_pairs_bilevel_stats_and_format(runs):
    records, problems, summary = build_pairs(*runs, PairsConfig())
    by_id = {p["id"]: p for p in problems}
    assert [p["id"] for p in problems] == ["p-long", "p-short", "p-tie", "p-zero"]
    assert by_id["p-long"]["preferred"] == "long" and by_id["p-long"]["acc_diff"] == 0.5
    assert by_id["p-short"]["preferred"] == "short" and by_id["p-tie"]["preferred"] == "short"
    assert by_id["p-zero"]["kept"] is False and by_id["p-zero"]["drop_reason"] == "both_zero"
    assert by_id["p-long"]["epsilon"] == 0.125 and by_id["p-long"]["mean_tokens_long"] == 56.25
    # p-long: 3 correct long x 3 wrong short = 9 candidates -> 4 drawn; instance: 40 vs 80 (wrong) and 60
    kinds = [(r["id"], r["kind"]) for r in records]
    assert kinds.count(("p-long", "group")) == 4 and kinds.count(("p-long", "instance")) == 2
    inst = [(r["chosen_tokens"], r["rejected_tokens"]) for r in records if r["id"] == "p-long" and r["kind"] == "instance"]
    assert inst == [(40, 80), (40, 60)]
    # p-short: short all correct, long has 2 wrong -> 4 x 2 = 8 candidates, 4 drawn; instance 5 vs 8, 7
    assert all(r["chosen_style"] == "short" and not r["rejected_correct"]
               for r in records if r["id"] == "p-short" and r["kind"] == "group")
    assert not any(r["id"] == "p-zero" for r in records)
    r0 = records[0]
    assert r0["prompt"] == [{"role": "user", "content": "problem p-long"}]
    assert r0["chosen"][0]["role"] == "assistant" and r0["rejected"][0]["role"] == "assistant"
    assert summary["overall"]["n_prefer_long"] == 1 and summary["overall"]["n_kept"] == 3
    assert summary["by_level"]["1"]["n_prefer_long"] == 0 and summary["by_level"]["3"]["frac_prefer_long"] == 1.0
    assert summary["by_level"]["5"]["n_dropped_both_zero"] == 1
    assert summary["rows_by_kind"]["instance"]["n"] == 6


def test_variants(runs):
    group = build_pairs(*runs, PairsConfig(variant="group"))[0]
    assert {r["kind"] for r in group} == {"group"} and len(group) == 12
    inst = build_pairs(*runs, PairsConfig(variant="instance"))[0]
    assert {r["kind"] for r in inst} == {"instance"} and len(inst) == 6
    sft = build_pairs(*runs, PairsConfig(variant="sft"))[0]
    chosen = {(r["id"], r["chosen_sample"]) for r in group}
    assert {(r["id"], r["sample"]) for r in sft} == chosen and len(sft) == len(chosen)
    assert all(set(r) >= {"prompt", "completion"} and "chosen" not in r for r in sft)
    base = build_pairs(*runs, PairsConfig(variant="shortest_vs_longest"))[0]
    assert [(r["id"], r["chosen_tokens"], r["rejected_tokens"]) for r in base] == \
        [("p-long", 40, 80), ("p-short", 30, 33), ("p-tie", 30, 33)]
    pooled = build_pairs(*runs, PairsConfig(variant="shortest_vs_longest", baseline_source="pooled"))[0]
    assert [(r["chosen_style"], r["rejected_style"]) for r in pooled] == [("short", "long")] * 3
    kept = build_pairs(*runs, PairsConfig(drop_both_zero=False))[1]
    assert all(p["kept"] for p in kept)


def test_write_pairs_is_deterministic_and_atomic(runs, tmp_path):
    a = write_pairs(tmp_path / "a", *runs, PairsConfig(seed=3))
    b = write_pairs(tmp_path / "b", *runs, PairsConfig(seed=3))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "provenance.json")
    assert {str(f) for f in files} >= {"dataset/state.json", "pairs.jsonl", "problems.csv", "summary.json"}
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    c = write_pairs(tmp_path / "c", *runs, PairsConfig(seed=4))
    assert (c / "pairs.jsonl").read_bytes() != (a / "pairs.jsonl").read_bytes()
    from datasets import load_from_disk

    ds = load_from_disk(str(a / "dataset"))
    assert ds.num_rows == len(read_jsonl(a / "pairs.jsonl")) == 18
    assert ds[0]["prompt"] == [{"role": "user", "content": "problem p-long"}]
    assert json.loads((a / "config.json").read_text())["pairs"]["seed"] == 3
    assert (a / "problems.csv").read_text().splitlines()[0].startswith("dataset,id,level,k_long")
    with pytest.raises(FileExistsError):
        write_pairs(a, *runs, PairsConfig())


def test_bad_inputs_give_clear_errors_and_write_nothing(runs, tmp_path):
    long, short = runs
    bad = tmp_path / "bad.jsonl"
    rs = read_jsonl(long / "generations.jsonl")
    write_jsonl(bad, [{k: v for k, v in r.items() if k != "n_tokens"} for r in rs])
    with pytest.raises(ValueError, match=r"lacks field\(s\) \['n_tokens'\]"):
        write_pairs(tmp_path / "o1", bad, short, PairsConfig())
    write_jsonl(bad, rs + rs[:1])
    with pytest.raises(ValueError, match="duplicate sample"):
        write_pairs(tmp_path / "o2", bad, short, PairsConfig())
    write_jsonl(bad, [r for r in rs if r["id"] != "p-tie"])
    with pytest.raises(ValueError, match="different problems: 0 only in the long run.*1 only in the short"):
        write_pairs(tmp_path / "o3", bad, short, PairsConfig())
    assert len(build_pairs(bad, short, PairsConfig(require_same_problems=False))[1]) == 3
    write_jsonl(bad, [{**r, "prompt": "Question: " + r["id"]} for r in rs])
    with pytest.raises(ValueError, match="different prompts"):
        build_pairs(bad, short, PairsConfig())
    bad_short = tmp_path / "bad_short.jsonl"
    write_jsonl(bad_short, [{**r, "prompt": "Question: " + r["id"]} for r in read_jsonl(short / "generations.jsonl")])
    with pytest.raises(ValueError, match="not a ChatML chat"):
        build_pairs(bad, bad_short, PairsConfig())
    problems = tmp_path / "problems.jsonl"
    write_jsonl(problems, [{"id": pid, "problem": f"Q {pid}"} for pid in ("p-long", "p-short", "p-tie")])
    records = build_pairs(bad, bad_short, PairsConfig(), problems)[0]
    assert records[0]["prompt"] == [{"role": "user", "content": "Q p-long"}]    # p-zero is dropped: not needed
    zero = tmp_path / "zero.jsonl"
    write_jsonl(zero, [r for r in rs if r["id"] == "p-zero"])
    with pytest.raises(ValueError, match="no preference rows"):
        write_pairs(tmp_path / "o4", zero, zero, PairsConfig())
    with pytest.raises(FileNotFoundError):
        write_pairs(tmp_path / "o5", tmp_path / "missing", short, PairsConfig())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]


def test_config_validation():
    with pytest.raises(ValueError, match="unknown variant"):
        PairsConfig(variant="trilevel")
    with pytest.raises(ValueError, match="m1 must be"):
        PairsConfig(m1=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['m3'\]"):
        config_from_mapping(PairsConfig, {"m3": 1})
    with pytest.raises(ValueError, match="m1 must be"):
        config_from_mapping(PairsConfig, {"m1": "4"})
    assert config_from_mapping(PairsConfig, {"epsilon": 0}).epsilon == 0.0


def test_chatml_roundtrip():
    text = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nline 1\nline 2<|im_end|>\n<|im_start|>assistant\n"
    assert chatml_messages(text) == [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "line 1\nline 2"}]
    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    sent = tok.apply_chat_template([{"role": "user", "content": "Where is the ball ?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert tok.apply_chat_template(chatml_messages(sent), tokenize=False, add_generation_prompt=True) == sent


def test_cli_pairs(runs, tmp_path, capsys):
    long, short = runs
    cfg = tmp_path / "pairs.yaml"
    cfg.write_text("variant: group\nm1: 2\n")
    assert main(["pairs", "--long", str(long), "--short", str(short), "--out", str(tmp_path / "out"),
                 "--config", str(cfg), "--m1", "3"]) == 0
    saved = json.loads((tmp_path / "out" / "config.json").read_text())["pairs"]
    assert saved["variant"] == "group" and saved["m1"] == 3
    assert main(["pairs", "--long", str(long), "--short", str(short), "--out", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    cfg.write_text("m9: 1\n")
    assert main(["pairs", "--long", str(long), "--short", str(short), "--out", str(tmp_path / "x"),
                 "--config", str(cfg)]) == 2
    assert "unknown option" in capsys.readouterr().err and not (tmp_path / "x").exists()
