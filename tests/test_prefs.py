"""Ada-R1 pair construction on hand-made groups: every branch of the group and instance rules; prompts
taken from the rows' messages for any chat template (and the fallback for old runs), the pooled
baseline, coverage warnings, token limits, the chat-template check and Wu et al.'s s1K DPO pairs."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import pytest

from l2s.cli import main
from l2s.config import parse
from l2s.io import read_jsonl, write_jsonl
from l2s.prefs import PairsConfig, build_pairs, write_pairs
from l2s.prefs.groups import Sample, chatml_messages, token_limit
from l2s.prefs.pairs import default_epsilon, group_pairs, instance_pairs, preferred_style, shortest_vs_longest

R1_PROMPT = "<｜begin▁of▁sentence｜>Please reason step by step.<｜User｜>{q}<｜Assistant｜><think>\n"


def S(style, i, correct, n, text=None):
    return Sample(style, i, text if text is not None else f"{style}-{i}", correct, n)


def prompt_of(problem: str) -> str:
    return f"<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"


def rows(pid, level, samples, dataset="toy", legacy=False):
    """Generation rows as l2s writes them (``messages`` = the chat the ChatML prompt rendered); ``legacy``:
    as runs written before rows stored their messages."""
    chat = {} if legacy else {"messages": [{"role": "user", "content": f"problem {pid}"}]}
    return [{"id": pid, "dataset": dataset, "level": level, "sample": s.sample, "prompt": prompt_of(f"problem {pid}"),
             **chat, "response": s.response, "correct": s.correct, "n_tokens": s.n_tokens, "answer": "1"}
            for s in samples]


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
    inst = [(r["chosen_tokens"], r["rejected_tokens"]) for r in records
            if r["id"] == "p-long" and r["kind"] == "instance"]
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
    base = build_pairs(*runs, PairsConfig(variant="shortest_vs_longest", baseline_source="long"))[0]
    assert [(r["id"], r["chosen_tokens"], r["rejected_tokens"]) for r in base] == \
        [("p-long", 40, 80), ("p-short", 30, 33), ("p-tie", 30, 33)]
    pooled = build_pairs(*runs, PairsConfig(variant="shortest_vs_longest"))[0]       # pooled is the default
    assert [(r["chosen_style"], r["rejected_style"]) for r in pooled] == [("short", "long")] * 3
    assert [(r["chosen_tokens"], r["rejected_tokens"]) for r in pooled] == [(9, 80), (5, 33), (6, 33)]
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
    write_jsonl(bad, [{**r, "messages": [{"role": "user", "content": "other"}]} for r in rs])
    with pytest.raises(ValueError, match="rendered different chats"):
        build_pairs(bad, short, PairsConfig())
    write_jsonl(bad, [{**r, "messages": "problem"} for r in rs])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'messages' must be a non-empty list"):
        build_pairs(bad, short, PairsConfig())
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
    with pytest.raises(ValueError, match=r"c.yaml: unknown key\(s\) \['m3'\]"):
        parse(PairsConfig, {"m3": 1}, "c.yaml")
    with pytest.raises(ValueError, match="m1 must be int, got '4'"):
        parse(PairsConfig, {"m1": "4"})
    with pytest.raises(ValueError, match="variant must be one of 'bilevel'"):
        parse(PairsConfig, {"variant": "trilevel"})
    assert parse(PairsConfig, {"epsilon": 0}).epsilon == 0.0


def test_chatml_roundtrip():
    text = ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nline 1\nline 2<|im_end|>\n"
            "<|im_start|>assistant\n")
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
    assert "pairs.yaml: unknown key(s) ['m9']" in capsys.readouterr().err and not (tmp_path / "x").exists()


# ---- prompts from the rows --------------------------------------------------------------------------------

def _write_runs(root: Path, long_rows: list[dict], short_rows: list[dict]) -> tuple[Path, Path]:
    for d, rs in (("long", long_rows), ("short", short_rows)):
        (root / d).mkdir(parents=True, exist_ok=True)
        write_jsonl(root / d / "generations.jsonl", rs)
    return root / "long", root / "short"


def _restyle(rs: list[dict], prompt, messages="keep") -> list[dict]:
    """Rows with another prompt string (``prompt(problem)``) and ``messages`` (``"drop"``: none)."""
    out = []
    for r in rs:
        r = {**r, "prompt": prompt(r["messages"][-1]["content"])}
        if messages == "drop":
            r.pop("messages")
        elif messages != "keep":
            r["messages"] = messages(r["messages"][-1]["content"])
        out.append(r)
    return out


def _chat(q):
    return [{"role": "system", "content": "Please reason step by step."}, {"role": "user", "content": q}]


def test_pairs_take_the_chat_from_the_rows_for_any_template(runs, tmp_path):
    long, short = (read_jsonl(r / "generations.jsonl") for r in runs)
    r1 = _write_runs(tmp_path / "r1", *(_restyle(rs, lambda q: R1_PROMPT.format(q=q), _chat) for rs in (long, short)))
    records, _, summary = build_pairs(*r1, PairsConfig())
    assert records and summary["prompt_format"] == "conversational"
    for r in records:
        assert r["prompt"] == _chat(f"problem {r['id']}")                       # the rows' chat, not a parse
        assert r["prompt_text"] == R1_PROMPT.format(q=f"problem {r['id']}")     # what the models were sent
        assert r["chosen"][0]["role"] == "assistant"


def test_text_prompts_give_the_standard_format(runs, tmp_path):
    long, short = (read_jsonl(r / "generations.jsonl") for r in runs)
    cot = _write_runs(tmp_path / "cot", *(_restyle(rs, lambda q: f"Question: {q}\nAnswer:", lambda q: None)
                                          for rs in (long, short)))
    out = write_pairs(tmp_path / "pairs", *cot, PairsConfig())
    records = read_jsonl(out / "pairs.jsonl")
    assert all(r["prompt"] == r["prompt_text"] == f"Question: problem {r['id']}\nAnswer:" for r in records)
    assert all(isinstance(r["chosen"], str) and isinstance(r["rejected"], str) for r in records)
    assert json.loads((out / "config.json").read_text())["prompt_format"] == "standard"
    sft = build_pairs(*cot, PairsConfig(variant="sft"))[0]
    assert all(isinstance(r["completion"], str) for r in sft)


def test_old_runs_without_messages_fall_back_or_say_what_to_rerun(runs, tmp_path, caplog):
    long, short = (read_jsonl(r / "generations.jsonl") for r in runs)
    chatml = _write_runs(tmp_path / "chatml", *(_restyle(rs, prompt_of, "drop") for rs in (long, short)))
    with caplog.at_level(logging.WARNING, logger="l2s.prefs.build"):
        records = build_pairs(*chatml, PairsConfig())[0]
    assert records[0]["prompt"] == [{"role": "user", "content": "problem p-long"}]   # read back from ChatML
    assert "have no 'messages'" in caplog.text and "Sample again" in caplog.text
    r1 = _write_runs(tmp_path / "r1", *(_restyle(rs, lambda q: R1_PROMPT.format(q=q), "drop") for rs in (long, short)))
    with pytest.raises(ValueError, match=r"no 'messages' field.*not ChatML.*sample again.*--problems FILE"):
        build_pairs(*r1, PairsConfig())
    problems = tmp_path / "problems.jsonl"
    write_jsonl(problems, [{"id": pid, "problem": f"Q {pid}"} for pid in ("p-long", "p-short", "p-tie")])
    records = build_pairs(*r1, PairsConfig(), problems)[0]
    assert records[0]["prompt"] == [{"role": "user", "content": "Q p-long"}]    # p-zero is dropped: not needed


# ---- the pooled baseline, coverage and warnings -----------------------------------------------------------

@pytest.fixture
def identical_long(tmp_path):
    """Five problems whose K = 4 long samples are one text (as on the toy world), except p0's; the short
    model's samples differ and are partly correct."""
    long, short = [], []
    for i in range(5):
        same = [S("long", j, True, 50, "the same long answer") for j in range(4)]
        if i == 0:
            same = [S("long", j, j < 3, 50 + j) for j in range(4)]
        long += rows(f"p{i}", 2, same)
        short += rows(f"p{i}", 2, [S("short", j, j % 2 == 0, 10 + j) for j in range(4)])
    return _write_runs(tmp_path / "identical", long, short)


