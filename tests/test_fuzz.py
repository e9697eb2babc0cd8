"""Bad inputs on every command, kills with resume, and determinism, as a new user would try them.

Each bad-input case runs the CLI (``l2s.cli.main`` in-process: a subprocess per case would cost seconds
of imports) and checks the contract of :mod:`l2s.cli`: exit status 2; one message ``l2s <cmd>: error:``
that names the culprit (the file, its line, the field or option); no traceback; nothing left behind
(no output, no hidden temporary sibling, an existing directory untouched). A few cases run as real
subprocesses, to see the real stderr. The kill cases (``slow``) SIGTERM / SIGKILL a merge and a sampled
evaluation mid-way, then rerun it: the temporary directory is gone (removed on SIGTERM, swept after
SIGKILL), the grading workers died with their parent, and the resumed output has the bytes of an
uninterrupted run. The determinism cases run a command twice on the same inputs and seed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from l2s import io
from l2s.cli import describe, main

BAD_UTF8 = b'{"id": "a", "problem": "caf\xe9", "answer": "1", "level": 1}\n'
SHARED_TOKENIZERS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tokenizers"
FIXTURE_S1K = Path(__file__).parent / "data" / "s1k-sample.jsonl"


# ------------------------------------------------------------------------------------------ inputs

@pytest.fixture(scope="module")
def world(micro_model, tmp_path_factory):
    """Valid inputs the cases spoil one at a time: the micro model (and a copy to merge with it), a
    truncated copy, toy data, two sampled runs for ``pairs``."""
    from l2s.data import load_benchmark

    root = tmp_path_factory.mktemp("fuzz-world")
    w = {"model": Path(micro_model), "root": root}
    w["model2"] = root / "model2"
    shutil.copytree(micro_model, w["model2"])
    w["truncated"] = root / "truncated"
    shutil.copytree(micro_model, w["truncated"])
    shard = w["truncated"] / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    rows = [{k: r[k] for k in ("id", "problem", "answer", "level")} for r in load_benchmark("toy")[:4]]
    w["rows"] = rows
    w["data"] = root / "data"
    for split in ("test", "train"):
        io.write_jsonl(w["data"] / "toy" / f"{split}.jsonl", rows)
    for style in ("long", "short"):
        io.write_jsonl(root / f"run-{style}" / "generations.jsonl", generations(style))
        w[style] = root / f"run-{style}"
    w["pairs"] = root / "pairs"
    assert main(["pairs", "--long", str(w["long"]), "--short", str(w["short"]), "--out", str(w["pairs"])]) == 0
    return w


def generations(style: str) -> list[dict]:
    """Rows of a sampled run: two problems, two samples each; the long model right, the short one wrong."""
    return [{"id": pid, "dataset": "toy", "level": 1, "sample": s, "prompt": f"Q{pid}", "messages": None,
             "response": f"{style} answer {pid}-{s} \\boxed{{{'G' if style == 'long' else 'B'}}}",
             "correct": style == "long", "n_tokens": 5 + s + (10 if style == "long" else 0)}
            for pid in ("p1", "p2") for s in range(2)]


def data_dir(tmp: Path, text: bytes | str, dataset: str = "toy", split: str = "test") -> Path:
    """A data directory whose ``<dataset>/<split>.jsonl`` is ``text``."""
    path = tmp / "data" / dataset / f"{split}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp / "data"


def write(tmp: Path, name: str, text: bytes | str) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def user_dir(tmp: Path) -> Path:
    """A directory of the user's own, which --overwrite must not replace."""
    d = tmp / "mine"
    write(d, "notes.txt", "my own work")
    return d


def toy_row(**change) -> str:
    row = {"id": "a", "problem": "The ball is under cup B . Moves : BG . Where is the ball ?", "answer": "G",
           "level": 1, **change}
    return json.dumps(row) + "\n"


# ------------------------------------------------------------------------------------------ checks

@dataclass
class Case:
    """argv (from the world and a fresh tmp dir), a regex the message must match (the culprit), and
    the paths that must not exist afterwards (``out``); ``keep``: paths that must be unchanged."""

    id: str
    argv: Callable[[dict, Path], list[str]]
    culprit: str
    out: tuple[str, ...] = ("out",)
    keep: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)
    patch: Callable | None = None  # (monkeypatch) -> None: simulate a full or read-only disk
    xfail: str | None = None  # owned by another module, fixed there


def leftovers(root: Path) -> list[str]:
    """Hidden temporary siblings anywhere under ``root``."""
    return [str(p) for p in root.rglob(".*") if io.TEMP_NAME.match(p.name) or io.PARKED_NAME.match(p.name)]


