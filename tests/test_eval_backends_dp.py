"""Data-parallel generation (issue 5, "several GPUs = data parallel"): the orchestration, on CPU, with
a fake backend whose response is a deterministic function of the request; vLLM on GPUs where present."""

import functools
import importlib.util
import os

import pytest

from l2s import io
from l2s.eval.backends.base import Backend, Generation, Request
from l2s.eval.backends.parallel import DataParallelBackend, gpu_groups, shard_of
from l2s.eval.sampling import SamplingConfig


class FakeBackend(Backend):
    """Answers ``<key>|<seed>`` (plus ``@CUDA_VISIBLE_DEVICES`` with ``tag_env``), two requests per batch;
    raises on the request whose key is ``fail_on``, or at construction with ``fail_at_init``; its process
    exits at once on ``die_on``."""

    def __init__(self, tag_env=False, fail_on=None, fail_at_init=False, die_on=None):
        if fail_at_init:
            raise OSError("no such model: /nowhere")
        self.tag_env, self.fail_on, self.die_on = tag_env, fail_on, die_on

    def model_info(self):
        return {"config": {"fake": True}}

    def generate(self, requests, sampling, progress=True):
        for start in range(0, len(requests), 2):
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
    assert all(not p.is_alive() for p in dp._procs)


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
    assert not dp._procs
    dp = DataParallelBackend(functools.partial(FakeBackend, die_on=bad), 2)
    try:
        with pytest.raises(RuntimeError, match=rf"worker shard {shard_of(bad, 2)}/2 died \(exit code 3\)"):
            _collect(dp)
    finally:
        dp.close()
    with pytest.raises(RuntimeError, match=r"worker shard \d/2 \(CUDA_VISIBLE_DEVICES=\d\) failed:(.|\n)*no such model: /nowhere"):
        DataParallelBackend(functools.partial(FakeBackend, fail_at_init=True), 2, devices=[["0"], ["1"]])


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

    runs = {}
    for n in (1, 2):
        cfg = EvalConfig(model="fake", datasets=("toy",), out=str(tmp_path / f"dp{n}"), prompt="raw", limit=5,
                         sampling=SamplingConfig(temperature=0.7, n=2, seed=5), data_parallel_size=n)
        backend = FakeBackend() if n == 1 else DataParallelBackend(FakeBackend, 2)
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
