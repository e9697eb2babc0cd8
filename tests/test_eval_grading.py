"""l2s.eval.grading: math-verify with the fixes the benchmarks need, in a process pool with timeouts."""

import collections
import time

import pytest

from l2s.data import load_benchmark
from l2s.eval import grading
from l2s.eval.grading import Grade, GradeConfig, Grader, equivalent, grade, grade_many

BENCHMARKS = ("gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24", "math")


def _as_model_writes(gold: str) -> str:
    # A reasoning model's response: thinking with a decoy box, then the final boxed answer.
    return f"Let me see, maybe \\boxed{{0}}? Wait, no.\n</think>\n\nSo the answer is $\\boxed{{{gold}}}$."


def test_every_gold_answer_graded_correct_against_itself(shared_data):
    items, names = [], []
    for name in BENCHMARKS:
        for r in load_benchmark(name, shared_data / "benchmarks"):
            items.append((_as_model_writes(r["answer"]), r["answer"], False))
            names.append((name, r["id"], r["answer"]))
    assert len(items) > 10_000
    t = time.time()
    grades = grade_many(items, GradeConfig(workers=2, min_pool_items=1), progress=False)
    assert time.time() - t < 90
    wrong = [(n, g) for n, g in zip(names, grades) if not g.correct]
    assert not wrong, f"{len(wrong)} golds not graded correct, e.g. {wrong[:5]}"
    assert all(g.pred == n[2] for n, g in zip(names, grades))


def test_gold_answers_parse_and_verify_with_sympy(shared_data):
    """Without the identical-text shortcut, math-verify itself accepts a sample of every benchmark's golds."""
    items, names = [], []
    for name in BENCHMARKS:
        rows = load_benchmark(name, shared_data / "benchmarks")
        for r in rows[::max(1, len(rows) // 15)]:
            items.append((f"\\boxed{{{r['answer']}}}", r["answer"], False))
            names.append(name)
    grades = grade_many(items, GradeConfig(string_fast_path=False, workers=2, min_pool_items=1), progress=False)
    statuses = collections.Counter(g.status for g in grades)
    assert all(g.correct for g in grades)
    assert statuses["verify"] >= 0.97 * len(items), statuses


EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"), ("0.5", "\\frac12"), ("\\dfrac{3}{4}", "0.75"), ("1/3", "\\frac{1}{3}"),
    ("[1,2]", "[1, 2]"), ("(1,2]", "(1, 2]"), ("(-\\infty, 3)", "(-\\infty,3)"),
    ("\\{1,2,3\\}", "\\{3,1,2\\}"), ("1,2", "2,1"), ("(45,2),(-10,-9)", "(-10,-9),(45,2)"),
    ("30^\\circ", "30"), ("30", "30^{\\circ}"), ("90^\\circ", "90 degrees"),
    ("50\\%", "50"), ("50", "50\\%"),
    ("4.5e33", "4.5\\times10^{33}"), ("4.5 \\times 10^{33}", "4.5e33"), ("1.2e-3", "0.0012"), ("5e5", "500000"),
    ("A", "A"), ("\\text{(C)}", "C"), ("(B)", "\\text{B}"), ("D", "(D) 12"),
    ("1.6", "1.6 \\mathrm{~cm}"), ("1.6", "1.6 \\text{ cm}"), ("5", "5 meters"), ("18", "18 dollars"),
    ("18", "\\$18"), ("70000", "70,000"), ("x^2-4x-2=0", "x^{2}-4 x-2=0"), ("10-4 n", "10-4n"),
    ("a+b", "b+a"), ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}"),
    ("1190", "1,\\!190"), ("1740", "\\$1,\\!740"), ("135", "135\\, \\text{kWh}"), ("39", "\\$39.00"),
    ("5.4 \\text{ cents}", "5.4"), ("3 \\pm 2 \\sqrt{2}", "3 + 2\\sqrt{2}, 3 - 2\\sqrt{2}"),
]
NOT_EQUIVALENT = [
    ("(1,2]", "(1,2)"), ("[1,2]", "(1,2)"), ("\\{1,2\\}", "\\{1,3\\}"), ("0.5", "0.55"), ("\\frac{1}{3}", "0.3"),
    ("A", "B"), ("\\text{(C)}", "(D)"), ("4.5e33", "4.5\\times10^{32}"), ("4.5e33", "4.533"),
    ("a+b", "+b"), ("a+b", "b"), ("18", "1800"), ("1800", "18"), ("18", "0.18"), ("30", "3"),
    ("5", "5 m + 1"),
]


