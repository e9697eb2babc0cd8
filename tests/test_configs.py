"""Every study config parses into the study's dataclasses and names only existing notebooks, their
parameters, merge methods with valid hyper-parameters, prompts, datasets and earlier runs; the toy
and Qwen configs hold what the papers prescribe (Wu et al. 2025 Table 7, decoding, datasets)."""

import ast
from pathlib import Path

import nbformat
import pytest
import yaml

from l2s.adar1 import AdaR1Config
from l2s.config import parse
from l2s.data import DATASETS
from l2s.eval.prompts import PROMPTS
from l2s.merge import METHODS, MergeConfig, parse_method
from l2s.notebook_helpers import calibration_files, figure_method
from l2s.reference import canonical_size, wu2025_hyperparameters
from l2s.study import expand, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QWEN = {"qwen-1.5b": ("1.5B", "Qwen/Qwen2.5-Math-1.5B", 1), "qwen-7b": ("7B", "Qwen/Qwen2.5-Math-7B", 1),
        "qwen-14b": ("14B", "Qwen/Qwen2.5-14B", 2), "qwen-32b": ("32B", "Qwen/Qwen2.5-32B", 4)}
PAPER_DATASETS = ["gsm8k", "math500", "minerva_math", "olympiadbench", "college_math", "aime24"]


