"""Committed notebooks: each ``notebooks/NN_name.ipynb`` is what jupytext makes of its reviewed source
``NN_name.py`` (percent format, paired), has no outputs, exactly one cell tagged ``parameters`` and
ends with a results cell (a ``## Results`` reading, then a code cell tagged ``results``)."""

from pathlib import Path

import jupytext
import nbformat
import pytest
from jupytext.config import find_jupytext_configuration_file, load_jupytext_configuration_file

from l2s.study import check_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
PAIRING = "ipynb,py:percent"
STUDY_NOTEBOOKS = ["00_models", "01_merge", "02_evaluate", "03_adar1", "04_figures", "05_explore", "06_sweep"]


def _cells(nb) -> list[tuple]:
    """What a cell is, ids aside: type, source and metadata (tags included)."""
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


def test_every_study_notebook_has_its_source_and_nothing_is_unpaired():
    assert [p.stem for p in NOTEBOOKS] == STUDY_NOTEBOOKS
    assert [p.stem for p in SOURCES] == STUDY_NOTEBOOKS
    assert not (NOTEBOOK_DIR / "build_notebooks.py").exists()


def _unversioned(text: str) -> str:
    """A jupytext header without the jupytext version that last wrote it."""
    return "\n".join(line for line in text.splitlines() if "jupytext_version:" not in line)


def test_pairing_is_configured_for_the_notebooks_directory_only():
    """JupyterLab (jupytext's contents manager) pairs what it opens in notebooks/; the executed copies
    in runs/ are not paired by any configuration."""
    found = find_jupytext_configuration_file(str(NOTEBOOK_DIR))
    assert Path(found) == NOTEBOOK_DIR / "jupytext.toml"
    assert load_jupytext_configuration_file(found).formats == [PAIRING]
    assert find_jupytext_configuration_file(str(NOTEBOOK_DIR.parent / "runs")) is None


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_notebook_is_what_jupytext_makes_of_its_source(source):
    text = source.read_text()
    assert text.startswith("# ---\n# jupyter:\n"), f"{source.name}: no jupytext header"
    assert "\n# %% tags=[\"parameters\"]\n" in text, f"{source.name}: no percent-format parameters cell"
    expected = jupytext.reads(text, fmt="py:percent")
    committed = nbformat.read(source.with_suffix(".ipynb"), as_version=4)
    assert _cells(committed) == _cells(expected), (
        f"{source.with_suffix('.ipynb').name} differs from {source.name}: run `make notebooks`")
    assert committed.metadata["jupytext"]["formats"] == PAIRING
    assert committed.metadata["kernelspec"] == expected.metadata["kernelspec"]
    assert committed.metadata["kernelspec"]["language"] == "python"  # papermill needs the language
    assert _unversioned(jupytext.writes(committed, fmt="py:percent")) == _unversioned(text), (
        f"{source.name} would change on a sync")


def test_saving_in_jupyterlab_keeps_both_files_as_committed(tmp_path):
    """JupyterLab saves through jupytext's contents manager: opening and saving either file of a pair
    rewrites both, byte for byte as committed; a new notebook in notebooks/ is paired too."""
    import shutil

    for path in [*NOTEBOOKS, *SOURCES, NOTEBOOK_DIR / "jupytext.toml"]:
        shutil.copy(path, tmp_path / path.name)
    manager = jupytext.TextFileContentsManager(root_dir=str(tmp_path))
    for name in (NOTEBOOKS[0].name, SOURCES[-1].name):
        manager.save(manager.get(name), name)
    for path in [*NOTEBOOKS, *SOURCES]:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), f"saving changed {path.name}"
    manager.save({"type": "notebook", "content": jupytext.reads("# %%\nx = 1\n", fmt="py:percent")}, "99_new.ipynb")
    assert (tmp_path / "99_new.py").read_text().endswith("# %%\nx = 1\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    assert check_notebook(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_ends_with_a_results_cell(path):
    cells = nbformat.read(path, as_version=4).cells
    tagged = [i for i, c in enumerate(cells) if "results" in c.metadata.get("tags", [])]
    assert tagged == [len(cells) - 1], f"{path.name}: the last cell, and only it, is tagged 'results'"
    reading, results = cells[-2], cells[-1]
    assert results.cell_type == "code" and "report.show(" in results.source
    assert reading.cell_type == "markdown" and reading.source.startswith("## Results\n")
    assert len(reading.source.split()) >= 40, f"{path.name}: the results reading is a paragraph, not a caption"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_sets_up_before_it_computes(path):
    """``report.setup_notebook()`` (logging, and no progress bars in batch) runs in the first cell after
    the parameters, before any step's work."""
    cells = nbformat.read(path, as_version=4).cells
    first = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])) + 1
    assert "report.setup_notebook()" in cells[first].source
    assert not any("setup_notebook" in c.source for c in cells[first + 1:])


def test_all_committed_notebooks_are_clean():
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