def test_pooled_baseline_pairs_near_identical_long_samples(identical_long, tmp_path, caplog):
    only_long = PairsConfig(variant="shortest_vs_longest", baseline_source="long")
    long_records, _, long_summary = build_pairs(*identical_long, only_long)
    pooled_records, _, pooled_summary = build_pairs(*identical_long, PairsConfig(variant="shortest_vs_longest"))
    assert len(long_records) == 1 < len(pooled_records) == 5
    assert all((r["chosen_style"], r["rejected_style"]) == ("short", "long") for r in pooled_records)
    cov = long_summary["coverage"]
    assert (cov["n_problems"], cov["n_with_pairs"], cov["frac_with_pairs"]) == (5, 1, 0.2)
    assert cov["dropped"] == {"both_zero": [], "no_pair": ["toy:p1", "toy:p2", "toy:p3", "toy:p4"]}
    assert len(long_summary["warnings"]) == 1
    assert "cover 1 of 5 problems (20.0%, under 25%)" in long_summary["warnings"][0]
    assert "baseline_source 'pooled'" in long_summary["warnings"][0]
    assert pooled_summary["warnings"] == [] and pooled_summary["coverage"]["frac_with_pairs"] == 1.0
    with caplog.at_level(logging.WARNING, logger="l2s.prefs.build"):
        out = write_pairs(tmp_path / "p", *identical_long, only_long)
    assert "cover 1 of 5 problems" in caplog.text
    assert json.loads((out / "summary.json").read_text())["warnings"] == long_summary["warnings"]