@pytest.mark.parametrize("gold,pred", EQUIVALENT)
def test_equivalent(gold, pred):
    assert equivalent(gold, pred, string_fast_path=False)[0], (gold, pred)
    assert grade(f"... \\boxed{{{pred}}}", gold).correct


@pytest.mark.parametrize("gold,pred", NOT_EQUIVALENT)
def test_not_equivalent(gold, pred):
    assert not equivalent(gold, pred)[0], (gold, pred)


def test_normalizers():
    assert grading.e_notation_to_latex("4.5e33") == "4.5\\times10^{33}"
    assert grading.e_notation_to_latex("x3e5 + 2e") == "x3e5 + 2e"
    assert grading.strip_units("5 meters") == "5"
    assert grading.strip_units("1.6 \\mathrm{~cm}") == "1.6"
    assert grading.strip_units("a+b") == "a+b"
    assert grading.strip_units("2 x") == "2 x"  # one letter is a variable, not a unit
    assert grading.strip_units("10 \\text{m}") == "10"
    assert grading.mc_letter("\\text{(E)}") == "E" and grading.mc_letter("Ex") is None


def test_truncation_policy_and_statuses():
    cut = "Let me compute 12 * 3 = 36 and then"  # hit max_new_tokens, no final answer
    assert grade(cut, "36", truncated=True) == Grade(None, False, "truncated")
    g = grade(cut, "36", truncated=True, truncation_policy="grade")
    assert g.status == "fallback"
    assert grade("So the final answer is 36.", "36") == Grade("36", True, "fallback")
    assert grade("I give up.", "36").status == "no_answer"
    assert grade("\\boxed{36}", "36", truncated=True).correct  # a boxed answer is a final answer
    with pytest.raises(ValueError, match="truncation_policy"):
        GradeConfig(truncation_policy="maybe")
    with pytest.raises(ValueError, match="timeout_s"):
        GradeConfig(timeout_s=0)


def test_timeout_counts_as_wrong(monkeypatch):
    def slow(*a, **k):
        time.sleep(5)

    monkeypatch.setattr(grading, "_verify", slow)
    t = time.time()
    g = grading.grade_with_timeout("\\boxed{1+1}", "2", timeout_s=0.2)
    assert g == Grade("1+1", False, "timeout") and time.time() - t < 2


def test_timeouts_in_the_pool_are_wrong_and_counted(monkeypatch):
    def slow(*a, **k):
        time.sleep(5)

    monkeypatch.setattr(grading, "_verify", slow)  # the forked workers inherit the slow grader
    items = [("\\boxed{1+1}", "2", False), ("\\boxed{2}", "2", False), ("\\boxed{x}", "3", False)]
    t = time.time()
    with Grader(GradeConfig(workers=2, min_pool_items=1, chunk_size=1, timeout_s=0.3)) as g:
        grades = g.grade(items)
    assert [x.status for x in grades] == ["timeout", "exact", "timeout"]
    assert [x.correct for x in grades] == [False, True, False] and time.time() - t < 4


def test_pool_keeps_order_and_matches_in_process():
    items = [(f"\\boxed{{{i}}}", str(i if i % 3 else i + 1), i % 5 == 0) for i in range(80)]
    with Grader(GradeConfig(workers=2, min_pool_items=1, chunk_size=7)) as g:
        pooled = g.grade(items)
    local = Grader(GradeConfig(workers=0)).grade(items)
    assert pooled == local
    assert [x.correct for x in pooled] == [bool(i % 3) for i in range(80)]
