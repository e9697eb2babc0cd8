"""l2s sweep: the adaptive search on synthetic objectives (which values, how many, how close to a dense
grid's front), the front comparison on a hand example, bad configs, and one end-to-end sweep (plus a
grid reference) on the micro toy family: run contract, figures, determinism, resume, no weights left."""

from __future__ import annotations

import math
import shutil

import pytest

from l2s import io
from l2s import notebook_helpers as nh
from l2s.cli import main
from l2s.config import ConfigError, load_yaml, parse
from l2s.sweep import (
    Point,
    SweepConfig,
    choose_interval,
    compare_fronts,
    front,
    grid_values,
    hypervolume,
    points_table,
    read_sweep,
    reading,
    run_sweep,
    search,
)


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def ta_like(alpha: float) -> tuple[float, float]:
    """Like task arithmetic's α on the toy: accuracy rises from the quick model's and saturates (a
    fraction of 100 problems), length rises once with it, then jumps again where nothing is gained."""
    accuracy = round(0.46 + 0.54 * _sig((alpha - 0.3) / 0.04), 2)
    tokens = round(6 + 20 * _sig((alpha - 0.3) / 0.05) + 15 * _sig((alpha - 0.65) / 0.02), 1)
    return accuracy, tokens


class Counted:
    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, value):
        self.calls.append(value)
        return self.f(value)


# -- the search --------------------------------------------------------------------------------------------
def test_search_takes_the_ends_then_splits_the_interval_with_the_largest_open_box():
    # α=0: (50%, 10), α=0.5: (100%, 20) dominates α=1: (100%, 40): [0.5, 1] has no open box
    f = Counted(lambda x: (min(1.0, 0.5 + x), 10 + 20 * x if x <= 0.5 else 20 + 40 * (x - 0.5)))
    r = search(f, 0.0, 1.0, budget=5)
    assert f.calls == [0.0, 1.0, 0.5, 0.25, 0.125] == [p.value for p in r.points]
    assert [c["rule"] for c in r.choices] == ["end", "end", "open box", "open box", "open box"]
    assert r.choices[2]["open_area"] == pytest.approx(1.0)
    assert r.choices[3]["interval"] == [0.0, 0.5] and r.choices[3]["open_area"] == pytest.approx(1 / 3)
    # after 0.25 both halves of [0, 0.5] have the same open box and change: the lower one goes first
    assert r.choices[4]["interval"] == [0.0, 0.25] and r.stopped == "budget"
    assert [p.value for p in front(r.points)] == [0.0, 0.125, 0.25, 0.5]


def test_search_falls_back_to_the_largest_change_then_the_widest_interval():
    # the low end dominates the high end: no box is open, the largest normalised change decides
    r = search(lambda x: (1.0 - 0.5 * x * x, 10 + 30 * x), 0.0, 1.0, budget=4)
    assert [c["rule"] for c in r.choices[2:]] == ["change", "change"]
    assert [p.value for p in r.points] == [0.0, 1.0, 0.5, 0.75]
    # a flat objective: widest first, lowest on ties, until every interval is below 2 x resolution
    flat = Counted(lambda x: (0.7, 20.0))
    r = search(flat, 0.0, 1.0, budget=100, resolution=0.25)
    assert flat.calls == [0.0, 1.0, 0.5, 0.25, 0.75] and r.stopped == "resolution"
    assert {c["rule"] for c in r.choices[2:]} == {"widest"}
    assert choose_interval(r.points, 0.25) is None


def test_integer_parameter_values_stay_integers_and_each_is_evaluated_once():
    f = Counted(lambda r: (0.5 + 0.05 * r, 10.0 + r))
    res = search(f, 1, 8, budget=50, integer=True)
    assert sorted(f.calls) == list(range(1, 9)) and all(isinstance(v, int) for v in f.calls)
    assert res.stopped == "resolution"
    assert grid_values(1, 8, 4, integer=True) == [1, 3, 6, 8]


