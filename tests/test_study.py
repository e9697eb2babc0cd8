"""The papermill study runner on throwaway notebooks: grid expansion, resume/skip, failure, --only,
--dry-run and the summary."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from l2s.cli import main
from l2s.study import MARKER, expand, load_config, run_study, select, status, summary


def make_notebook(path: Path) -> Path:
    """Writes ``out.json`` (its parameters) into run_dir, counts executions, fails when asked."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = "unset"\nvalue = 0\nfail = False')
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
            "(out / 'out.json').write_text(json.dumps({'value': value}))"),
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
    ([{"notebook": "a.ipynb", "run_dir": "r", "bogus": 1}], r"unknown key\(s\) bogus"),
    ([{"run_dir": "r"}], r"missing key\(s\) notebook"),
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

    # a step marked always (like the figures) reruns every time; finished ones stay skipped
    steps[2]["always"] = True
    write_config(cfg, steps, figures_dir="figures")
    assert [o.state for o in run_study(load_config(cfg))] == ["done", "done", "ran"]
    assert executions(tmp_path)[-1] == "runs/c" and len(executions(tmp_path)) == 5

    # changed parameters make a finished step "stale": kept, reported, not rerun
    steps[0]["parameters"]["value"] = 10
    write_config(cfg, steps, figures_dir="figures")
    steps_now = expand(load_config(cfg))
    assert [status(s) for s in steps_now] == ["stale", "done", "done"]


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
