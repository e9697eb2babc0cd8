"""The toy task: determinism, disjoint splits, correct answers, fixed offsets, tokenizer round trip."""

import json
import random

import pytest

from l2s.toy import task
from l2s.toy.tokenizer import build_tokenizer


def _brute_force(start, moves, hasty=False):
    cups = {c: c == start for c in task.CUPS}  # True where the ball is
    for a, b in moves:
        if hasty and abs(ord(a) - ord(b)) == 1 and (cups[a] or cups[b]):
            continue  # the hasty first pass overlooks a neighbour swap that moves the ball
        cups[a], cups[b] = cups[b], cups[a]
    return next(c for c, has in cups.items() if has)


def test_answers_match_brute_force_simulation_and_levels_have_their_rounds():
    rng = random.Random(1)
    for level in task.LEVELS:
        for _ in range(200):
            p = task.sample_problem(rng, level)
            assert p.answer == _brute_force(p.start, p.moves)
            assert p.states(hasty=True)[-1] == _brute_force(p.start, p.moves, hasty=True)
            assert p.slips == (p.states(hasty=True)[-1] != p.answer)
            assert len(p.moves) == task.ROUNDS[level] == len(set(p.moves))  # no pair twice
            assert all(m in task.MOVES for m in p.moves)


def test_slips_are_rarer_on_easy_levels():
    """The hasty first pass errs on 6% of level-1 problems and more on every harder level (more swaps)."""
    rng = random.Random(0)
    rate = {lv: sum(task.sample_problem(rng, lv).slips for _ in range(3000)) / 3000 for lv in task.LEVELS}
    assert abs(rate[1] - task.P_BALL * task.P_NEIGHBOUR) < 0.015
    assert all(rate[a] < rate[b] for a, b in zip(task.LEVELS, task.LEVELS[1:]))
    assert 0.3 < rate[5] < 0.5