def notebook_parameters(path: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    return {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def steps_of(path: Path):
    return expand(load_config(path))


def test_all_configs_present():
    assert {p.stem for p in CONFIGS} >= {"toy", "micro", *QWEN}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_names_only_existing_things(path):
    steps = steps_of(path)
    earlier: set[str] = set()
    for s in steps:
        notebook = ROOT / s.notebook
        assert notebook.is_file(), f"{s.name}: {s.notebook} does not exist"
        unknown = set(s.parameters) - notebook_parameters(notebook)
        assert not unknown, f"{s.name}: {s.notebook.name} has no parameter(s) {sorted(unknown)}"
        p = s.parameters
        for ref in ("models_run", "merge_run", "run_a", "run_b"):
            if p.get(ref) is not None:
                assert p[ref] in earlier, f"{s.name}: {ref}={p[ref]} is not the run_dir of an earlier step"
        kind = s.notebook.stem
        if kind == "01_merge":
            cfg = MergeConfig(method=p["method"], models=["slow"], base="quick", out="x", params=p.get("params", {}))
            if parse_method(p["method"]).core in ("average", "linear"):
                cfg = MergeConfig(method=p["method"], models=["a", "b"], out="x", params=p.get("params", {}))
            cfg.resolved_params()  # raises on an unknown or out-of-range hyper-parameter
            if parse_method(p["method"]).needs_calibration:
                assert p.get("calibration"), f"{s.name}: {p['method']} needs calibration"
            if p.get("calibration") == "toy":
                calibration_files(p["method"], "toy")
        if kind == "02_evaluate":
            assert sum(p.get(k) is not None for k in ("model", "role", "merge_run")) == 1, s.name
            assert p.get("prompt", "chat") in PROMPTS
            assert set(p.get("datasets", ["toy"])) <= set(DATASETS)
        if kind == "03_adar1":
            fields = {k: v for k, v in p.items() if k not in ("run_dir", "models_run")}
            parse(AdaR1Config, {"long_model": "slow", "short_model": "short", "out": "x", **fields}, s.name)
        earlier.add(s.run_dir.as_posix())
    figures = [s for s in steps if s.notebook.stem == "04_figures"]
    assert len(figures) == 1 and figures[0] is steps[-1]
    # the figures read every run: they rerun whenever any step's inputs change
    assert set(figures[0].reads) | set(figures[0].deps) == {s.name for s in steps[:-1]}
    assert figures[0].parameters["out_dir"] == load_config(path).figures_dir


# A merge's Table 7 rows: its own, and those of the methods it is built from.
TABLE7_ROWS = {"task_arithmetic": ["task_arithmetic"], "ties": ["ties"], "dare": ["dare"],
               "dare_ta": ["dare", "task_arithmetic"], "dare_ties": ["dare", "ties"], "aim": ["aim", "ties"],
               "sens": ["sens"]}


def check_table7(method: str, params: dict, scale: str) -> None:
    """Every hyper-parameter Table 7 gives at ``scale`` for the method (or its parts) is used as given."""
    table7 = {(r.method, r.size): r.params for r in wu2025_hyperparameters().itertuples()}
    for row in TABLE7_ROWS.get(figure_method(method), []):
        for name, value in table7.get((row, scale), {}).items():
            assert params.get(name) == value, f"{method} at {scale}: {name}={params.get(name)} != Table 7 {value}"


def _merges(steps, size_prefix):
    return {s.parameters["method"]: s.parameters.get("params", {}) for s in steps
            if s.notebook.stem == "01_merge" and s.name.startswith(size_prefix) and "sweep" not in s.name}


def test_toy_config_covers_every_method_sizes_sweep_and_adar1():
    steps = steps_of(ROOT / "configs" / "toy.yaml")
    names = {s.name for s in steps}
    for size in ("s", "m", "l"):
        assert {f"toy-{size}-models", f"toy-{size}-quick", f"toy-{size}-slow", f"toy-{size}-short"} <= names
        merges = [s for s in steps if s.notebook.stem == "01_merge" and s.name.startswith(f"toy-{size}-")]
        evaluated = {s.parameters["merge_run"] for s in steps if s.parameters.get("merge_run")}
        assert {m.run_dir.as_posix() for m in merges} <= evaluated, f"a merge of {size} is not evaluated"
    # every core method of the merge registry (linear: Ada-R1's merge) and both modifiers on s
    used = {c for m in _merges(steps, "toy-s-") for c in parse_method(m).components}
    assert used | {"linear"} == set(METHODS)
    # Table 7 by scale: s <- 1.5B, m <- 7B, l <- 14B
    for prefix, scale in (("toy-s-", "1.5B"), ("toy-m-", "7B"), ("toy-l-", "14B")):
        for method, params in _merges(steps, prefix).items():
            check_table7(method, params, scale)
    # the merge hyper-parameter search on s (l2s sweep): TA's α, adaptive against a grid the study runs, and
    # TIES's k; each search sees at least 4 points
    sweeps = [s for s in steps if s.notebook.stem == "06_sweep"]
    assert all(s.name.startswith("toy-s-") and s.parameters["models_run"] == "runs/toy-s-models"
               for s in sweeps), [s.name for s in sweeps]
    assert {("task_arithmetic", "alpha"), ("ties", "k")} <= {(s.parameters["method"], s.parameters["param"])
                                                              for s in sweeps}
    assert all(s.parameters.get("budget", s.parameters.get("grid", 0)) >= 4 for s in sweeps)
    grids = {s.run_dir.as_posix() for s in sweeps if s.parameters.get("grid")}
    references = {s.parameters["reference_run"] for s in sweeps if s.parameters.get("reference_run")}
    assert references and references <= grids
    assert [s.name for s in steps if s.notebook.stem == "03_adar1"] == ["toy-s-adar1"]


@pytest.mark.parametrize("name", sorted(QWEN))
def test_qwen_configs_follow_the_paper(name):
    scale, quick, tp = QWEN[name]
    steps = steps_of(ROOT / "configs" / f"{name}.yaml")
    models = steps[0].parameters
    assert models["quick"] == quick and models["slow"] == f"deepseek-ai/DeepSeek-R1-Distill-Qwen-{scale}"
    assert canonical_size(models["size"]) == scale and models["toy_size"] is None
    evals = [s for s in steps if s.notebook.stem == "02_evaluate"]
    for s in evals:
        p = s.parameters
        assert p["datasets"] == PAPER_DATASETS and p["backend"] == "vllm" and p["tensor_parallel_size"] == tp
        assert p.get("temperature", 0.0) == 0.0
        want = ("cot", 8192) if p.get("role") == "quick" else ("qwen25-math-cot", 10240)
        assert (p["prompt"], p["max_new_tokens"]) == want, s.name
    merges = _merges(steps, f"{name}-")
    assert {"average", "task_arithmetic", "ties"} <= set(merges)
    for method, params in merges.items():
        check_table7(method, params, scale)


def test_study_fills_items_of_grid_values(tmp_path):
    """``"{merge[params]}"`` keeps the mapping (how the configs pair a method with its parameters)."""
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump({"steps": [{
        "notebook": "nb.ipynb", "run_dir": "runs/{merge[name]}",
        "grid": {"merge": [{"name": "ties", "params": {"k": 0.8}, "cal": ["a", "b"]}]},
        "parameters": {"params": "{merge[params]}", "first": "{merge[cal][0]}", "label": "x-{merge[name]}"}}]}))
    (step,) = expand(load_config(cfg))
    assert step.parameters["params"] == {"k": 0.8} and step.parameters["first"] == "a"
    assert step.parameters["label"] == "x-ties" and step.run_dir == Path("runs/ties")
    cfg.write_text(yaml.safe_dump({"steps": [{
        "notebook": "nb.ipynb", "run_dir": "r", "grid": {"merge": [{"name": "ties"}]},
        "parameters": {"params": "{merge[params]}"}}]}))
    with pytest.raises(ValueError, match="no item 'params'"):
        expand(load_config(cfg))