def snapshot(paths: list[Path]) -> dict:
    return {str(p): sorted((str(f.relative_to(p)), f.read_bytes()) for f in p.rglob("*") if f.is_file())
            if p.is_dir() else (p.read_bytes() if p.exists() else None) for p in paths}


def check_case(case: Case, world, tmp_path, capsys, monkeypatch):
    for k, v in {"L2S_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 **case.env}.items():
        monkeypatch.setenv(k, v)
    offline(monkeypatch)
    argv = case.argv(world, tmp_path)
    keep = [tmp_path / k for k in case.keep]
    before = snapshot(keep)
    capsys.readouterr()
    if case.patch:
        case.patch(monkeypatch)
    rc = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    command = argv[0]
    assert rc == 2, f"exit status {rc}, stderr: {err}"
    assert "Traceback" not in err, err
    message = [line for line in err.splitlines() if line.startswith(f"l2s {command}: error: ")]
    assert len(message) == 1, f"expected one 'l2s {command}: error:' line, got: {err}"
    assert re.search(case.culprit, message[0]), f"{case.culprit!r} not in: {message[0]}"
    for name in case.out:
        assert not (tmp_path / name).exists(), f"{name} was left behind"
    assert leftovers(tmp_path) == [] and leftovers(world["root"]) == []
    assert snapshot(keep) == before, "an existing path was changed"


def offline(monkeypatch) -> None:
    """No hub (this machine has no network: without this, each hub call retries for seconds). The
    environment variables are read when the hub libraries are imported, maybe before this test."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def cases(*table: Case):
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=False, reason=c.xfail)] if c.xfail else [])
            for c in table]


def _full_disk(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def _read_only(monkeypatch):
    real = os.mkdir

    def mkdir(path, *a, **k):
        if ".tmp" in str(path) or str(path).endswith("out"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)


def M(w, key):
    return str(w[key])


# ------------------------------------------------------------------------------------------ merge

MERGE = cases(
    Case("missing-model-dir", lambda w, t: ["merge", "--method", "average", "--models",
                                            f"{M(w, 'model')},{t}/no/such/model", "--out", f"{t}/out"],
         r"model directory .*no/such/model not found"),
    Case("truncated-shard", lambda w, t: ["merge", "--method", "average", "--models",
                                          f"{M(w, 'model')},{M(w, 'truncated')}", "--out", f"{t}/out"],
         r"truncated/model.safetensors: corrupt or unreadable safetensors shard.*re-download or rebuild"),
    Case("overwrite-user-dir", lambda w, t: ["merge", "--method", "average", "--models",
                                             f"{M(w, 'model')},{M(w, 'model2')}", "--out", str(user_dir(t)),
                                             "--overwrite"],
         r"mine exists and was not written by l2s", out=(), keep=("mine",)),
    Case("disk-full", lambda w, t: ["merge", "--method", "average", "--models", f"{M(w, 'model')},{M(w, 'model2')}",
                                    "--out", f"{t}/out"], r"disk is full", patch=_full_disk),
    Case("read-only", lambda w, t: ["merge", "--method", "average", "--models", f"{M(w, 'model')},{M(w, 'model2')}",
                                    "--out", f"{t}/out"], r"cannot write .*out.*read-only", patch=_read_only),
    Case("no-permission", lambda w, t: ["merge", "--method", "average", "--models",
                                        f"{M(w, 'model')},{M(w, 'model2')}", "--out", "/sys/l2s-fuzz/out"],
         r"cannot access /sys/l2s-fuzz.*permission denied", out=()),
    Case("calibration-not-utf8", lambda w, t: ["merge", "--method", "aim", "--base", M(w, "model"), "--models",
                                               M(w, "model2"), "--calibration", str(write(t, "cal.txt", b"ok\n\xff\n")),
                                               "--out", f"{t}/out"], r"cal.txt:2: not UTF-8"),
    Case("config-not-a-mapping", lambda w, t: ["merge", "--config", str(write(t, "m.yaml", "- a\n- b\n"))],
         r"m.yaml"),
    Case("config-wrong-type", lambda w, t: ["merge", "--config", str(write(
        t, "m.yaml", f"method: average\nmodels: [{w['model']}, {w['model2']}]\nout: {t}/out\nseed: abc\n"))],
         r"m.yaml: seed must be int"),
)


@pytest.mark.parametrize("case", MERGE)
def test_merge_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ eval

def _eval(w, t, *extra, data=None, model=None):
    return ["eval", "--model", model or M(w, "model"), "--datasets", "toy", "--data-dir", str(data or w["data"]),
            "--prompt", "chat", "--backend", "hf", "--max-new-tokens", "2", "--out", f"{t}/out", *extra]


EVAL = cases(
    Case("missing-model-dir", lambda w, t: _eval(w, t, model=f"{t}/runs/merged/model"),
         r"model directory .*runs/merged/model not found"),
    Case("hub-id-offline", lambda w, t: _eval(w, t, model="models/quick"),
         r"model directory models/quick not found, and the hub gave no repo"),
    Case("truncated-shard", lambda w, t: _eval(w, t, model=M(w, "truncated")),
         r"truncated/model.safetensors: corrupt .*truncated"),
    Case("data-not-utf8", lambda w, t: _eval(w, t, data=data_dir(t, toy_row().encode() + BAD_UTF8)),
         r"toy/test.jsonl:2: not UTF-8"),
    Case("answer-null", lambda w, t: _eval(w, t, data=data_dir(t, toy_row() + toy_row(id="b", answer=None))),
         r"toy/test.jsonl:2 .*'answer'"),
    Case("answer-list", lambda w, t: _eval(w, t, data=data_dir(t, toy_row(answer=[1, 2]))),
         r"toy/test.jsonl:1 .*'answer' must be a non-empty string or a number"),
    Case("row-not-object", lambda w, t: _eval(w, t, data=data_dir(t, toy_row() + "[1, 2]\n")),
         r"toy/test.jsonl:2: expected a JSON object"),
    Case("torn-json", lambda w, t: _eval(w, t, data=data_dir(t, '{"id": "a", "problem\n' + toy_row())),
         r"toy/test.jsonl:1: corrupt JSON line"),
    Case("problem-number", lambda w, t: _eval(w, t, data=data_dir(t, toy_row(problem=7))),
         r"toy/test.jsonl:1 .*'problem' must be a non-empty string"),
    Case("missing-data-file", lambda w, t: _eval(w, t, data=t / "nodata"), r"nodata/toy/test.jsonl not found"),
    Case("hub-offline", lambda w, t: ["eval", "--model", M(w, "model"), "--datasets", "gsm8k", "--prompt", "chat",
                                      "--backend", "hf", "--out", f"{t}/out"], r"gsm8k.*--data-dir"),
    Case("exemplars-not-utf8", lambda w, t: ["eval", "--model", M(w, "model"), "--datasets", "toy", "--data-dir",
                                             str(w["data"]), "--prompt", "cot", "--exemplars",
                                             str(write(t, "ex.jsonl", BAD_UTF8)), "--backend", "hf", "--out",
                                             f"{t}/out"], r"ex.jsonl:1: not UTF-8"),
    Case("generations-edited", lambda w, t: _spoiled_run(w, t),
         r"out/generations.jsonl:1: not a generations row", out=()),
    Case("config-list", lambda w, t: ["eval", "--config", str(write(t, "e.json", "[1]"))], r"e.json"),
)


def _spoiled_run(w, t) -> list[str]:
    """A run whose generations.jsonl was edited by hand (a row without its key fields), resumed."""
    argv = _eval(w, t, "--limit", "1")
    assert main(argv) == 0
    (t / "out" / "generations.jsonl").write_text('{"response": "x"}\n')
    return argv


@pytest.mark.parametrize("case", EVAL)
def test_eval_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ score

def _score(w, t, responses, *extra):
    return ["score", "--responses", str(responses), "--tokenizer", M(w, "model"), "--out", f"{t}/out", *extra]


def _resp(**change) -> str:
    return json.dumps({"response": "\\boxed{1}", "answer": "1", **change}) + "\n"


SCORE = cases(
    Case("not-utf8", lambda w, t: _score(w, t, write(t, "r.jsonl", _resp().encode() + b'{"response": "\xff"}\n')),
         r"r.jsonl:2: not UTF-8"),
    Case("answer-null", lambda w, t: _score(w, t, write(t, "r.jsonl", _resp() + _resp(answer=None))),
         r"r.jsonl:2: field 'answer' must be a non-empty string or a number, got null"),
    Case("response-number", lambda w, t: _score(w, t, write(t, "r.jsonl", _resp(response=3))),
         r"r.jsonl:1: field 'response' must be a string"),
    Case("level-text", lambda w, t: _score(w, t, write(t, "r.jsonl", _resp(level="hard"))),
         r"r.jsonl:1: field 'level' must be int"),
    Case("empty", lambda w, t: _score(w, t, write(t, "r.jsonl", "")), r"r.jsonl: no rows"),
    Case("missing-tokenizer", lambda w, t: ["score", "--responses", str(write(t, "r.jsonl", _resp())), "--tokenizer",
                                            f"{t}/no/such/tok", "--out", f"{t}/out"],
         r"directory .*no/such/tok not found"),
    Case("overwrite-user-dir", lambda w, t: _score(w, t, write(t, "r.jsonl", _resp()))[:-1] + [str(user_dir(t)),
                                                                                             "--overwrite"],
         r"mine exists and was not written by l2s", out=(), keep=("mine",)),
    Case("missing-gold", lambda w, t: _score(w, t, write(t, "r.jsonl", json.dumps({"response": "x", "dataset": "toy",
                                                                                   "id": "zz"}) + "\n"),
                                             "--data-dir", str(w["data"])), r"r.jsonl:1: no problem with id 'zz'"),
)


@pytest.mark.parametrize("case", SCORE)
def test_score_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ pairs

def _gens(t, name, rows=None, raw: bytes | None = None) -> Path:
    path = t / name / "generations.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path.parent


def _pairs(w, t, long=None, *extra):
    return ["pairs", "--long", str(long or w["long"]), "--short", str(w["short"]), "--out", f"{t}/out", *extra]


PAIRS = cases(
    Case("correct-text", lambda w, t: _pairs(w, t, _gens(t, "l", [{**r, "correct": "y"} for r in generations("long")])),
         r"l/generations.jsonl:1: 'correct' must be a bool"),
    Case("sample-text", lambda w, t: _pairs(w, t, _gens(t, "l", [{**r, "sample": "0"} for r in generations("long")])),
         r"l/generations.jsonl:1: 'sample' must be a non-negative int"),
    Case("not-utf8", lambda w, t: _pairs(w, t, _gens(t, "l", raw=b'{"id": "\xff"}\n')),
         r"l/generations.jsonl:1: not UTF-8"),
    Case("row-list", lambda w, t: _pairs(w, t, _gens(t, "l", raw=b"[]\n")),
         r"l/generations.jsonl:1: expected a JSON object"),
    Case("missing-run", lambda w, t: _pairs(w, t, t / "nowhere"),
         r"nowhere not found: pass an evaluation run directory"),
    Case("problems-list", lambda w, t: _pairs(w, t, None, "--problems", str(write(t, "p.jsonl", "[1]\n"))),
         r"p.jsonl:1: expected a JSON object"),
    Case("overwrite-user-dir", lambda w, t: _pairs(w, t)[:-1] + [str(user_dir(t)), "--overwrite"],
         r"mine exists and was not written by l2s", out=(), keep=("mine",)),
)


@pytest.mark.parametrize("case", PAIRS)
def test_pairs_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ sample

def _sample(w, t, *extra, long=None, data=None):
    return ["sample", "--long", long or M(w, "model"), "--short", M(w, "model2"), "--dataset", "toy",
            "--data-dir", str(data or w["data"]), "--k", "2", "--max-new-tokens", "2", "--backend", "hf",
            "--out", f"{t}/out", *extra]


SAMPLE = cases(
    Case("missing-long-model", lambda w, t: _sample(w, t, long=f"{t}/models/long/x"),
         r"long model directory .*models/long/x not found"),
    Case("answer-null", lambda w, t: _sample(w, t, data=data_dir(t, toy_row(answer=None), split="train")),
         r"toy/train.jsonl:1 .*'answer'"),
    Case("not-utf8", lambda w, t: _sample(w, t, data=data_dir(t, BAD_UTF8, split="train")),
         r"toy/train.jsonl:1: not UTF-8"),
    Case("k-zero", lambda w, t: _sample(w, t, "--k", "0"), r"\bk\b.*>= 1"),
)


@pytest.mark.parametrize("case", SAMPLE)
def test_sample_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ dpo, sft

DPO = cases(
    Case("missing-pairs", lambda w, t: ["dpo", "--model", M(w, "model"), "--pairs", f"{t}/nopairs", "--out",
                                        f"{t}/out"], r"nopairs"),
    Case("pairs-not-pairs", lambda w, t: ["dpo", "--model", M(w, "model"), "--pairs", str(user_dir(t)), "--out",
                                          f"{t}/out"], r"mine"),
    Case("missing-model", lambda w, t: ["dpo", "--model", f"{t}/no/such/model", "--pairs", str(w["pairs"]), "--out",
                                        f"{t}/out"], r"no/such/model"),
    Case("config-not-utf8", lambda w, t: ["dpo", "--model", M(w, "model"), "--pairs", str(w["long"]), "--config",
                                          str(write(t, "d.yaml", b"beta: 0.1\n# \xff\n")), "--out", f"{t}/out"],
         r"d.yaml"),
)

SFT = cases(
    Case("data-not-utf8", lambda w, t: ["sft", "--model", M(w, "model"), "--data", str(write(t, "s.jsonl", BAD_UTF8)),
                                        "--out", f"{t}/out"], r"s.jsonl:1: not UTF-8"),
    Case("data-row-list", lambda w, t: ["sft", "--model", M(w, "model"), "--data", str(write(t, "s.jsonl", "[]\n")),
                                        "--out", f"{t}/out"], r"s.jsonl:1: expected a JSON object"),
    Case("missing-data", lambda w, t: ["sft", "--model", M(w, "model"), "--data", f"{t}/none.jsonl", "--out",
                                       f"{t}/out"], r"none.jsonl not found"),
    Case("missing-model", lambda w, t: ["sft", "--model", f"{t}/no/such/model", "--data",
                                        str(write(t, "s.jsonl", '{"prompt": "a", "completion": "b"}\n')),
                                        "--out", f"{t}/out"], r"no/such/model"),
)


@pytest.mark.parametrize("case", DPO)
def test_dpo_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", SFT)
def test_sft_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ figures, study

def _metrics_list(t):
    write(t, "runs/r1/metrics.json", "[]")
    write(t, "runs/r1/config.json", json.dumps({"model": "m", "datasets": ["toy"], "out": "runs/r1"}))
    return t / "runs"


FIGURES = cases(
    Case("empty-runs", lambda w, t: ["figures", "--runs", str((t / "runs").mkdir() or t / "runs"), "--out",
                                     f"{t}/out"], r"runs"),
    Case("metrics-list", lambda w, t: ["figures", "--runs", str(_metrics_list(t)), "--out", f"{t}/out"],
         r"metrics.json"),
    Case("missing-runs", lambda w, t: ["figures", "--runs", f"{t}/noruns", "--out", f"{t}/out"], r"noruns"),
)

STUDY = cases(
    Case("missing-config", lambda w, t: ["study", "--config", f"{t}/none.yaml"], r"none.yaml", out=()),
    Case("config-not-utf8", lambda w, t: ["study", "--config", str(write(t, "s.yaml", b"steps: []\n# \xff\n"))],
         r"s.yaml", out=()),
    Case("config-list", lambda w, t: ["study", "--config", str(write(t, "s.yaml", "- 1\n"))], r"s.yaml", out=()),
)


@pytest.mark.parametrize("case", FIGURES)
def test_figures_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", STUDY)
def test_study_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ toy, standins

TOY = cases(
    Case("negative-n", lambda w, t: ["toy", "data", "--out", f"{t}/out", "--n-train", "-1"], r"--n-train must be >= 0"),
    Case("overwrite-user-dir", lambda w, t: ["toy", "data", "--out", str(user_dir(t)), "--overwrite", "--n-train", "1"],
         r"mine exists and was not written by l2s", out=(), keep=("mine",)),
    Case("build-over-user-dir", lambda w, t: ["toy", "build", "--size", "micro", "--out", str(user_dir(t)),
                                              "--overwrite"],
         r"mine exists and was not written by l2s", out=("cache",), keep=("mine",)),
    Case("threads-zero", lambda w, t: ["toy", "build", "--size", "micro", "--out", f"{t}/out", "--threads", "0"],
         r"--threads must be >= 1"),
    Case("out-is-a-file", lambda w, t: ["toy", "data", "--out", str(write(t, "f/out", "x")), "--overwrite"],
         r"f/out exists and was not written by l2s", out=(), keep=("f",)),
)

STANDINS = cases(
    Case("missing-tokenizer", lambda w, t: ["standins", "--layout", "qwen-7b", "--qwen-tokenizer", f"{t}/no/tok",
                                            "--r1-tokenizer", f"{t}/no/tok2", "--out", f"{t}/out"], r"no/tok"),
    Case("overwrite-user-dir", lambda w, t: ["standins", "--layout", "qwen-7b", "--qwen-tokenizer",
                                             str(SHARED_TOKENIZERS / "qwen2.5"), "--r1-tokenizer",
                                             str(SHARED_TOKENIZERS / "deepseek-r1-distill-qwen"), "--out",
                                             str(user_dir(t)), "--overwrite"], r"mine", out=(), keep=("mine",)),
)


@pytest.mark.parametrize("case", TOY)
def test_toy_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", STANDINS)
def test_standins_bad_input(case, world, tmp_path, capsys, monkeypatch):
    if case.id == "overwrite-user-dir" and not SHARED_TOKENIZERS.is_dir():
        pytest.skip(f"shared tokenizers not found at {SHARED_TOKENIZERS}")
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ calibration, mix

def _s1k(rows: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


CALIBRATION = cases(
    Case("not-utf8", lambda w, t: ["calibration", "s1k", "--n", "2", "--source",
                                   str(write(t, "s.jsonl", FIXTURE_S1K.read_bytes() + b'{"question": "\xff"}\n')),
                                   "--out-dir", f"{t}/out"], r"s.jsonl:\d+: not UTF-8"),
    Case("row-list", lambda w, t: ["calibration", "s1k", "--n", "2", "--source",
                                   str(write(t, "s.jsonl", FIXTURE_S1K.read_bytes() + b"[1]\n")),
                                   "--out-dir", f"{t}/out"], r"s.jsonl:\d+: expected a JSON object"),
    Case("missing-source", lambda w, t: ["calibration", "s1k", "--source", f"{t}/none.jsonl", "--out-dir", f"{t}/out"],
         r"none.jsonl not found"),
    Case("hub-offline", lambda w, t: ["calibration", "s1k", "--out-dir", f"{t}/out"], r"s1K|hub|--source"),
)


def _mix_data(t, gsm8k: str) -> Path:
    data_dir(t, gsm8k, "gsm8k", "train")
    data_dir(t, json.dumps({"problem": "p", "solution": "\\boxed{1}", "type": "Algebra", "level": "Level 1"}) + "\n",
             "math", "train")
    data_dir(t, json.dumps({"ID": "1983-1", "Year": 1983, "Question": "q", "Answer": 1}) + "\n",
             "aime_1983_2023", "train")
    data_dir(t, json.dumps({"problem": "p", "answer": "1", "unique_id": "test/x/1.json"}) + "\n", "math500", "test")
    return t / "data"


MIX = cases(
    Case("answer-null", lambda w, t: ["mix", "--out", f"{t}/out", "--total", "5", "--data-dir",
                                      str(_mix_data(t, json.dumps({"question": "q", "answer": None}) + "\n"))],
         r"gsm8k/train.jsonl:1 .*'answer'"),
    Case("not-utf8", lambda w, t: ["mix", "--out", f"{t}/out", "--total", "5", "--data-dir", str(_bad_gsm8k(t))],
         r"gsm8k/train.jsonl:1: not UTF-8"),
    Case("bad-ratio", lambda w, t: ["mix", "--out", f"{t}/out", "--ratio", "1:x", "--data-dir", str(w["data"])],
         r"ratio"),
    Case("missing-data", lambda w, t: ["mix", "--out", f"{t}/out", "--data-dir", f"{t}/nodata"], r"nodata"),
)


def _bad_gsm8k(t) -> Path:
    data = _mix_data(t, "")
    (data / "gsm8k" / "train.jsonl").write_bytes(b'{"question": "q\xff", "answer": "#### 1"}\n')
    return data


@pytest.mark.parametrize("case", CALIBRATION)
def test_calibration_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


@pytest.mark.parametrize("case", MIX)
def test_mix_bad_input(case, world, tmp_path, capsys, monkeypatch):
    check_case(case, world, tmp_path, capsys, monkeypatch)


# ------------------------------------------------------------------------------------------ real stderr

def _l2s(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "l2s", *argv], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})})


def test_real_stderr_has_one_message_and_debug_adds_the_traceback(world, tmp_path):
    """In a real process: exit 2 and one line naming the file; --debug prints the traceback too."""
    data = data_dir(tmp_path, toy_row() + toy_row(id="b", answer=None))
    argv = ["eval", "--model", M(world, "model"), "--datasets", "toy", "--data-dir", str(data), "--backend", "hf",
            "--out", str(tmp_path / "out")]
    r = _l2s(*argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert re.search(r"^l2s eval: error: .*toy/test.jsonl:2 \(row 1\): field 'answer' is null", r.stderr, re.M)
    r = _l2s("--debug", *argv)
    assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr and "l2s eval: error:" in r.stderr
    assert not (tmp_path / "out").exists()


def test_unexpected_errors_are_one_line_with_the_debug_hint():
    class Odd(Exception):
        pass

    assert describe(Odd("first\nsecond")) == "unexpected Odd: first; rerun with --debug for the traceback"
    assert "lacks the field 'answer'" in describe(KeyError("answer"))
    assert "AttributeError" in describe(AttributeError("'list' object has no attribute 'get'"))
    worker = RuntimeError("worker 0 failed:\nTraceback (most recent call last):\n  File x\nValueError: bad row")
    assert describe(worker) == "worker 0 failed: ValueError: bad row; rerun with --debug for the traceback"
    assert "hub cannot be reached" in describe(ConnectionError("Couldn't reach 'x' on the network"))
    full = RuntimeError("writing /d/.out.node-1.123.0123abcd.tmp: no space")
    full.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert describe(full) == "writing /d/out: no space: the disk is full: free some space or choose an output path " \
                             "on another disk"


# ------------------------------------------------------------------------------------------ kills, umask, overwrite

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_swept(tmp_path):
    dead, host = _dead_pid(), io.HOST
    stale_dir = tmp_path / f".out.{host}.{dead}.0123abcd.tmp"
    write(stale_dir, "model-00001-of-00002.safetensors", "partial")
    stale_file = write(tmp_path, f".metrics.json.{host}.{dead}.89abcdef.tmp", "{")
    live = tmp_path / f".other.{host}.{os.getpid()}.76543210.tmp"
    elsewhere = tmp_path / f".other.another-host.{dead}.76543210.tmp"  # a shared disk: not ours to judge
    live.mkdir()
    elsewhere.mkdir()
    parked = write(tmp_path, f".prev.{host}.{dead}.old/a.txt", "previous output").parent  # killed mid-replace
    with io.atomic_output_dir(tmp_path / "out") as tmp:
        write(tmp, "a.txt", "1")
    assert not stale_dir.exists() and not stale_file.exists() and live.exists() and elsewhere.exists()
    assert not parked.exists() and (tmp_path / "prev" / "a.txt").read_text() == "previous output"
    assert (tmp_path / "out" / io.MARKER).is_file()


def test_sigterm_raises_so_cleanup_runs(tmp_path):
    from l2s.cli import Terminated, sigterm_raises

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        with sigterm_raises():
            with io.atomic_output_dir(tmp_path / "out") as tmp:
                write(tmp, "half.safetensors", "x")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.atomic_write_json(tmp_path / "a.json", {"a": 1})
        with io.atomic_output_dir(tmp_path / "out") as tmp:
            io.write_jsonl(tmp / "rows.jsonl", [{"a": 1}])
        (tmp_path / "plain").mkdir()
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "out" / "rows.jsonl") == mode(tmp_path / "plain.txt") \
        == 0o666 & ~umask
    assert mode(tmp_path / "out") == mode(tmp_path / "plain") == 0o777 & ~umask


def test_overwrite_replaces_only_what_l2s_wrote(tmp_path):
    with io.atomic_output_dir(tmp_path / "ours") as tmp:
        write(tmp, "a.txt", "1")
    with io.atomic_output_dir(tmp_path / "ours", overwrite=True) as tmp:
        write(tmp, "b.txt", "2")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == [io.MARKER, "b.txt"]
    write(tmp_path, "legacy/l2s_merge.json", "{}")  # written before the marker existed
    write(tmp_path, "family/quick/l2s_toy_card.json", "{}")
    write(tmp_path, "family/slow/l2s_toy_card.json", "{}")
    assert io.written_by_l2s(tmp_path / "legacy") and io.written_by_l2s(tmp_path / "family")
    write(tmp_path, "family/mine/notes.txt", "x")
    for theirs in (user_dir(tmp_path), tmp_path / "family", write(tmp_path, "file", "x")):
        before = snapshot([theirs])
        with pytest.raises(FileExistsError, match="not written by l2s"):
            with io.atomic_output_dir(theirs, overwrite=True):
                pass
        assert snapshot([theirs]) == before


def test_grading_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL the process that started a grading pool: its workers go too (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux only")
    script = ("import sys, time\nfrom l2s.eval.grading import GradeConfig, Grader\n"
              "g = Grader(GradeConfig(workers=2)); g.start()\n"
              "print(*[p.pid for p in g.processes()], flush=True)\ntime.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def test_model_shards_are_checked_before_loading(tmp_path):
    """Any dtype passes (a quantized checkpoint's U16 too); a truncated file or a missing shard is named."""
    from l2s.merge.checkpoint import check_safetensors

    header = json.dumps({"a": {"dtype": "U16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\0" * 4
    write(tmp_path, "ok/model.safetensors", blob)
    check_safetensors(tmp_path / "ok")
    write(tmp_path, "cut/model.safetensors", blob[:-1])
    with pytest.raises(ValueError, match=r"cut/model.safetensors: corrupt .* the file has \d+ \(truncated\?\)"):
        check_safetensors(tmp_path / "cut")
    write(tmp_path, "index/model.safetensors.index.json", json.dumps({"weight_map": {"a": "model-1.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="lists shard model-1.safetensors, which is missing"):
        check_safetensors(tmp_path / "index")


def test_an_interrupted_grading_kills_its_workers_at_once():
    from l2s.eval.grading import GradeConfig, Grader

    start = time.time()
    with pytest.raises(KeyboardInterrupt):
        with Grader(GradeConfig(workers=2)) as grader:
            grader.start()
            pids = [p.pid for p in grader.processes()]
            raise KeyboardInterrupt
    assert len(pids) == 2 and not any(_alive(p) for p in pids) and time.time() - start < 10


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


# ------------------------------------------------------------------------------------------ resume and determinism

def test_sampled_generation_does_not_depend_on_its_batch(micro_model):
    from l2s.eval.backends import Request
    from l2s.eval.backends.hf import HFBackend
    from l2s.eval.sampling import SamplingConfig

    be = HFBackend(str(micro_model), batch_size=5, dtype="float32")
    reqs = [Request(("toy", str(i), s), f"Moves : {chr(65 + i)}{chr(66 + i)} . Where ? {'x ' * (i % 3)}")
            for i in range(5) for s in range(2)]
    sampling = SamplingConfig(max_new_tokens=12, temperature=0.9, top_p=0.9, top_k=40, n=2, seed=7)
    batched = {r.key: g.token_ids for b in be.generate(reqs, sampling, progress=False) for r, g in b}
    be.batch_size = 1
    alone = {r.key: g.token_ids for b in be.generate(reqs[::-1], sampling, progress=False) for r, g in b}
    assert batched == alone and len({tuple(v) for v in batched.values()}) > 5


def test_sampled_run_resumed_after_a_kill_mid_batch_has_the_uninterrupted_bytes(micro_model, tmp_path):
    """The issue's case: a sampled run killed while writing a batch (its last rows lost) resumes with
    other batches, and still gives the bytes of an uninterrupted run."""
    from l2s.eval import EvalConfig, SamplingConfig, evaluate
    from l2s.eval.backends.hf import HFBackend

    sampling = SamplingConfig(max_new_tokens=8, n=2, temperature=0.8, top_p=0.95, seed=3)

    def config(name, batch):
        return EvalConfig(model=str(micro_model), datasets=("toy",), out=str(tmp_path / name), prompt="chat",
                          limit=9, backend="hf", batch_size=batch, sampling=sampling)

    full = evaluate(config("full", 4), progress=False)
    be = HFBackend(str(micro_model), batch_size=4)
    real = be.generate

    def killed(*a, **k):
        for i, batch in enumerate(real(*a, **k)):
            if i == 2:
                raise KeyboardInterrupt
            yield batch

    be.generate = killed
    with pytest.raises(KeyboardInterrupt):
        evaluate(config("part", 4), backend=be, progress=False)
    gen = tmp_path / "part" / "generations.jsonl"
    lines = gen.read_text().splitlines(keepends=True)
    assert len(lines) == 8
    gen.write_text("".join(lines[:5]) + lines[5][:20])  # killed while appending the second batch
    be.generate, be.batch_size = real, 3
    evaluate(config("part", 4), backend=be, progress=False)
    for name in ("generations.jsonl", "metrics.json"):
        assert (tmp_path / "part" / name).read_bytes() == (full / name).read_bytes()


def test_same_inputs_and_seed_give_the_same_bytes(world, tmp_path):
    """Determinism across commands: a merge, toy splits and scored responses, each made twice."""
    def tree(d: Path) -> dict:  # the records that hold times, or the output path, aside
        skip = ("l2s_merge.json", "provenance.json") + (("config.json",) if d.parent.name == "score" else ())
        return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*"))
                if f.is_file() and f.name not in skip}

    for out in ("a", "b"):
        assert main(["merge", "--method", "dare_ta", "--base", M(world, "model"), "--models", M(world, "model2"),
                     "--param", "p=0.5", "--seed", "3", "--out", str(tmp_path / "merge" / out)]) == 0
        assert main(["toy", "data", "--out", str(tmp_path / "toy" / out), "--n-train", "3", "--n-dev", "1",
                     "--n-test", "1", "--seed", "5"]) == 0
        responses = write(tmp_path, "r.jsonl", _resp() + _resp(response="no", answer="2"))
        assert main(["score", "--responses", str(responses), "--tokenizer", M(world, "model"), "--out",
                     str(tmp_path / "score" / out)]) == 0
    for kind in ("merge", "toy", "score"):
        a, b = tree(tmp_path / kind / "a"), tree(tmp_path / kind / "b")
        assert a == b and a, kind