def test_grid_values_are_evenly_spaced_and_rounded():
    assert grid_values(0.1, 1.0, 10) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    r = search(Counted(ta_like), 0.1, 1.0, budget=3, grid=10)
    assert len(r.points) == 10 and r.stopped == "grid" and {c["rule"] for c in r.choices} == {"grid"}
    with pytest.raises(ValueError, match="grid must be an integer >= 2"):
        grid_values(0.0, 1.0, 1)


@pytest.mark.parametrize("budget", [3, 5, 7, 9, 12])
def test_search_stays_within_budget_and_beats_a_grid_of_the_same_size(budget):
    f = Counted(ta_like)
    r = search(f, 0.0, 1.0, budget=budget)
    assert len(f.calls) == len(r.points) == budget and len(set(f.calls)) == budget
    dense = search(ta_like, 0.0, 1.0, budget=0, grid=1001).points
    mine = compare_fronts(r.points, dense)
    grid = compare_fronts(search(ta_like, 0.0, 1.0, budget=0, grid=budget).points, dense)
    assert mine["hypervolume_ratio"] >= grid["hypervolume_ratio"] - 1e-12
    if budget >= 5:
        assert mine["max_distance"] < grid["max_distance"]


def test_search_recovers_the_dense_front_within_tolerance():
    dense = search(ta_like, 0.0, 1.0, budget=0, grid=1001).points
    r = search(ta_like, 0.0, 1.0, budget=9)
    cmp = compare_fronts(r.points, dense)
    assert cmp["hypervolume_ratio"] > 0.97 and cmp["max_distance"] < 0.08
    # nothing is spent where the front cannot be (α in (0.5, 1): longer, no more accurate)
    assert not [p.value for p in r.points if 0.5 < p.value < 1.0]
    assert all(p.value <= 0.5 for p in front(r.points))


# -- comparing fronts -----------------------------------------------------------------------------------
def test_front_comparison_on_a_hand_example():
    a = [Point(0.5, 1.0, 20.0), Point(0.1, 0.5, 10.0), Point(0.9, 0.9, 30.0)]  # the last one is dominated
    b = [Point(1.0, 1.0, 40.0), Point(0.1, 0.5, 10.0), Point(0.3, 0.8, 15.0)]
    cmp = compare_fronts(a, b)
    assert cmp["length_scale"] == 40.0 and cmp["front"] == [0.1, 0.5] and cmp["reference_front"] == [0.1, 0.3, 1.0]
    # ℓ = tokens / 40: HV(a) = (0.5 - 0.25)·0.5 + (1 - 0.5)·1.0; HV(b) = (0.375 - 0.25)·0.5 + (1 - 0.375)·0.8
    assert cmp["hypervolume"] == pytest.approx(0.625) and cmp["reference_hypervolume"] == pytest.approx(0.5625)
    assert cmp["hypervolume_ratio"] == pytest.approx(0.625 / 0.5625)
    d = {r["value"]: r for r in cmp["distances"]}
    assert d[0.1]["distance"] == 0 and d[0.1]["nearest"] == 0.1
    assert d[0.3]["nearest"] == 0.5 and d[0.3]["distance"] == pytest.approx(math.hypot(0.125, 0.2))
    assert d[0.3]["accuracy_pts"] == pytest.approx(20.0) and d[0.3]["relative_length"] == pytest.approx(0.125)
    assert d[1.0]["nearest"] == 0.5 and d[1.0]["distance"] == pytest.approx(0.5)
    assert d[1.0]["accuracy_pts"] == 0 and d[1.0]["relative_length"] == pytest.approx(-0.5)
    assert cmp["max_distance"] == pytest.approx(0.5)
    assert cmp["mean_distance"] == pytest.approx((0 + math.hypot(0.125, 0.2) + 0.5) / 3)
    assert hypervolume([(1.0, 1.0)]) == 0 and hypervolume([(0.0, 1.0)]) == 1
    assert compare_fronts(b, b)["hypervolume_ratio"] == pytest.approx(1.0)


# -- bad configs ------------------------------------------------------------------------------------------
BASE = {"out": "o", "method": "task_arithmetic", "param": "alpha", "low": 0.1, "high": 1.0, "models_run": "m"}