def test_coverage_names_the_dropped_problems(runs):
    summary = build_pairs(*runs, PairsConfig())[2]
    assert summary["coverage"] == {"n_problems": 4, "n_with_pairs": 3, "frac_with_pairs": 0.75,
                                   "n_dropped": {"both_zero": 1, "no_pair": 0},
                                   "dropped": {"both_zero": ["toy:p-zero"], "no_pair": []}}
    assert summary["warnings"] == []


def test_outputs_key_keeps_only_the_options_a_variant_reads():
    assert set(PairsConfig().outputs_key()) == set(PairsConfig().to_dict()) - {"baseline_source", "baseline_pairs"}
    base = PairsConfig(variant="shortest_vs_longest")
    assert base.outputs_key() == PairsConfig(variant="shortest_vs_longest", m1=9, seed=5).outputs_key()
    assert base.outputs_key() != PairsConfig(variant="shortest_vs_longest", baseline_source="long").outputs_key()
    assert PairsConfig(variant="group").outputs_key() == PairsConfig(variant="group", m2=7).outputs_key()


def test_token_limits_of_the_sample_runs_are_surfaced(runs):
    long, short = runs
    assert build_pairs(*runs, PairsConfig())[2]["token_limit"] == {"long": None, "short": None}  # bare files
    limit = {"max_new_tokens": 64, "capped_by_context": 0, "min_budget": None, "hit_limit": 3}
    (long / "metrics.json").write_text(json.dumps({"token_limit": limit}))
    (long / "config.json").write_text(json.dumps({"sampling": {"max_new_tokens": 64}}))
    (short / "config.json").write_text(json.dumps({"sampling": {"max_new_tokens": 16}}))
    rs = read_jsonl(short / "generations.jsonl")                 # an older run: computed from its rows
    write_jsonl(short / "generations.jsonl", [{**r, "truncated": i < 5, **({"budget": 12} if i == 0 else {})}
                                              for i, r in enumerate(rs)])
    assert token_limit(short) == {"max_new_tokens": 16, "capped_by_context": 1, "min_budget": 12, "hit_limit": 5}
    assert token_limit(short / "generations.jsonl") == token_limit(short)
    write_jsonl(short / "copy.jsonl", rs)
    assert token_limit(short / "copy.jsonl") is None                   # a file outside a run directory
    assert build_pairs(*runs, PairsConfig())[2]["token_limit"] == {"long": limit, "short": token_limit(short)}


