"""Reflection keywords, thinking split, per-dataset/per-level aggregates, run comparison."""

import pytest

from l2s.eval.measures import REFLECTION_KEYWORDS, is_reflective, keyword_hits, measure, split_thinking
from l2s.eval.metrics import aggregate, compare, compute_metrics
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
                                   "reflective_ratio": 0.5, "keyword_hits": 1.0, "truncated": 0}
    l2 = mm["by_level"]["2"]
    assert l2["accuracy"] == pytest.approx(2 / 3) and l2["mean_tokens"] == pytest.approx(350 / 3)
    assert l2["median_tokens"] == 100 and l2["keyword_hits"] == pytest.approx(4 / 3) and l2["truncated"] == 1
    assert m["datasets"]["g"]["by_level"] == {}
    assert m["overall"]["n"] == 6 and m["overall"]["accuracy"] == pytest.approx(4 / 6)
    assert aggregate([])["n"] == 0


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
