"""Reflection keywords, thinking split, per-dataset/per-level aggregates, run comparison."""

import pytest

from l2s.eval.measures import (
    REFLECTION_KEYWORDS,
    first_keyword,
    interim_answer,
    is_reflective,
    keyword_hits,
    measure,
    split_thinking,
)
from l2s.eval.metrics import CORRECTION_KEYS, METRIC_KEYS, aggregate, compare, compute_metrics, correction
from l2s.eval.sampling import SamplingConfig


def test_keywords_of_wu_et_al():
    assert REFLECTION_KEYWORDS == ("wait", "re-examine", "recap", "double-check", "let me check",
                                   "let me just check", "let me just verify")
    for k in REFLECTION_KEYWORDS:
        assert keyword_hits(f"So x = 2. {k.upper()}, hmm.") == 1, k
    text = ("Wait, WAIT. Let me re-examine. To recap: Let me just check, let me  check and let me just verify. "
            "Double-Check.")
    assert keyword_hits(text) == 8
    assert not is_reflective("We await the waiter; recapture the check; let me verify it.")
    assert keyword_hits("") == 0 and is_reflective("wait")


def test_split_thinking():
    assert split_thinking("<think>a</think>b") == ("a", "b")
    assert split_thinking("plan</think>\n\\boxed{1}") == ("plan", "\n\\boxed{1}")
    assert split_thinking("no end tag") == (None, "no end tag")
    m = measure("Wait. ok</think>done")
    assert m == {"reflective": True, "keyword_hits": 1, "has_think_end": True, "thinking_chars": 8,
                 "answer_chars": 4}


def _row(ds, level, correct, n, reflective, hits, truncated=False):
    return {"dataset": ds, "level": level, "correct": correct, "n_tokens": n, "reflective": reflective,
            "keyword_hits": hits, "truncated": truncated}


def test_per_level_aggregates_by_hand():
    rows = [_row("m", 1, True, 10, False, 0), _row("m", 1, False, 30, True, 2),
            _row("m", 2, True, 100, True, 3), _row("m", 2, True, 50, False, 0), _row("m", 2, False, 200, True, 1, True),
            _row("g", None, True, 7, False, 0)]
    m = compute_metrics(rows)
    mm = m["datasets"]["m"]
    assert mm["n"] == 5 and mm["accuracy"] == pytest.approx(3 / 5)
    assert mm["mean_tokens"] == pytest.approx(390 / 5) and mm["median_tokens"] == 50
    assert mm["reflective_ratio"] == pytest.approx(3 / 5) and mm["keyword_hits"] == pytest.approx(6 / 5)
    assert mm["truncated"] == 1
    assert mm["by_level"]["1"] == {"n": 2, "accuracy": 0.5, "mean_tokens": 20.0, "median_tokens": 20.0,
                                   "reflective_ratio": 0.5, "keyword_hits": 1.0, "truncated": 0,
                                   # rows without interim answers (an older l2s's): nothing checked
                                   "checked": 0, "correction_rate": None, "harmful_check_rate": None,
                                   "unchanged_check_rate": None}
    l2 = mm["by_level"]["2"]
    assert l2["accuracy"] == pytest.approx(2 / 3) and l2["mean_tokens"] == pytest.approx(350 / 3)
    assert l2["median_tokens"] == 100 and l2["keyword_hits"] == pytest.approx(4 / 3) and l2["truncated"] == 1
    assert m["datasets"]["g"]["by_level"] == {}
    assert m["overall"]["n"] == 6 and m["overall"]["accuracy"] == pytest.approx(4 / 6)
    assert aggregate([])["n"] == 0


def test_interim_answer_is_the_last_box_before_the_first_keyword():
    assert interim_answer(r"So the ball is under \boxed{C}. Wait , let me double-check . \boxed{D}") == "C"
    assert interim_answer(r"\boxed{1}, then \boxed{2}. Recap: \boxed{3}. Wait: \boxed{4}") == "2"  # first keyword
    assert interim_answer(r"x = \boxed{\frac{1}{2}}; let me just verify: \boxed{0.5}") == r"\frac{1}{2}"
    assert interim_answer(r"Wait, first things first: \boxed{4}") is None  # keyword before any box
    assert interim_answer("It is 3. Wait, it is 4.") is None  # no box before the keyword
    assert interim_answer(r"Just \boxed{3}.") is None  # no keyword: no reflection to judge
    # "await" and "waiting" are no keywords (the matcher of keyword_hits), "wait:" is
    assert interim_answer(r"We await \boxed{2} while waiting") is None
    assert interim_answer(r"We await \boxed{2} while waiting; wait: \boxed{3}") == "2"
    assert first_keyword("We await; WAIT") == 10 and first_keyword("awaiting") is None
    # </think> plays no part: the keyword inside the thinking, or only after it
    think = r"<think>hasty: \boxed{C}. Wait , let me double-check . careful: \boxed{D}</think> The answer is \boxed{D}"
    assert interim_answer(think) == "C"
    assert interim_answer(r"<think>plan</think> It is \boxed{5}. Let me check: \boxed{5}") == "5"
    assert interim_answer(r"<think>hmm, wait, redo</think> \boxed{5}") is None  # the only box is after it