@pytest.mark.parametrize("changes, message", [
    ({"param": "beta"}, "param: 'beta' is no parameter of method 'task_arithmetic'; known: alpha"),
    ({"params": {"alpha": 0.5}}, "params: 'alpha' is the swept parameter"),
    ({"budget": 1}, "budget must be an integer >= 2, got 1"),
    ({"grid": 1}, "grid must be an integer >= 2"),
    ({"low": 1.0, "high": 0.5}, "low must be below high, got low=1.0, high=0.5"),
    ({"method": "ties", "param": "k", "high": 1.5}, "high=1.5: parameter k=1.5 of ties is out of range: 0 <= k <= 1"),
    ({"method": "ties", "param": "trim"}, "param: 'trim' of 'ties' is a str, not a number"),
    ({"method": "twin", "param": "r", "low": 1, "high": 4.5}, "high: parameter 'r' of 'twin' is an integer"),
    ({"method": "nope"}, "unknown merge method 'nope'"),
    ({"models_run": None}, "give models_run (a run of 00_models) or the quick and slow checkpoints"),
    ({"quick": "q", "slow": "s"}, "give either models_run or quick/slow/short checkpoints, not both"),
    ({"test_split": "dev"}, "dev_split and test_split must differ"),
    ({"prompt": "nope"}, "unknown prompt 'nope'"),
    ({"resolution": 0.0}, "resolution must be a number > 0"),
])
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match="sweep.yaml: .*" + message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("+", r"\+")):
        parse(SweepConfig, {**BASE, **changes}, "sweep.yaml")


def test_config_file_and_cli_errors(tmp_path, capsys):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"out: {tmp_path / 'o'}\nmethod: task_arithmetic\nparam: alpha\nlow: 0.1\nhigh: 1.0\n"
                   "models_run: m\nbudget: five\n")
    with pytest.raises(ConfigError, match=r"s.yaml: budget must be int, got 'five' \(str\)"):
        load_yaml(SweepConfig, cfg)
    assert main(["sweep", "--config", str(cfg), "--budget", "4", "--models-run", str(tmp_path / "none")]) == 2
    assert "models.json not found: run notebooks/00_models.ipynb" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are found
    assert main(["sweep", "--method", "ta", "--param", "alpha", "--low", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("l2s sweep: error: missing --out, --high (or give them in --config)")
    assert main(["sweep", "--config", str(cfg), "--fixed", "k"]) == 2
    assert "--fixed 'k': expected NAME=VALUE" in capsys.readouterr().err


# -- end to end on the micro toy family ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """A micro family in a private cache and a models run with a small toy split (2 problems per level)."""
    from l2s.toy.build import build_family

    cache = tmp_path_factory.mktemp("cache")
    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(cache))
        build_family("micro", cache=cache)
        nh.prepare_models(root / "runs" / "micro-models", size="toy-micro", toy_size="micro", toy_data_per_level=2)
        yield {"cache": cache, "root": root, "runs": root / "runs", "models_run": str(root / "runs" / "micro-models")}


def _config(micro, out, **kw) -> SweepConfig:
    return SweepConfig(**{"out": str(out), "method": "task_arithmetic", "param": "alpha", "low": 0.0, "high": 1.0,
                          "budget": 3, "models_run": micro["models_run"], "max_new_tokens": 24, **kw})


@pytest.fixture(scope="module")
def swept(micro):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(micro["cache"]))
        grid = micro["runs"] / "micro-ta-grid"
        cfg = micro["root"] / "grid.yaml"
        cfg.write_text(f"out: {grid}\nmethod: task_arithmetic\nparam: alpha\nlow: 0.0\nhigh: 1.0\ngrid: 4\n"
                       f"models_run: {micro['models_run']}\nmax_new_tokens: 24\nplot: false\n")
        assert main(["sweep", "--config", str(cfg)]) == 0  # the reference, through the command line
        out = micro["runs"] / "micro-ta-sweep"
        record = run_sweep(_config(micro, out, reference_run=str(grid)), progress=False)
        yield {**micro, "out": out, "grid": grid, "record": record}


