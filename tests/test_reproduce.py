"""l2s.reproduce: new runs against the committed record, metric by metric and response by response."""

import json

from l2s.reproduce import compare_runs, render, write_report


def run(root, name, metrics, rows=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(metrics))
    if rows is not None:
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_metrics_and_responses_are_compared_and_added_fields_are_not_differences(tmp_path):
    new, ref = tmp_path / "new", tmp_path / "ref"
    rows = [{"id": "1", "response": "a"}, {"id": "2", "response": "b"}]
    run(ref, "same", {"overall": {"accuracy": 0.5, "n": 2}}, rows)
    run(new, "same", {"overall": {"accuracy": 0.5, "n": 2}}, rows)
    run(ref, "more-fields", {"overall": {"accuracy": 0.25, "n": 4}}, rows)
    run(new, "more-fields", {"overall": {"accuracy": 0.25, "n": 4}, "token_limit": {"hit_limit": 1}},
        [{**r, "messages": []} for r in rows])
    run(ref, "off", {"overall": {"accuracy": 0.5, "n": 2}, "by_level": {"1": {"mean_tokens": 10.0}}}, rows)
    run(new, "off", {"overall": {"accuracy": 0.75, "n": 2}, "by_level": {"1": {"mean_tokens": 12.5}}},
        [rows[0], {"id": "2", "response": "c"}])
    run(new, "ada/eval-x", {"overall": {"accuracy": 1.0}})
    run(ref, "gone", {"overall": {"accuracy": 1.0}})

    report = compare_runs(new, ref)
    by = {r.run: r for r in report.runs}
    assert by["same"].status == "equal" and by["same"].generations == "identical"
    assert by["more-fields"].status == "equal" and by["more-fields"].added == ["token_limit.hit_limit"]
    assert by["more-fields"].generations == "same responses"
    assert by["off"].status == "differs" and by["off"].n_equal == 1 and by["off"].n_metrics == 3
    assert by["off"].max_abs_diff == 2.5 and by["off"].generations == "1 of 2 rows differ"
    assert by["ada/eval-x"].status == "new" and by["gone"].status == "not rerun"
    assert report.totals == {"runs_compared": 3, "runs_equal": 2, "metrics": 7, "metrics_equal": 5,
                             "generations_identical": 1, "generations_same_responses": 2, "new": 1, "not_rerun": 1}
    text = render(report)
    assert "2 of 3 runs reproduce every metric exactly; 5 of 7 metrics equal" in text
    assert "off: by_level.1.mean_tokens 12.5 vs 10; overall.accuracy 0.75 vs 0.5" in text
    assert "one side only" in text and "token_limit.hit_limit" in text
    write_report(report, tmp_path / "reproduction")
    saved = json.loads((tmp_path / "reproduction.json").read_text())
    assert saved["totals"] == report.totals and (tmp_path / "reproduction.md").read_text() == text