def _checked(ds, level, interim, interim_ok, pred, ok):
    return {**_row(ds, level, ok, 10, True, 1), "pred": pred, "interim_pred": interim, "interim_correct": interim_ok}


def test_correction_rates_by_hand():
    """Level 1: 3 checked (1 corrected, 2 unchanged; one of them 4 -> 4.0, both right), 1 without an interim
    answer, 1 older row without the fields; level 2: 4 checked, one each of corrected, broken, unchanged
    (up to whitespace) and wrong -> another wrong; level 3: nothing checked."""
    rows = [_checked("m", 1, "3", False, "4", True), _checked("m", 1, "4", True, "4", True),
            _checked("m", 1, "4", True, "4.0", True), _checked("m", 1, None, None, "4", True),
            _row("m", 1, False, 10, True, 1),
            _checked("m", 2, "7", True, "8", False), _checked("m", 2, "5", False, " 5 ", False),
            _checked("m", 2, "5", False, "6", False), _checked("m", 2, "2", False, "7", True),
            _checked("m", 3, None, None, "1", True), _row("m", 3, True, 10, False, 0)]
    m = compute_metrics(rows)["datasets"]["m"]
    l1, l2, l3 = (m["by_level"][k] for k in "123")
    assert l1["checked"] == 3 and l1["n"] == 5
    assert l1["correction_rate"] == pytest.approx(1 / 3) and l1["harmful_check_rate"] == 0
    assert l1["unchanged_check_rate"] == pytest.approx(2 / 3)
    assert l2["checked"] == 4 and (l2["correction_rate"], l2["harmful_check_rate"], l2["unchanged_check_rate"]) == (
        0.25, 0.25, 0.25)  # and 1/4 wrong -> another wrong answer
    assert l3 == {**l3, "checked": 0, "correction_rate": None, "harmful_check_rate": None,
                  "unchanged_check_rate": None}
    assert m["checked"] == 7 and m["correction_rate"] == pytest.approx(2 / 7)
    assert m["harmful_check_rate"] == pytest.approx(1 / 7) and m["unchanged_check_rate"] == pytest.approx(3 / 7)
    # a right interim answer whose final answer is gone (cut off: pred None, wrong) was broken by the check
    assert correction([_checked("m", 1, "4", True, None, False)])["harmful_check_rate"] == 1.0
    assert correction([_checked("m", 1, "4", False, None, False)])["unchanged_check_rate"] == 0.0
    assert correction([_checked("m", 1, "4", False, "4", False)])["unchanged_check_rate"] == 1.0


def test_metric_keys_are_the_aggregate():
    rows = [_checked("m", 1, "3", False, "4", True)]
    assert list(aggregate(rows)) == [*METRIC_KEYS, *CORRECTION_KEYS] == list(aggregate([]))
    assert not set(METRIC_KEYS) & set(CORRECTION_KEYS)


def test_length_reduction_vs_reference():
    run = {"datasets": {"a": {"accuracy": 0.8, "mean_tokens": 50.0}, "b": {"accuracy": 0.5, "mean_tokens": 300.0},
                        "only_run": {"accuracy": 1.0, "mean_tokens": 1.0}}}
    ref = {"datasets": {"a": {"accuracy": 0.7, "mean_tokens": 100.0}, "b": {"accuracy": 0.6, "mean_tokens": 400.0}}}
    c = compare(run, ref)
    assert set(c["datasets"]) == {"a", "b"}
    assert c["datasets"]["a"]["length_change"] == pytest.approx(-0.5)
    assert c["datasets"]["b"]["length_change"] == pytest.approx(-0.25)
    assert c["avg"]["length_change"] == pytest.approx(-0.375)
    assert c["avg"]["accuracy_delta"] == pytest.approx((0.1 - 0.1) / 2)
    with pytest.raises(ValueError, match="share no dataset"):
        compare(run, {"datasets": {"z": {}}})


def test_sampling_config_validation():
    s = SamplingConfig(n=4, temperature=0.6, top_p=0.95, stop=["x"])
    assert s.stop == ("x",) and not s.greedy and SamplingConfig.from_dict(s.to_dict()) == s
    for bad, msg in [(dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_k=0), "top_k"),
                     (dict(max_new_tokens=0), "max_new_tokens"), (dict(n=0), "n must"),
                     (dict(n=2), "identical"), (dict(stop=[""]), "stop")]:
        with pytest.raises(ValueError, match=msg):
            SamplingConfig(**bad)
    with pytest.raises(ValueError, match=r"sampling: unknown key\(s\) \[.temp.\]"):
        SamplingConfig.from_dict({"temp": 1})
