"""Does reflection correct answers (issue "toy world v2", item 1): the interim answer before the first
reflection keyword, graded with the final one, written by ``l2s eval`` and ``l2s score``, aggregated per
level, read by the reproduction report as added metrics."""

import json
from types import SimpleNamespace

import pytest

from l2s import io
from l2s.eval import EvalConfig, SamplingConfig, evaluate
from l2s.eval.backends.base import Backend, Generation
from l2s.eval.grading import GradeConfig, Grader
from l2s.eval.run import grade_responses

# id -> (level, gold, response): level 1 has 2 checked (1 corrected, 1 unchanged), level 2 has 4 checked
# (1 broken, 1 unchanged in another form of the right answer, 1 wrong -> other wrong, 1 corrected).
SCRIPT = {
    "p0": (1, "10", r"A hasty \boxed{9}. Wait, let me double-check. \boxed{10}"),
    "p1": (1, "11", r"\boxed{11}. Wait, again: \boxed{11}"),
    "p2": (1, "12", r"Just \boxed{12}"),  # no keyword: not checked
    "p3": (1, "13", r"Wait. \boxed{13}"),  # no box before the keyword: not checked
    "p4": (2, "14", r"\boxed{14}. Wait: no, \boxed{15}"),
    "p5": (2, "15", r"\boxed{\frac{30}{2}}. Let me check: \boxed{15}"),
    "p6": (2, "16", r"\boxed{1}. Wait: \boxed{2}"),
    "p7": (2, "17", r"\boxed{1}. Recap: \boxed{17}"),
}
WANT_ROWS = {"p0": ("9", False), "p1": ("11", True), "p2": (None, None), "p3": (None, None),
             "p4": ("14", True), "p5": (r"\frac{30}{2}", True), "p6": ("1", False), "p7": ("1", False)}


class ScriptedBackend(Backend):
    """Answers each problem with its scripted response (the problem text is its id), three per batch."""

    tokenizer = staticmethod(lambda text, add_special_tokens=False: SimpleNamespace(input_ids=text.split()))

    def generate(self, requests, sampling, progress=True):
        for start in range(0, len(requests), 3):
            yield [(r, Generation(token_ids=r.prompt.split() + SCRIPT[r.prompt][2].split(), text=SCRIPT[r.prompt][2],
                                  finished=True, truncated=False)) for r in requests[start:start + 3]]


@pytest.fixture
def data_dir(tmp_path):
    rows = [{"unique_id": pid, "problem": pid, "answer": gold, "level": level}
            for pid, (level, gold, _) in SCRIPT.items()]
    io.write_jsonl(tmp_path / "data" / "math500" / "test.jsonl", rows)
    return tmp_path / "data"


def _check_metrics(m):
    d = m["datasets"]["math500"]
    l1, l2 = d["by_level"]["1"], d["by_level"]["2"]
    assert (l1["checked"], l1["correction_rate"], l1["harmful_check_rate"], l1["unchanged_check_rate"]) == (
        2, 0.5, 0.0, 0.5)
    assert (l2["checked"], l2["correction_rate"], l2["harmful_check_rate"], l2["unchanged_check_rate"]) == (
        4, 0.25, 0.25, 0.25)
    assert d["checked"] == 6 and d["correction_rate"] == pytest.approx(2 / 6)
    assert d["harmful_check_rate"] == pytest.approx(1 / 6) and d["unchanged_check_rate"] == pytest.approx(2 / 6)
    assert m["overall"]["checked"] == 6


def test_grade_responses_grades_interim_and_final_in_one_batch():
    calls = []
    with Grader(GradeConfig(workers=0)) as grader:
        real = grader.grade
        grader.grade = lambda items, **k: (calls.append(len(items)), real(items, **k))[1]
        out = grade_responses(grader, [(SCRIPT[p][2], SCRIPT[p][1], False) for p in ("p0", "p2", "p5")])
    assert calls == [5]  # 3 final answers + 2 interim answers, one call
    (f0, i0), (f2, i2), (f5, i5) = out
    assert (f0.pred, f0.correct, i0.pred, i0.correct) == ("10", True, "9", False)
    assert (f2.pred, f2.correct, i2) == ("12", True, None)
    assert (i5.pred, i5.correct, i5.status) == (r"\frac{30}{2}", True, "verify")  # math-verify, as a final answer


