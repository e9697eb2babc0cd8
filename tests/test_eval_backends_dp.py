"""Data-parallel generation (issue 5, "several GPUs = data parallel"): the orchestration, on CPU, with
a fake backend whose response is a deterministic function of the request; vLLM on GPUs where present."""

import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from l2s import io
from l2s.eval.backends.base import Backend, Generation, Request
from l2s.eval.backends.parallel import DataParallelBackend, gpu_groups, shard_of
from l2s.eval.sampling import SamplingConfig


class FakeBackend(Backend):
    """Answers ``<key>|<seed>`` (plus ``@CUDA_VISIBLE_DEVICES`` with ``tag_env``), two requests per batch
    (after ``sleep_s``); raises on the request whose key is ``fail_on``, or at construction with
    ``fail_at_init``; its process exits at once on ``die_on``; ``close()`` leaves a file named by its pid
    in ``closed_dir``."""

    def __init__(self, tag_env=False, fail_on=None, fail_at_init=False, die_on=None, sleep_s=0.0, closed_dir=None):
        if fail_at_init:
            raise OSError("no such model: /nowhere")
        self.tag_env, self.fail_on, self.die_on = tag_env, fail_on, die_on
        self.sleep_s, self.closed_dir = sleep_s, closed_dir

    def model_info(self):
        return {"config": {"fake": True}}

    def close(self):
        if self.closed_dir is not None:
            (self.closed_dir / str(os.getpid())).touch()

    def generate(self, requests, sampling, progress=True):
        for start in range(0, len(requests), 2):
            time.sleep(self.sleep_s)
            batch = requests[start:start + 2]
            out = []
            for r in batch:
                if r.key == self.fail_on:
                    raise ValueError(f"cannot generate {r.key}")
                if r.key == self.die_on:
                    os._exit(3)  # killed: no report
                text = f"{'/'.join(map(str, r.key))}|{sampling.seed}"
                if self.tag_env:
                    text += "@" + os.environ.get("CUDA_VISIBLE_DEVICES", "")
                ids = [len(text), sum(map(ord, text)) % 97]
                out.append((r, Generation(token_ids=ids, text=text, finished=True, truncated=False)))
            yield out


REQUESTS = [Request(("toy", f"p{i}", s), f"prompt {i}") for i in range(9) for s in range(2)]
SAMPLING = SamplingConfig(temperature=0.7, n=2, seed=5)


def _collect(backend, requests=REQUESTS):
    batches = list(backend.generate(requests, SAMPLING, progress=False))
    return batches, [pair for b in batches for pair in b]


def test_two_workers_same_results_as_one_each_request_once_on_its_own_devices():
    single = FakeBackend()
    _, expected = _collect(single)
    dp = DataParallelBackend(functools.partial(FakeBackend, tag_env=True), 2, devices=[["0", "1"], ["2", "3"]])
    try:
        assert dp.model_info() == {"config": {"fake": True}} and dp.tokenizer is None
        batches, got = _collect(dp)
        assert sorted(r.key for r, _ in got) == sorted(r.key for r in REQUESTS)  # every request exactly once
        assert len(batches) >= 2 and all(len(b) <= 2 for b in batches)  # streamed per worker batch
        env = {r.key: g.text.rsplit("@", 1)[1] for r, g in got}
        assert {k: ["0,1", "2,3"][shard_of(k, 2)] for k in env} == env  # each shard on its own GPU group
        assert {"0,1", "2,3"} == set(env.values())
        strip = {r.key: g.text.rsplit("@", 1)[0] for r, g in got}
        assert strip == {r.key: g.text for r, g in expected}
        assert {r.key: g.token_ids for r, g in _collect(dp)[1]} == {r.key: g.token_ids for r, g in got}  # reusable
        assert list(dp.generate([], SAMPLING, progress=False)) == []
    finally:
        dp.close()
    assert len(dp._procs) == 2 and not any(p.daemon or p.is_alive() for p in dp._procs)
    dp.close()  # a second close does nothing


