"""Committed notebooks are clean: no outputs, exactly one cell tagged ``parameters``."""

from pathlib import Path

import nbformat
import pytest

from l2s.study import check_notebook

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    assert check_notebook(path) == []


def test_all_committed_notebooks_are_clean():
    """Also runs (and passes) while notebooks/ is still empty."""
    problems = [p for nb in NOTEBOOKS for p in check_notebook(nb)]
    assert problems == [], "\n".join(problems)


def _notebook(tmp_path, name, n_parameter_cells=1, with_output=False):
    nb = nbformat.v4.new_notebook()
    for _ in range(n_parameter_cells):
        cell = nbformat.v4.new_code_cell("x = 1")
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    body = nbformat.v4.new_code_cell("print(x)")
    if with_output:
        body.execution_count = 1
        body.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells.append(body)
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_checker_accepts_a_clean_notebook(tmp_path):
    assert check_notebook(_notebook(tmp_path, "good.ipynb")) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"with_output": True}, "cell 1 has outputs"),
    ({"n_parameter_cells": 0}, "0 cells tagged 'parameters'"),
    ({"n_parameter_cells": 2}, "2 cells tagged 'parameters'"),
])
def test_checker_rejects_bad_notebooks(tmp_path, kwargs, message):
    problems = check_notebook(_notebook(tmp_path, "bad.ipynb", **kwargs))
    assert len(problems) == 1 and message in problems[0]


def test_checker_rejects_unreadable_file(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json")
    assert "not a readable notebook" in check_notebook(path)[0]