def test_micro_sweep_writes_its_run(swept):
    out, record = swept["out"], swept["record"]
    assert read_sweep(out) == record and record["kind"] == "sweep" and record["search"] == "adaptive"
    assert record["n_evaluations"]["dev"] == 3 == len(record["points"])
    assert [c["value"] for c in sorted(record["choices"], key=lambda c: c["order"])] == [0.0, 1.0, 0.5]
    assert record["n_evaluations"]["test"] == len(record["front"]) >= 1
    for p in record["points"]:
        dev = io.read_json(out / p["dev_run"] / "config.json")
        assert dev["split"] == "dev" and "size" not in dev["tags"] and dev["tags"]["params"] == {"alpha": p["value"]}
        assert p["dev"]["n"] == 10 and set(p["dev"]["datasets"]["toy"]["by_level"]) == {"1", "2", "3", "4", "5"}
        assert p["on_front"] == (p["value"] in record["front"]) == (p["test"] is not None)
        if p["test"]:
            tags = io.read_json(out / p["test_run"] / "config.json")["tags"]
            assert tags == {"size": "toy-micro", "role": "merged", "method": "task_arithmetic",
                            "params": {"alpha": p["value"]}, "sweep": True}
    assert (out / "provenance.json").is_file() and not (out / "metrics.json").exists()
    assert not list(swept["runs"].rglob("*.safetensors")), "no weights in a run"
    assert not any((swept["cache"] / "merged").iterdir()), "merged checkpoints are deleted once evaluated"
    grid = read_sweep(swept["grid"])
    assert grid["search"] == "grid" and [p["value"] for p in grid["points"]] == grid_values(0.0, 1.0, 4)
    cmp = record["comparison"]
    assert cmp["reference_run"] == str(swept["grid"]) and cmp["reference_evaluations"] == 4
    assert cmp["evaluations"] == 3 and len(cmp["distances"]) == len(grid["front"])
    table = points_table(record)
    assert list(table.index) == [0.0, 0.5, 1.0] and "within" in reading(record)


def test_a_runs_dir_with_sweeps_loads_for_the_figures(swept):
    from l2s.figures.frames import load_runs
    from l2s.figures.tables import pareto

    runs = load_runs(swept["runs"])
    plotted = set(runs.datasets["run"])
    assert plotted == {f"micro-ta-sweep/{p['test_run']}" for p in swept["record"]["points"] if p["test"]}
    assert runs.datasets["sweep"].all()
    table = pareto(runs)
    assert set(table.loc[table["source"] == "measured", "run"]) == plotted


def test_same_inputs_give_the_same_bytes_and_a_rerun_resumes(swept):
    out, again = swept["out"], swept["runs"] / "micro-ta-sweep-again"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("L2S_CACHE", str(swept["cache"]))
        run_sweep(_config(swept, again, reference_run=str(swept["grid"])), progress=False)
        assert (again / "sweep.json").read_bytes() == (out / "sweep.json").read_bytes()
        # a killed run: the record and one dev run gone; the rerun redoes just that and the same bytes come back
        before = (again / "sweep.json").read_bytes()
        (again / "sweep.json").unlink()
        shutil.rmtree(again / "points" / "alpha-0.5" / "dev")
        kept = (again / "points" / "alpha-0" / "dev" / "generations.jsonl").stat().st_mtime_ns
        run_sweep(_config(swept, again, reference_run=str(swept["grid"])), progress=False)
        assert (again / "sweep.json").read_bytes() == before
        assert (again / "points" / "alpha-0" / "dev" / "generations.jsonl").stat().st_mtime_ns == kept
        with pytest.raises(FileExistsError, match=r"holds a sweep with another config \(differs in \['budget'\]\)"):
            run_sweep(_config(swept, again, budget=4, keep_merges=True), progress=False)
        with pytest.raises(ValueError, match=r"reference_run .*: its sweep differs in \['max_new_tokens'\]"):
            run_sweep(_config(swept, swept["runs"] / "other", max_new_tokens=16, reference_run=str(swept["grid"])),
                      progress=False)
        assert not (swept["runs"] / "other").exists()  # refused before anything is written