def test_shards_are_by_key_and_balanced():
    keys = [("gsm8k", str(i), s) for i in range(500) for s in range(4)]
    assert [shard_of(k, 3) for k in keys] == [shard_of(k, 3) for k in keys]
    assert shard_of(("toy", "p1", 0), 1) == 0
    counts = [sum(shard_of(k, 4) == i for k in keys) for i in range(4)]
    assert sum(counts) == 2000 and min(counts) > 400  # ~500 each


def test_worker_error_names_its_shard():
    bad = ("toy", "p4", 1)
    dp = DataParallelBackend(functools.partial(FakeBackend, fail_on=bad), 2)
    try:
        with pytest.raises(RuntimeError, match=rf"worker shard {shard_of(bad, 2)}/2 failed:(.|\n)*"
                                               r"cannot generate \('toy', 'p4', 1\)"):
            _collect(dp)
    finally:
        dp.close()
    assert not any(p.is_alive() for p in dp._procs)
    dp = DataParallelBackend(functools.partial(FakeBackend, die_on=bad), 2)
    try:
        with pytest.raises(RuntimeError, match=rf"worker shard {shard_of(bad, 2)}/2 died \(exit code 3\)"):
            _collect(dp)
    finally:
        dp.close()
    with pytest.raises(RuntimeError, match=r"worker shard \d/2 \(CUDA_VISIBLE_DEVICES=\d\) failed:"
                                           r"(.|\n)*no such model: /nowhere"):
        DataParallelBackend(functools.partial(FakeBackend, fail_at_init=True), 2, devices=[["0"], ["1"]])


def test_interrupted_generation_terminates_workers_which_close_their_backends(tmp_path):
    dp = DataParallelBackend(functools.partial(FakeBackend, sleep_s=0.5, closed_dir=tmp_path), 2)
    procs = list(dp._procs)
    gen = dp.generate(REQUESTS, SAMPLING, progress=False)
    next(gen)  # the workers are busy with the rest
    start = time.monotonic()
    dp.close()
    assert time.monotonic() - start < 15  # SIGTERM at once, not the idle grace period
    assert [p.exitcode for p in procs] == [128 + signal.SIGTERM] * 2  # exited through the SIGTERM handler
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(str(p.pid) for p in procs)  # backends closed
    gen.close()