def test_splits_deterministic_disjoint_and_schema():
    a = task.make_splits({"train": 300, "dev": 30, "test": 30}, seed=3)
    b = task.make_splits({"train": 300, "dev": 30, "test": 30}, seed=3)
    assert json.dumps(a) == json.dumps(b)
    keys = {s: {(r["start"], tuple(r["moves"])) for r in rows} for s, rows in a.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["dev"] and not keys["dev"] & keys["test"]
    for rows in a.values():
        ids = [r["id"] for r in rows]
        assert len(ids) == len(set(ids))
        for r in rows:
            assert {"id", "problem", "answer", "level"} <= set(r)
            assert r["answer"] == str(task.problem_from_row(r).answer)
    for level in (2, 5):
        assert sum(r["level"] == level for r in a["test"]) == 30
    assert task.make_splits({"test": 30}, seed=4) != task.make_splits({"test": 30}, seed=3)


def test_level_one_is_exhausted_not_duplicated():
    rows = task.make_splits({"train": 10_000}, seed=0)["train"]
    l1 = [(r["start"], tuple(r["moves"])) for r in rows if r["level"] == 1]
    assert len(l1) == len(set(l1)) <= task.N_CUPS * len(task.MOVES)


def test_every_cup_move_and_position_is_one_token_and_lengths_follow_the_rounds():
    tok = build_tokenizer()
    rng = random.Random(0)
    for level in task.LEVELS:
        p = task.sample_problem(rng, level)
        words = tok.convert_ids_to_tokens(tok(p.text() + " " + task.solution(p, "long", check=True),
                                              add_special_tokens=False).input_ids)
        moves = [w for w in words if w.lstrip("Ġ") in task.MOVES]
        first, _, _ = p.check()  # level 5: the check restates the first pass's 1st line, re-derives 7 swaps
        assert moves == [f"Ġ{m}" for m in p.moves] * 2 + [f"Ġ{m}" for m in p.moves[max(0, first - 1):]]
        assert first == (1 if level == 5 else 0)
        n_check = task.ROUNDS[level] + 1 if first == 0 else task.CHECK_ROUNDS + 1
        assert sum(w.startswith("âĨĴ") for w in words) == task.ROUNDS[level] + 1 + n_check  # "→C": one token
        terse = len(tok(task.solution(p, "terse"), add_special_tokens=False).input_ids)
        assert terse == 15 + 2 * task.ROUNDS[level]


def test_the_check_covers_seven_swaps_so_the_teacher_errs_on_level_five_only():
    rng = random.Random(11)
    for level in task.LEVELS:
        ps = [task.sample_problem(rng, level) for _ in range(2000)]
        wrong = sum(p.checked_answer != p.answer for p in ps) / len(ps)
        assert (0.03 < wrong < 0.09) if level == 5 else (wrong == 0)
        early = [p for p in ps if p.states(hasty=True)[0] != p.states()[0]]  # slipped on the 1st swap
        if level == 5:
            assert all(p.checked_answer != p.answer for p in early)


def test_long_solutions_check_a_hasty_first_pass():
    rng = random.Random(7)
    slipped = next(p for p in (task.sample_problem(rng, 4) for _ in range(100)) if p.slips)
    text = task.solution(slipped, "long", check=True)
    first, check = text.split(task.check_phrase(slipped))
    assert first.strip().endswith(f"\\boxed{{{slipped.states(hasty=True)[-1]}}}")
    assert check.strip().endswith(f"\\boxed{{{slipped.answer}}}") and slipped.answer not in first[-3:]
    assert task.solution(slipped, "long", check=False) == first.strip()
    assert task.solution(slipped, "terse").split(". ", 1)[1] in check  # the check is the careful chain
    share = sum(task.checks(task.sample_problem(rng, 3)) for _ in range(2000)) / 2000
    assert abs(share - task.P_CHECK) < 0.03
    p = task.sample_problem(rng, 2)
    assert task.solution(p, "long") == task.solution(p, "long", check=task.checks(p))
    phrases = {task.check_phrase(task.sample_problem(rng, 3)) for _ in range(200)}
    assert phrases == set(task.DOUBLE_CHECKS)  # several lengths: no fixed distance to copy from


def test_styles_and_tokenizer_round_trip():
    tok = build_tokenizer()
    p = task.sample_problem(random.Random(5), 5)
    lengths = {}
    for style in task.STYLES:
        text = task.solution(p, style, check=True)
        assert text.endswith(f"\\boxed{{{p.answer}}}")
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.decode(ids) == text
        lengths[style] = len(ids)
    assert lengths["direct"] < lengths["short"] < lengths["terse"] < lengths["long"]
    assert "Wait" in task.solution(p, "long", check=True) and "Wait" not in task.solution(p, "terse")
    with pytest.raises(ValueError, match="unknown style"):
        task.solution(p, "verbose")
    with pytest.raises(ValueError, match="level"):
        task.sample_problem(random.Random(0), 6)


def test_cli_toy_data_writes_splits(tmp_path):
    from l2s.cli import main

    out = tmp_path / "toy"
    assert main(["toy", "data", "--out", str(out), "--n-train", "20", "--n-dev", "5", "--n-test", "5"]) == 0
    rows = [json.loads(line) for line in (out / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 25
    assert main(["toy", "data", "--out", str(out)]) == 2  # exists: refused, not overwritten
    assert main(["toy", "data", "--out", str(tmp_path / "x"), "--n-test", "-1"]) == 2
    assert not (tmp_path / "x").exists()


def test_short_solutions_track_only_the_first_rounds():
    p = task.sample_problem(random.Random(2), 5)
    short = task.solution(p, "short").split()
    assert [w.split("→")[0] for w in short if "→" in w][1:] == list(p.moves[:task.SHORT_ROUNDS])
    assert short[-1] == f"\\boxed{{{p.answer}}}"


def test_auto_tokenizer_loads_the_toy_tokenizer_faithfully(tmp_path):
    """A saved toy tokenizer is what AutoTokenizer (hence vLLM, TRL, lm-eval) loads: same ids, exact text."""
    from transformers import AutoTokenizer, Qwen2Config

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    Qwen2Config(vocab_size=len(tok)).save_pretrained(tmp_path)
    auto = AutoTokenizer.from_pretrained(tmp_path)
    assert type(auto).__name__ == "Qwen2Tokenizer"
    rng = random.Random(3)
    texts = ["Ünïcode, digits 1234 and\ttabs\n survive too."]
    for level in task.LEVELS:
        p = task.sample_problem(rng, level)
        texts += [auto.apply_chat_template([{"role": "user", "content": p.text()}], add_generation_prompt=True,
                                           tokenize=False)]
        texts += [task.solution(p, s, check=True) for s in task.STYLES]
    for text in texts:
        ids = tok(text, add_special_tokens=False).input_ids
        assert auto(text, add_special_tokens=False).input_ids == ids
        assert auto.decode(ids) == text
    assert (auto.eos_token, auto.pad_token) == (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert auto.chat_template == tok.chat_template