# ---- the chat template DPO renders the pairs with ---------------------------------------------------------

def test_template_warnings_flag_a_template_that_rewrites_the_sampled_text():
    from l2s.prefs.template import template_warnings
    from l2s.standins import R1_DISTILL_CHAT_TEMPLATE
    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    chat = _chat("Where is the ball ?")
    sent = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert template_warnings(tok, chat, sent, "It is under cup 2 .") == []           # ChatML: trains as sampled
    assert "renders the prompt messages as" in template_warnings(tok, chat, "other", "x")[0]
    tok.chat_template = R1_DISTILL_CHAT_TEMPLATE
    sent = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    warnings = template_warnings(tok, chat, sent, "It is under cup 2 .")
    assert len(warnings) == 2
    assert "rewrites the assistant turn" in warnings[0] and "without the sampled reasoning" in warnings[0]
    assert "not a prefix" in warnings[1] and "'<think>\\n'" in warnings[1]
    assert len(template_warnings(tok, chat, sent, "It is under cup 2 .", probe=False)) == 1


def test_write_pairs_checks_the_trained_models_template(runs, tmp_path):
    from l2s.toy.tokenizer import build_tokenizer

    build_tokenizer().save_pretrained(tmp_path / "tok")
    out = write_pairs(tmp_path / "p", *runs, PairsConfig(), tokenizer=tmp_path / "tok")
    assert json.loads((out / "summary.json").read_text())["warnings"] == []
    assert json.loads((out / "config.json").read_text())["inputs"]["tokenizer"] == {"path": str(tmp_path / "tok")}


# ---- Wu et al.'s DPO baseline: s1K pairs ------------------------------------------------------------------

S1K_FIXTURE = Path(__file__).parent / "data" / "s1k-sample.jsonl"


@pytest.fixture
def s1k_inputs(tmp_path):
    from l2s.merge.s1k import write_s1k_calibration
    from l2s.toy.tokenizer import build_tokenizer

    manifest = write_s1k_calibration(tmp_path / "cal", n=5, seed=0, source=S1K_FIXTURE)
    build_tokenizer().save_pretrained(tmp_path / "tok")
    return tmp_path / "cal", tmp_path / "tok", manifest