_ORPHAN_SCRIPT = """
import sys, time
from l2s.eval.backends.base import Backend
from l2s.eval.backends.parallel import DataParallelBackend
dp = DataParallelBackend(Backend, 2)
print(" ".join(str(p.pid) for p in dp._procs), flush=True)
if sys.argv[1] == "wait":
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _describe(pid: int) -> str:
    try:
        return " ".join(open(f"/proc/{pid}/{name}").read().replace("\0", " ").strip()
                        for name in ("cmdline", "stat", "wchan"))
    except OSError as e:
        return f"{pid}: {e}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_workers_never_outlive_the_parent():
    """Not daemonic (vLLM's engine needs children), yet a parent that exits without close() neither
    hangs nor leaves workers, and a SIGKILLed parent takes its workers with it (PR_SET_PDEATHSIG)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _ORPHAN_SCRIPT, "exit"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 60
    assert not any(_alive(int(pid)) for pid in done.stdout.split())

    proc = subprocess.Popen([sys.executable, "-c", _ORPHAN_SCRIPT, "wait"], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [pid for pid in pids if _alive(pid)]
    assert not alive, f"workers outlived their SIGKILLed parent: {[_describe(pid) for pid in alive]}"


def test_bad_sizes_are_refused():
    from l2s.eval import EvalConfig
    from l2s.eval.backends import make_backend

    assert gpu_groups(2, 2, visible=["0", "1", "2", "3", "4"]) == [["0", "1"], ["2", "3"]]
    assert gpu_groups(1, 1, visible=["7"]) == [["7"]]
    with pytest.raises(ValueError, match=r"data_parallel_size 2 × tensor_parallel_size 2 = 4 GPUs needed, "
                                         r"but only 3 visible \(0,1,2\)"):
        gpu_groups(2, 2, visible=["0", "1", "2"])
    with pytest.raises(ValueError, match="only 0 visible"):
        gpu_groups(1, 1, visible=[])
    assert gpu_groups(2, 1, visible=[], platform="cpu") is None  # vLLM's CPU build: the workers share the CPU
    with pytest.raises(ValueError, match="data_parallel_size must be >= 1"):
        gpu_groups(0, 1, visible=["0"])
    with pytest.raises(ValueError, match="tensor_parallel_size must be >= 1"):
        gpu_groups(1, 0, visible=["0"])
    with pytest.raises(ValueError, match="integer >= 1, got 0"):
        DataParallelBackend(FakeBackend, 0)
    with pytest.raises(ValueError, match="2 workers need 2 device groups, got 1"):
        DataParallelBackend(FakeBackend, 2, devices=[["0"]])
    with pytest.raises(ValueError, match="needs the vllm backend"):
        make_backend("hf", "some-model", data_parallel_size=2)
    with pytest.raises(ValueError, match="data_parallel_size must be an integer >= 1, got 0"):
        EvalConfig(model="m", datasets=("toy",), out="x", data_parallel_size=0)
    with pytest.raises(ValueError, match="data_parallel_size > 1 needs the vllm backend"):
        EvalConfig(model="m", datasets=("toy",), out="x", backend="hf", data_parallel_size=2)


def test_cli_flag_and_outputs_key(tmp_path):
    from l2s.cli import build_parser, main
    from l2s.eval.cli import eval_config_from_args

    args = build_parser().parse_args(["eval", "--model", "m", "--datasets", "toy", "--out", "x",
                                      "--data-parallel-size", "4", "--tensor-parallel-size", "2"])
    cfg = eval_config_from_args(args)
    assert (cfg.data_parallel_size, cfg.tensor_parallel_size) == (4, 2)
    one = eval_config_from_args(build_parser().parse_args(["eval", "--model", "m", "--datasets", "toy", "--out", "x",
                                                           "--tensor-parallel-size", "2"]))
    assert one.data_parallel_size == 1 and one.outputs_key() == cfg.outputs_key()  # N does not change outputs
    assert main(["eval", "--model", "m", "--datasets", "toy", "--out", str(tmp_path / "r"),
                 "--data-parallel-size", "0"]) == 2
    assert not (tmp_path / "r").exists()


def test_evaluate_with_data_parallel_backend_writes_the_same_run(tmp_path):
    from l2s.eval import EvalConfig, evaluate
    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()  # evaluate measures the prompts with the backend's tokenizer
    runs = {}
    for n in (1, 2):
        cfg = EvalConfig(model="fake", datasets=("toy",), out=str(tmp_path / f"dp{n}"), prompt="raw", limit=5,
                         sampling=SamplingConfig(temperature=0.7, n=2, seed=5), data_parallel_size=n)
        if n == 1:
            backend = FakeBackend()
            backend.tokenizer = tok
        else:
            backend = DataParallelBackend(FakeBackend, 2, tokenizer=tok)
        try:
            runs[n] = evaluate(cfg, backend=backend, progress=False)
        finally:
            backend.close()
    rows = io.read_jsonl(runs[2] / "generations.jsonl")
    assert len(rows) == 10 and len({(r["id"], r["sample"]) for r in rows}) == 10
    assert rows[0]["response"] == f"toy/{rows[0]['id']}/0|5"
    for name in ("generations.jsonl", "metrics.json"):
        assert (runs[1] / name).read_bytes() == (runs[2] / name).read_bytes()
    assert io.read_json(runs[2] / "config.json")["data_parallel_size"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_vllm_data_parallel_matches_one_worker(tmp_path):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s.eval import EvalConfig, evaluate
    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = tmp_path / "tiny"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                 tie_word_embeddings=False, eos_token_id=tok.eos_token_id,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(model)
    tok.save_pretrained(model)
    runs = {n: evaluate(EvalConfig(model=str(model), datasets=("toy",), out=str(tmp_path / f"dp{n}"), prompt="chat",
                                   limit=8, backend="vllm", dtype="float32", data_parallel_size=n,
                                   sampling=SamplingConfig(max_new_tokens=8, temperature=1.0, n=2, seed=3)),
                        progress=False) for n in (2, 1)}  # workers exit first: the GPUs are free again
    assert (runs[1] / "generations.jsonl").read_bytes() == (runs[2] / "generations.jsonl").read_bytes()
