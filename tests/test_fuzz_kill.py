"""Kill cases of the fuzz suite (``slow``): a merge and a sampled evaluation killed mid-way, then rerun.

SIGTERM: the CLI turns it into an exception (:mod:`l2s.cli`), so the process removes its temporary
output directory and exits with status 143. SIGKILL: the temporary directory stays behind until the
next run into the same parent sweeps it (its owner's pid is in its name, :mod:`l2s.io`), and the
grading workers of the killed evaluation die with it (``PR_SET_PDEATHSIG``). In every case the rerun
gives the bytes of an uninterrupted run (a sampled evaluation resumes from the rows already written:
per-request seeds make its responses independent of how the requests are batched).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from l2s import io
from l2s.cli import main

pytestmark = pytest.mark.slow
TEMP = re.compile(r"^\.out\.[A-Za-z0-9-]+\.(\d+)\.[0-9a-f]{8}\.tmp$")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "l2s", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"the process ended (status {proc.poll()}) or timed out before the kill point: "
                         f"{proc.stderr.read() if proc.poll() is not None else ''}")


def _temps(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if TEMP.match(p.name)]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _tree(d: Path, skip=("l2s_merge.json", "provenance.json", "config.json")) -> dict:
    return {str(f.relative_to(d)): f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file() and f.name not in skip}


# ------------------------------------------------------------------------------------------ merge

@pytest.fixture(scope="module")
def slow_merge(tmp_path_factory):
    """Inputs whose LoRE merge takes a few seconds (24 SVD-iterated matrices, one output shard each),
    and the bytes of an uninterrupted merge."""
    root = tmp_path_factory.mktemp("slow-merge")
    for i, name in enumerate(("base", "model")):
        g = torch.Generator().manual_seed(i)
        (root / name).mkdir()
        save_file({f"layers.{k}.weight": torch.randn(256, 256, generator=g) for k in range(24)},
                  str(root / name / "model.safetensors"))

    def argv(out: Path) -> list[str]:
        return ["merge", "--method", "lore", "--base", str(root / "base"), "--models", str(root / "model"),
                "--param", "mu=0.02", "--shard-size", "300KB", "--out", str(out)]

    assert main(argv(root / "reference")) == 0
    return argv, _tree(root / "reference")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_merge_leaves_nothing_and_the_rerun_gives_the_same_bytes(slow_merge, tmp_path, sig):
    argv, reference = slow_merge
    out = tmp_path / "out"
    proc = _start(argv(out))
    _wait_for(lambda: any(len(list(t.glob("*.safetensors"))) >= 3 for t in _temps(tmp_path)), proc)
    proc.send_signal(sig)
    status = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert status == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
        assert _temps(tmp_path) == []
    else:
        assert status == -signal.SIGKILL and len(_temps(tmp_path)) == 1  # until the next run sweeps it
    assert main(argv(out)) == 0
    assert _temps(tmp_path) == [] and _tree(out) == reference


# ------------------------------------------------------------------------------------------ sampled eval

@pytest.fixture(scope="module")
def sampled_eval(micro_model, tmp_path_factory):
    """A sampled evaluation with enough responses for a grading pool (>= 64), and its uninterrupted bytes."""
    root = tmp_path_factory.mktemp("sampled-eval")

    def argv(out: Path) -> list[str]:
        return ["eval", "--model", str(micro_model), "--datasets", "toy", "--prompt", "chat", "--backend", "hf",
                "--limit", "36", "--n", "2", "--temperature", "0.8", "--top-p", "0.95", "--seed", "11",
                "--max-new-tokens", "24", "--batch-size", "2", "--out", str(out)]

    assert main(argv(root / "reference")) == 0
    return argv, {n: (root / "reference" / n).read_bytes() for n in ("generations.jsonl", "metrics.json")}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_sampled_eval_resumes_to_the_uninterrupted_bytes(sampled_eval, tmp_path, sig):
    argv, reference = sampled_eval
    out = tmp_path / "out"
    gen = out / "generations.jsonl"
    proc = _start(argv(out))
    _wait_for(lambda: gen.exists() and gen.read_bytes().count(b"\n") >= 6, proc)
    workers = _children(proc.pid)
    assert len(workers) >= 1, "the grading pool was not started"
    proc.send_signal(sig)
    status = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert status == (143 if sig == signal.SIGTERM else -signal.SIGKILL), err
    if sig == signal.SIGTERM:
        assert "terminated (SIGTERM)" in err and "Traceback" not in err, err
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "grading workers outlived the killed evaluation"
    done = len(io.read_jsonl(gen, tolerate_torn_tail=True))
    assert 6 <= done < 72 and not (out / "metrics.json").exists()
    assert main(argv(out)) == 0
    assert {n: (out / n).read_bytes() for n in reference} == reference
