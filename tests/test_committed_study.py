"""The committed toy study: its figures come back byte for byte from runs/ alone, and runs/ holds no weights."""

import json

import pytest
from conftest import REPO

RUNS, FIGURES = REPO / "runs", REPO / "figures"


def _committed():
    if not (RUNS / "toy-s-slow" / "metrics.json").is_file():
        pytest.skip("no committed toy study in runs/")


def test_figures_regenerate_from_runs_alone(tmp_path):
    _committed()
    from l2s.figures import make_figures

    make_figures(RUNS, tmp_path)
    committed = sorted(p.name for p in FIGURES.glob("*.csv"))
    assert committed and committed == sorted(p.name for p in tmp_path.glob("*.csv"))
    for name in committed:
        assert (tmp_path / name).read_bytes() == (FIGURES / name).read_bytes(), f"figures/{name} is out of date"


def test_runs_hold_no_model_weights_and_every_eval_run_is_complete():
    _committed()
    assert not [p for ext in ("*.safetensors", "*.bin", "*.pt") for p in RUNS.rglob(ext)]
    evals = [p.parent for p in RUNS.rglob("metrics.json")]
    assert len(evals) >= 30
    for run in evals:
        for name in ("config.json", "generations.jsonl", "provenance.json"):
            assert (run / name).is_file(), f"{run} lacks {name}"
        n = json.loads((run / "metrics.json").read_text())["overall"]["n"]
        assert sum(1 for _ in open(run / "generations.jsonl")) == n


def test_toy_contrast_of_the_default_size():
    """The toy world's acceptance on the committed runs (issue 'Toy world'): quick vs slow, by level."""
    _committed()
    level = {role: json.loads((RUNS / f"toy-s-{role}" / "metrics.json").read_text())["datasets"]["toy"]
             for role in ("quick", "slow")}
    q, s = level["quick"]["by_level"], level["slow"]["by_level"]
    assert q["1"]["accuracy"] >= 0.9 and q["5"]["accuracy"] <= 0.5
    assert s["5"]["accuracy"] - q["5"]["accuracy"] >= 0.3 and min(s[k]["accuracy"] for k in s) >= 0.85
    assert level["slow"]["mean_tokens"] >= 3 * level["quick"]["mean_tokens"]
    assert [s[k]["mean_tokens"] for k in sorted(s)] == sorted(s[k]["mean_tokens"] for k in s)
    assert level["slow"]["reflective_ratio"] >= 0.95 and level["quick"]["reflective_ratio"] <= 0.05