def _eval_run(data_dir, out):
    return evaluate(EvalConfig(model="scripted", datasets=("math500",), out=str(out), prompt="raw",
                               data_dir=str(data_dir), sampling=SamplingConfig(max_new_tokens=64),
                               grading=GradeConfig(workers=0)), backend=ScriptedBackend(), progress=False)


def test_eval_run_writes_interim_fields_and_correction_rates(data_dir, tmp_path):
    out = _eval_run(data_dir, tmp_path / "run")
    rows = io.read_jsonl(out / "generations.jsonl")
    assert {r["id"]: (r["interim_pred"], r["interim_correct"]) for r in rows} == WANT_ROWS
    assert all(r["correct"] == (r["id"] != "p4" and r["id"] != "p6") for r in rows)
    _check_metrics(io.read_json(out / "metrics.json"))


def test_score_rescoring_gives_the_same_fields(data_dir, tmp_path):
    """``l2s score`` of a run's responses writes the same rows (interim fields included) and metrics; of an
    older run's generations (without the fields) too, and the reproduction report counts the new metrics
    as added, the responses as the same."""
    from l2s.eval.score import ScoreConfig, score_responses
    from l2s.reproduce import compare_runs
    from l2s.toy.tokenizer import build_tokenizer

    run = _eval_run(data_dir, tmp_path / "run")
    rows = io.read_jsonl(run / "generations.jsonl")
    old = [{k: v for k, v in r.items() if not k.startswith("interim_")} for r in rows]  # an older l2s's rows
    io.write_jsonl(tmp_path / "old.jsonl", old)
    build_tokenizer().save_pretrained(tmp_path / "tok")
    scored = score_responses(ScoreConfig(responses=str(tmp_path / "old.jsonl"), tokenizer=str(tmp_path / "tok"),
                                         out=str(tmp_path / "new" / "r"), grading=GradeConfig(workers=0)),
                             progress=False)
    again = io.read_jsonl(scored / "generations.jsonl")
    keep = ("id", "level", "answer", "response", "pred", "correct", "grade_status", "reflective", "keyword_hits",
            "interim_pred", "interim_correct")
    assert [{k: r[k] for k in keep} for r in again] == [{k: r[k] for k in keep} for r in rows]
    _check_metrics(io.read_json(scored / "metrics.json"))

    # the reference: the same metrics without the correction fields, the same responses without the row fields
    ref = tmp_path / "ref" / "r"
    ref.mkdir(parents=True)
    metrics = io.read_json(scored / "metrics.json")
    strip = ("checked", "correction_rate", "harmful_check_rate", "unchanged_check_rate")

    def drop(block):
        return {k: drop(v) if isinstance(v, dict) else v for k, v in block.items() if k not in strip}

    (ref / "metrics.json").write_text(json.dumps(drop(metrics)))
    io.write_jsonl(ref / "generations.jsonl", [{k: v for k, v in r.items() if not k.startswith("interim_")}
                                               for r in again])
    [cmp] = compare_runs(tmp_path / "new", tmp_path / "ref").runs
    assert cmp.status == "equal" and not cmp.differences and not cmp.dropped
    assert "datasets.math500.by_level.2.correction_rate" in cmp.added and "overall.checked" in cmp.added
    assert cmp.generations == "same responses"


def test_evaluate_reading_gives_the_correction_rate_when_recorded(data_dir, tmp_path):
    """The 02_evaluate reading: the rates of a run that records interim answers, nothing of a run that does
    not (its table has no such columns), a note where a reflective run checked nothing."""
    from l2s import notebook_helpers as nh
    from l2s import report

    run = _eval_run(data_dir, tmp_path / "run")
    io.atomic_write_json(run / "provenance.json", {})
    table = nh.metrics_table(run)
    assert table.loc[("math500", "2"), "correction %"] == 25.0 and table.loc[("math500", "all"), "checked"] == 6
    text = report.levels_reading(table)
    assert ("Of the 6 response(s) that boxed an answer before their first reflection keyword, the check corrected "
            "33.3% (wrong → right), broke 16.7% (right → wrong) and left 33.3% unchanged; its correction rate goes "
            "50.0% → 25.0% from level 1 to level 2.") in text
    old = table.drop(columns=["checked", "correction %", "harmful check %", "unchanged check %"])
    assert "corrected" not in report.levels_reading(old) and "reflection keyword" not in report.levels_reading(old)
    none = table.assign(checked=0)
    assert "No reflective response boxed an answer" in report.levels_reading(none)
    assert "boxed" not in report.levels_reading(none.assign(**{"reflective %": 0.0}))