def test_s1k_pairs_short_chosen_long_rejected_byte_deterministic(s1k_inputs, tmp_path):
    from l2s.prefs.s1k import write_s1k_pairs

    cal, tok, manifest = s1k_inputs
    a = write_s1k_pairs(tmp_path / "a", cal, tok)
    b = write_s1k_pairs(tmp_path / "b", cal, tok)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "provenance.json")
    assert {str(f) for f in files} >= {"dataset/state.json", "pairs.jsonl", "summary.json", "config.json"}
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    short, long = read_jsonl(cal / "s1k-short.jsonl"), read_jsonl(cal / "s1k-long.jsonl")
    records = read_jsonl(a / "pairs.jsonl")
    assert [r["id"] for r in records] == [f"s1k-{i}" for i in manifest["indices"]]
    for r, s, lg in zip(records, short, long):
        assert r["prompt"] == [{"role": "system", "content": "Please reason step by step, and put your final "
                                                             "answer within \\boxed{}."},
                               {"role": "user", "content": s["question"]}]
        assert r["chosen"] == [{"role": "assistant", "content": s["solution"]}]
        assert r["rejected"] == [{"role": "assistant", "content": lg["solution"]}]
        assert r["prompt_text"].startswith("<|im_start|>system\n") and r["rejected_tokens"] > r["chosen_tokens"]
    meta = json.loads((a / "config.json").read_text())
    assert (meta["kind"], meta["format"], meta["prompt_format"]) == ("pairs", "preference", "conversational")
    assert meta["pairs"] == {"variant": "wu_dpo", "source": "s1k", "prompt": "qwen25-math-cot", "max_length": 4096}
    assert set(meta["inputs"]) == {"short", "long", "manifest", "tokenizer"}
    summary = json.loads((a / "summary.json").read_text())
    assert summary["n_rows"] == 5 and summary["over_max_length"] == {"chosen": 0, "rejected": 0}
    assert summary["warnings"] == []
    from datasets import load_from_disk

    ds = load_from_disk(str(a / "dataset"))
    assert ds.num_rows == 5 and ds[0]["chosen"] == records[0]["chosen"]
    c = write_s1k_pairs(tmp_path / "c", cal, tok, prompt="chat", max_length=40)
    rs = read_jsonl(c / "pairs.jsonl")
    assert rs[0]["prompt"] == [{"role": "user", "content": short[0]["question"]}]
    over = json.loads((c / "summary.json").read_text())
    too_long = sum(r["prompt_tokens"] + r["rejected_tokens"] + 1 > 40 for r in rs)
    assert over["over_max_length"]["rejected"] == too_long > 0
    assert "do not fit max_length 40" in over["warnings"][0]


def test_s1k_pairs_bad_inputs(s1k_inputs, tmp_path):
    from l2s.prefs.s1k import write_s1k_pairs

    cal, tok, _ = s1k_inputs
    with pytest.raises(FileNotFoundError, match="l2s calibration s1k"):
        write_s1k_pairs(tmp_path / "x", tmp_path / "nowhere", tok)
    with pytest.raises(ValueError, match="prompt must be one of"):
        write_s1k_pairs(tmp_path / "x", cal, tok, prompt="cot")
    long = read_jsonl(cal / "s1k-long.jsonl")
    write_jsonl(cal / "s1k-long.jsonl", [{**long[0], "question": "another"}] + long[1:])
    with pytest.raises(ValueError, match="does not match"):
        write_s1k_pairs(tmp_path / "x", cal, tok)
    (cal / "s1k.json").unlink()
    with pytest.raises(ValueError, match="row 1: .* hold different questions"):
        write_s1k_pairs(tmp_path / "x", cal, tok)
    assert not (tmp_path / "x").exists()


def test_cli_pairs_s1k(s1k_inputs, tmp_path, capsys):
    cal, tok, _ = s1k_inputs
    out = tmp_path / "wu"
    assert main(["pairs", "s1k", "--calibration-dir", str(cal), "--tokenizer", str(tok), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    assert len(read_jsonl(out / "pairs.jsonl")) == 5
    assert main(["pairs", "s1k", "--calibration-dir", str(cal), "--tokenizer", str(tok), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["pairs", "--out", str(tmp_path / "y")]) == 2
    assert "--long is required" in capsys.readouterr().err


def test_a_run_resumed_across_the_upgrade_mixes_rows_with_and_without_messages(runs, tmp_path):
    long, short = (read_jsonl(r / "generations.jsonl") for r in runs)
    mixed = [r if r["sample"] else {k: v for k, v in r.items() if k != "messages"} for r in long]
    resumed = _write_runs(tmp_path / "resumed", mixed, short)
    assert build_pairs(*resumed, PairsConfig())[0] == build_pairs(*runs, PairsConfig())[0]
