"""The toy task: determinism, disjoint splits, correct answers, fixed offsets, tokenizer round trip."""

import json
import random

import pytest

from l2s.toy import task
from l2s.toy.tokenizer import build_tokenizer


def _brute_force(start, moves):
    cups = {c: c == start for c in range(1, task.N_CUPS + 1)}  # True where the ball is
    for m in moves:
        if m == task.PASS:
            continue
        a, b = (int(x) for x in m.split("<>"))
        cups[a], cups[b] = cups[b], cups[a]
    return next(c for c, has in cups.items() if has)


def test_answers_match_brute_force_simulation():
    rng = random.Random(1)
    for level in task.LEVELS:
        for _ in range(200):
            p = task.sample_problem(rng, level)
            assert p.answer == _brute_force(p.start, p.moves)
            assert sum(m != task.PASS for m in p.moves) == task.SWAPS_PER_LEVEL[level]
            assert len(p.moves) == task.N_SLOTS


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


def test_cot_lines_sit_at_a_fixed_offset_from_their_move():
    """Each CoT move token is the problem's move exactly D tokens back, the same D for every step."""
    tok = build_tokenizer()
    rng = random.Random(0)
    offsets = set()
    for level in task.LEVELS:
        p = task.sample_problem(rng, level)
        prompt = tok.apply_chat_template([{"role": "user", "content": p.text()}], add_generation_prompt=True,
                                         tokenize=False)
        ids = tok(prompt + " " + task.solution(p, "long"), add_special_tokens=False).input_ids
        words = tok.convert_ids_to_tokens(ids)
        move_pos = [i for i, w in enumerate(words) if w in task.MOVES or w == task.PASS]
        problem_moves, first_chain = move_pos[:task.N_SLOTS], move_pos[task.N_SLOTS:2 * task.N_SLOTS]
        offsets |= {c - q for c, q in zip(first_chain, problem_moves)}
    assert len(offsets) == 1


def test_styles_and_tokenizer_round_trip():
    tok = build_tokenizer()
    p = task.sample_problem(random.Random(5), 5)
    lengths = {}
    for style in task.STYLES:
        text = task.solution(p, style)
        assert text.endswith(f"\\boxed{{{p.answer}}}")
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == text
        lengths[style] = len(ids)
    assert lengths["direct"] < lengths["short"] < lengths["terse"] < lengths["long"]
    assert "Wait" in task.solution(p, "long") and "Wait" not in task.solution(p, "terse")
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
    moves = [w for w in short if w in task.MOVES or w == task.PASS]
    assert moves == list(p.moves[:task.SHORT_ROUNDS])
    assert short[-1] == f"\\boxed{{{p.answer}}}"
