"""The real sizes' study on real-shaped stand-ins (configs/nano.yaml): each step is its real config's
step (configs/qwen-7b.yaml, configs/qwen-1.5b.yaml) with only the documented differences, and the
whole study runs end to end — calibration, every merge, evaluation on the six benchmarks, figures
with measured nano panels — with nothing prepared by hand."""

from pathlib import Path

import pandas as pd
import pytest
from conftest import study_in

from l2s import io
from l2s.cli import main
from l2s.study import MARKER, expand, load_config

ROOT = Path(__file__).resolve().parent.parent
NANO = ROOT / "configs" / "nano.yaml"
REAL = {"nano-7b": ROOT / "configs" / "qwen-7b.yaml", "nano-1.5b": ROOT / "configs" / "qwen-1.5b.yaml"}
# What the nano study may change in a step: the models, the data, the budget and the backend (and for
# Ada-R1: K, the training problems and the DPO preset).
NANO_ONLY = {"data_dir", "limit", "calibration_samples", "train_data_dir", "eval_limit"}
DIFFERS = {"quick", "slow", "standins", "tokenizers", "s1k", "mix", "short_cot", "size", "max_new_tokens",
           "backend", "engine", "data_parallel_size", "gpu_memory_utilization", "run_a", "run_b", "models_run",
           "merge_run", "run_dir", "k", "train_dataset", "sample_max_new_tokens", "eval_max_new_tokens",
           "dpo_preset", "variants"}  # variants: see the nano-7b-adar1 step's comment
ADAR1_IN_NANO = {"nano-7b"}  # CI runs Ada-R1 on one layout (the 7B one) to keep its time in bounds


def _steps(path, prefix, adar1=True):
    return [s for s in expand(load_config(path)) if s.name.startswith(prefix) and s.notebook.stem != "04_figures"
            and (adar1 or s.notebook.stem != "03_adar1")]


@pytest.mark.parametrize("family", sorted(REAL))
def test_nano_runs_every_step_of_its_real_config(family):
    real_prefix = REAL[family].stem + "-"
    adar1 = family in ADAR1_IN_NANO
    nano, real = _steps(NANO, family + "-"), _steps(REAL[family], real_prefix, adar1)
    assert [s.name.removeprefix(family + "-") for s in nano] == [s.name.removeprefix(real_prefix) for s in real]
    for n, r in zip(nano, real):
        assert n.notebook == r.notebook, n.name
        extra = set(n.parameters) - set(r.parameters) - DIFFERS
        assert extra <= NANO_ONLY, f"{n.name}: parameters only nano has: {sorted(extra - NANO_ONLY)}"
        for key in set(r.parameters) - DIFFERS:
            assert n.parameters.get(key) == r.parameters[key], f"{n.name}: {key} differs from {r.name}"
    models = nano[0].parameters
    assert models["standins"] == REAL[family].stem and models["calibration"] == "s1k"


@pytest.fixture(scope="module")
def nano_study(tmp_path_factory, shared_data):
    """configs/nano.yaml with cwd = a tmp root whose ../shared is the shared folder, a tmp L2S_CACHE."""
    top = tmp_path_factory.mktemp("nano")
    root = top / "repo"
    (root / "tests").mkdir(parents=True)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    (root / "tests" / "data").symlink_to(ROOT / "tests" / "data")  # s1K fixture, nano-train, short-CoT
    (top / "shared").symlink_to(shared_data.parent)
    with study_in(root, NANO) as code:
        yield root, code


@pytest.mark.slow
def test_nano_study_runs_end_to_end(nano_study):
    root, code = nano_study
    assert code == 0
    steps = expand(load_config(NANO))
    for s in steps:
        assert (root / s.run_dir / MARKER).is_file(), s.name
    runs = root / "runs"
    for family, size, tied in (("nano-7b", "nano-7B", False), ("nano-1.5b", "nano-1.5B", True)):
        models = io.read_json(runs / f"{family}-models" / "models.json")
        assert models["size"] == size and models["standins"] == family.replace("nano", "qwen")
        manifest = io.read_json(models["calibration"]["manifest"])
        assert manifest["n"] == 4 and set(manifest["files"]) == {"s1k-short.jsonl", "s1k-long.jsonl"}
        quick = io.read_json(Path(models["quick"]) / "config.json")
        assert quick["tie_word_embeddings"] is tied and quick["max_position_embeddings"] == 4096
        merges = [s for s in steps if s.notebook.stem == "01_merge" and s.name.startswith(family + "-")]
        for s in merges:
            record = io.read_json(root / s.run_dir / "merge.json")
            merged = io.read_json(Path(record["path"]) / "config.json")
            assert merged["tie_word_embeddings"] is False and merged["max_position_embeddings"] == 131072, s.name
            if s.parameters.get("calibration") == "s1k":
                assert record["l2s_merge"]["config"]["calibration"], s.name
        for s in steps:
            if s.notebook.stem == "02_evaluate" and s.name.startswith(family + "-"):
                metrics = io.read_json(root / s.run_dir / "metrics.json")
                assert set(metrics["datasets"]) == {"gsm8k", "math500", "minerva_math", "olympiadbench",
                                                    "college_math", "aime24"}, s.name
                assert metrics["overall"]["n"] == 12 and metrics["token_limit"]["max_new_tokens"] == 16
    adar1 = io.read_json(runs / "nano-7b-adar1" / "summary.json")
    assert set(adar1["runs"]) == {"long", "merge", "bilevel", "group", "sft", "shortest_vs_longest"}
    assert all(p["n_rows"] > 0 for p in adar1["pairs"].values())
    pairs = io.read_jsonl(runs / "nano-7b-adar1" / "pairs-bilevel" / "pairs.jsonl")
    assert pairs[0]["prompt_text"].startswith("<｜begin▁of▁sentence｜>") and pairs[0]["prompt_text"].endswith(
        "<｜Assistant｜><think>\n")  # R1's chat template
    table = pd.read_csv(root / "figures" / "length_accuracy.csv")
    panels = set(table["panel"])
    assert {"nano-7B — measured", "nano-1.5B — measured"} <= panels
    measured = table[table["panel"] == "nano-7B — measured"]
    # slow, quick, the 10 merges, and Ada-R1's plain (linear) merge and 4 variants, each against the slow model
    roles = measured["role"].value_counts().to_dict()
    assert roles == {"slow": 1, "quick": 1, "merged": 11, "adar1": 4}, roles


@pytest.mark.slow
def test_nano_study_second_run_has_nothing_to_do(nano_study, capsys):
    root, _ = nano_study
    capsys.readouterr()
    assert main(["study", "--config", str(NANO)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "study nano: 40 done"  # the figures too: nothing they read changed
