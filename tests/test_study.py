"""The papermill study runner on throwaway notebooks: grid expansion, resume/skip, failure, --only,
--dry-run and the summary."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from l2s.cli import main
from l2s.study import MARKER, expand, load_config, run_study, select, states, summary


def make_notebook(path: Path) -> Path:
    """Writes ``out.json`` (its parameters) into run_dir, counts executions, fails when asked."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = "unset"\nvalue = 0\nfail = False\nartifact = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# throwaway step"),
        params,
        nbformat.v4.new_code_cell(
            "import json, pathlib\n"
            "with open('executions.log', 'a') as f:\n"
            "    f.write(run_dir + '\\n')\n"
            "if fail:\n"
            "    raise RuntimeError('step asked to fail')\n"
            "out = pathlib.Path(run_dir)\n"
            "out.mkdir(parents=True, exist_ok=True)\n"
            "(out / 'out.json').write_text(json.dumps({'value': value}))\n"
            "if artifact:\n"
            "    from l2s.pipeline import declare_artifacts\n"
            "    pathlib.Path(artifact).mkdir(parents=True, exist_ok=True)\n"
            "    declare_artifacts(run_dir, [artifact])"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def write_config(path: Path, steps, **extra) -> Path:
    path.write_text(yaml.safe_dump({"name": "t", "steps": steps, **extra}, sort_keys=False))
    return path


def executions(root: Path) -> list[str]:
    log = root / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_grid_expansion_and_substitution(tmp_path):
    cfg = write_config(tmp_path / "s.yaml", [
        {"notebook": "nb.ipynb", "run_dir": "runs/{size}-{merge[method]}",
         "grid": {"size": ["s", "m"], "merge": [{"method": "ties", "k": 0.8}, {"method": "dare", "p": 0.3}]},
         "parameters": {"size": "{size}", "merge": "{merge}", "label": "{size}/{merge[method]}", "n": 3}},
        {"notebook": "fig.ipynb", "run_dir": "figures", "name": "figures"},
    ], parameters={"seed": 7, "n": 1})
    steps = expand(load_config(cfg))
    assert [s.name for s in steps] == ["s-ties", "s-dare", "m-ties", "m-dare", "figures"]
    s = steps[1]
    assert s.run_dir == Path("runs/s-dare") and s.notebook == Path("nb.ipynb")
    assert s.parameters == {"seed": 7, "n": 3, "size": "s", "merge": {"method": "dare", "p": 0.3},
                            "label": "s/dare", "run_dir": "runs/s-dare"}
    assert steps[4].parameters == {"seed": 7, "n": 1, "run_dir": "figures"}
    assert [s.name for s in select(steps, ["*-ties,figures"])] == ["s-ties", "m-ties", "figures"]
    with pytest.raises(ValueError, match="matches no step"):
        select(steps, ["nothing*"])


@pytest.mark.parametrize("steps, message", [
    ([{"notebook": "a.ipynb", "run_dir": "r/{x}", "grid": {"x": [1, 1]}}], "two steps share the name"),
    ([{"notebook": "a.ipynb", "run_dir": "r/{y}"}], "'y' which is not a grid variable"),
    ([{"notebook": "a.ipynb", "run_dir": "r", "bogus": 1}], r"steps\[0\]: unknown key\(s\) \['bogus'\]"),
    ([{"run_dir": "r"}], r"missing key\(s\).*notebook"),
    ([{"notebook": "a.ipynb", "run_dir": "r", "always": "false"}], r"steps\[0\]\.always.*bool"),
    ([{"notebook": "a.ipynb", "run_dir": "r", "grid": {"x": "abc"}}], r"steps\[0\]\.grid\.x.*list"),
    ([{"notebook": "a.ipynb", "run_dir": "r/{x}", "grid": {"x": []}}], "non-empty list"),
    ([], "non-empty list"),
])
def test_bad_configs_are_named(tmp_path, steps, message):
    cfg = write_config(tmp_path / "bad.yaml", steps)
    with pytest.raises(ValueError, match=message):
        expand(load_config(cfg))


def test_missing_config_and_notebook(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "s.yaml", [{"notebook": "missing.ipynb", "run_dir": "runs/a"}])
    with pytest.raises(FileNotFoundError, match="missing.ipynb"):
        run_study(load_config(cfg))


def test_run_fail_resume_and_skip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_notebook(tmp_path / "step.ipynb")
    steps = [{"notebook": "step.ipynb", "run_dir": "runs/a", "parameters": {"value": 1}},
             {"notebook": "step.ipynb", "run_dir": "runs/b", "parameters": {"value": 2, "fail": True}},
             {"notebook": "step.ipynb", "run_dir": "runs/c", "parameters": {"value": 3}}]
    cfg = write_config(tmp_path / "s.yaml", steps, figures_dir="figures")

    # 1st run: a runs, b fails (its executed notebook kept beside the run), c is not started
    out = run_study(load_config(cfg))
    assert [o.state for o in out] == ["ran", "failed", "not run"]
    assert executions(tmp_path) == ["runs/a", "runs/b"]
    a = Path("runs/a")
    assert json.loads((a / "out.json").read_text()) == {"value": 1}
    executed = nbformat.read(a / "step.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    marker = json.loads((a / MARKER).read_text())
    assert marker["parameters"] == {"value": 1, "run_dir": "runs/a"} and marker["step"] == "a"
    assert Path("runs/b.failed.ipynb").is_file() and not Path("runs/b").exists()
    assert "step asked to fail" in out[1].error
    text = summary(load_config(cfg), out)
    assert "failed" in text and "runs/b.failed.ipynb" in text and "figures in figures: none yet" in text
    assert not list(Path("runs").glob(".*running*"))

    # dry run: states only, nothing executed
    dry = run_study(load_config(cfg), dry_run=True)
    assert [o.state for o in dry] == ["done", "pending", "pending"]
    assert len(executions(tmp_path)) == 2

    # fix b and rerun: a is skipped (not executed again), b and c run, b's failed notebook goes away
    steps[1]["parameters"]["fail"] = False
    write_config(cfg, steps, figures_dir="figures")
    out = run_study(load_config(cfg))
    assert [o.state for o in out] == ["done", "ran", "ran"]
    assert executions(tmp_path) == ["runs/a", "runs/b", "runs/b", "runs/c"]
    assert not Path("runs/b.failed.ipynb").exists() and (Path("runs/b") / MARKER).is_file()

    # a step marked always reruns every time; finished ones stay skipped
    steps[2]["always"] = True
    write_config(cfg, steps, figures_dir="figures")
    assert [o.state for o in run_study(load_config(cfg))] == ["done", "done", "ran"]
    assert executions(tmp_path)[-1] == "runs/c" and len(executions(tmp_path)) == 5

    # changed parameters make a finished step "stale": it reruns from a cleared run directory
    steps[0]["parameters"]["value"] = 10
    (a / "leftover.txt").write_text("from the old inputs")
    write_config(cfg, steps, figures_dir="figures")
    assert states(expand(load_config(cfg))) == {"a": "stale", "b": "done", "c": "done"}
    assert [o.state for o in run_study(load_config(cfg))] == ["ran", "done", "ran"]
    assert json.loads((a / "out.json").read_text()) == {"value": 10} and not (a / "leftover.txt").exists()


def chain_config(tmp_path: Path, value_x: int = 2) -> Path:
    """models -> merge-{x,y} (consume models) -> eval-{x,y} (consume a merge), other, figures (reads runs/)."""
    if not (tmp_path / "step.ipynb").exists():  # new cells get new ids: rewriting would change the notebook
        make_notebook(tmp_path / "step.ipynb")
    merges = [{"name": "x", "value": value_x}, {"name": "y", "value": 2}]
    return write_config(tmp_path / "chain.yaml", [
        {"notebook": "step.ipynb", "run_dir": "runs/models", "parameters": {"value": 1}},
        {"notebook": "step.ipynb", "run_dir": "runs/merge-{m[name]}", "grid": {"m": merges},
         "parameters": {"value": "{m[value]}", "models_run": "runs/models"}},
        {"notebook": "step.ipynb", "run_dir": "runs/eval-{m[name]}", "grid": {"m": merges},
         "parameters": {"merge_run": "runs/merge-{m[name]}", "data_dir": "runs/models/data"}},
        {"notebook": "step.ipynb", "run_dir": "runs/other", "parameters": {"value": 4}},
        {"notebook": "step.ipynb", "run_dir": "runs/figures", "parameters": {"runs_dir": "runs", "out_dir": "figures"}},
    ], figures_dir="figures")


def test_dependencies_come_from_the_parameters(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = {s.name: s for s in expand(load_config(chain_config(tmp_path)))}
    assert steps["models"].deps == () and steps["merge-x"].deps == ("models",)
    assert steps["eval-y"].deps == ("models", "merge-y")   # data_dir lies inside the models run
    assert steps["figures"].deps == () and steps["figures"].reads == (
        "models", "merge-x", "merge-y", "eval-x", "eval-y", "other")
    bad = write_config(tmp_path / "bad.yaml", [
        {"notebook": "step.ipynb", "run_dir": "runs/a", "parameters": {"uses": "runs/b"}},
        {"notebook": "step.ipynb", "run_dir": "runs/b"}])
    with pytest.raises(ValueError, match="uses the run of b, which comes later"):
        expand(load_config(bad))
    with pytest.raises(ValueError, match="needs 'nothing' matches no earlier step"):
        expand(load_config(write_config(tmp_path / "n.yaml", [
            {"notebook": "step.ipynb", "run_dir": "runs/a", "needs": ["nothing"]}])))


def test_a_changed_parameter_reruns_that_step_its_consumers_and_the_figures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "--config", str(chain_config(tmp_path))]) == 0
    assert len(executions(tmp_path)) == 7
    cfg = chain_config(tmp_path, value_x=3)
    assert states(expand(load_config(cfg))) == {"models": "done", "merge-x": "stale", "merge-y": "done",
                                                "eval-x": "stale", "eval-y": "done", "other": "done",
                                                "figures": "stale"}
    before = len(executions(tmp_path))
    assert main(["study", "--config", str(cfg)]) == 0
    assert executions(tmp_path)[before:] == ["runs/merge-x", "runs/eval-x", "runs/figures"]
    assert json.loads(Path("runs/merge-x/out.json").read_text()) == {"value": 3}
    # --rerun: a step whatever its state (say l2s's code changed), with everything downstream
    before = len(executions(tmp_path))
    assert main(["study", "--config", str(cfg), "--rerun", "merge-y"]) == 0
    assert executions(tmp_path)[before:] == ["runs/merge-y", "runs/eval-y", "runs/figures"]
    # --only a step whose upstream is stale brings that upstream along
    cfg = chain_config(tmp_path, value_x=4)
    before = len(executions(tmp_path))
    assert main(["study", "--config", str(cfg), "--only", "eval-x"]) == 0
    assert executions(tmp_path)[before:] == ["runs/merge-x", "runs/eval-x"]


def test_a_new_step_rebuilds_missing_cache_artifacts_first(tmp_path, monkeypatch):
    """A fresh clone: the markers are committed, the cache artifacts they declare are not there."""
    import shutil

    monkeypatch.chdir(tmp_path)
    cfg = chain_config(tmp_path)
    steps = yaml.safe_load(cfg.read_text())["steps"]
    steps[0]["parameters"]["artifact"] = "cache/quick"
    write_config(cfg, steps, figures_dir="figures")
    assert main(["study", "--config", str(cfg)]) == 0
    assert json.loads((tmp_path / "runs/models" / MARKER).read_text())["artifacts"] == ["cache/quick"]
    shutil.rmtree(tmp_path / "cache")
    assert states(expand(load_config(cfg)))["models"] == "missing"
    n = len(executions(tmp_path))
    assert main(["study", "--config", str(cfg)]) == 0
    assert executions(tmp_path)[n:] == []   # nothing needs the checkpoint: nothing is rebuilt

    steps.insert(2, {"notebook": "step.ipynb", "run_dir": "runs/merge-new",
                     "parameters": {"models_run": "runs/models"}})
    write_config(cfg, steps, figures_dir="figures")
    assert main(["study", "--config", str(cfg)]) == 0
    assert executions(tmp_path)[n:] == ["runs/models", "runs/merge-new", "runs/figures"]
    assert (tmp_path / "cache/quick").is_dir()
    assert set(states(expand(load_config(cfg))).values()) == {"done"}


def test_out_reruns_everything_elsewhere_and_reports_reproduction(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = chain_config(tmp_path)
    assert main(["study", "--config", str(cfg)]) == 0
    for d in ("runs/eval-x", "runs/eval-y"):   # stand-in metrics for the report
        (tmp_path / d / "metrics.json").write_text(json.dumps({"overall": {"accuracy": 0.5, "n": 4}}))
    n = len(executions(tmp_path))
    steps = expand(load_config(cfg), out="again")
    assert steps[1].run_dir == Path("again/runs/merge-x")
    assert steps[1].parameters["models_run"] == "again/runs/models"
    assert steps[-1].parameters == {"runs_dir": "again/runs", "out_dir": "again/figures",
                                    "run_dir": "again/runs/figures"}
    import l2s.study
    real_run_step = l2s.study.run_step

    def run_step(step, *a, **k):
        artifacts = real_run_step(step, *a, **k)
        if step.name.startswith("eval-"):
            acc = 0.5 if step.name == "eval-x" else 0.75
            (step.run_dir / "metrics.json").write_text(json.dumps({"overall": {"accuracy": acc, "n": 4}}))
        return artifacts
    monkeypatch.setattr(l2s.study, "run_step", run_step)
    capsys.readouterr()
    assert main(["study", "--config", str(cfg), "--out", "again", "--compare", "runs"]) == 0
    assert len(executions(tmp_path)) == n + 7
    text = capsys.readouterr().out
    assert "1 of 2 runs reproduce every metric exactly; 3 of 4 metrics equal" in text
    assert "eval-y: overall.accuracy 0.75 vs 0.5" in text
    report = json.loads((tmp_path / "again/reproduction.json").read_text())
    assert report["totals"]["runs_equal"] == 1 and (tmp_path / "again/reproduction.md").is_file()


def test_cli_dry_run_and_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_notebook(tmp_path / "step.ipynb")
    cfg = write_config(tmp_path / "s.yaml", [
        {"notebook": "step.ipynb", "run_dir": "runs/{v}", "grid": {"v": ["x", "y"]}, "parameters": {"value": "{v}"}}])
    assert main(["study", "--config", str(cfg), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "pending  x: step.ipynb -> runs/x" in text and "2 pending" in text
    assert executions(tmp_path) == []
    assert main(["study", "--config", str(cfg), "--only", "y"]) == 0
    assert executions(tmp_path) == ["runs/y"] and not Path("runs/x").exists()
    assert "1 ran" in capsys.readouterr().out
    assert main(["study", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_jobs_run_steps_at_once_with_papermill(tmp_path, monkeypatch, capsys):
    """``--jobs 2`` runs the chain with two papermill kernels at a time: every step once, consumers after
    what they consume, the same records as one job, then nothing left to do."""
    monkeypatch.chdir(tmp_path)
    cfg = chain_config(tmp_path)
    assert main(["study", "--config", str(cfg), "--jobs", "2"]) == 0
    order = executions(tmp_path)
    assert sorted(order) == sorted(["runs/models", "runs/merge-x", "runs/merge-y", "runs/eval-x", "runs/eval-y",
                                    "runs/other", "runs/figures"])
    assert order.index("runs/models") < min(order.index("runs/merge-x"), order.index("runs/merge-y"))
    assert order.index("runs/merge-x") < order.index("runs/eval-x") and order[-1] == "runs/figures"
    assert json.loads(Path("runs/merge-x/out.json").read_text()) == {"value": 2}
    capsys.readouterr()
    assert main(["study", "--config", str(cfg), "--jobs", "2"]) == 0
    assert "7 done" in capsys.readouterr().out and len(executions(tmp_path)) == 7
    assert main(["study", "--config", str(cfg), "--jobs", "0"]) == 2
