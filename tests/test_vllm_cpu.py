"""The vLLM backend on vLLM's CPU build (``make test-vllm`` runs this file in .venv-vllm): greedy parity
with transformers on the micro toy family, data parallelism, per-request token budgets, shutting an
engine down and starting another, and the text (BPE) path with a real tokenizer.

An engine takes 40-120 s to start on 2 cores (its EngineCore and worker processes each import vLLM),
so one engine on the slow micro model serves the tests in file order, and the last test closes it and
starts a second one. The micro models answer nearly alike whatever the problem, so the budget test and
the random model of the last test are what make responses end (eos) or get cut at varied lengths.
"""

import importlib.util
import os
import time
from pathlib import Path

import pytest

from l2s import io
from l2s.eval import EvalConfig, SamplingConfig, evaluate
from l2s.eval.backends.base import Request

SHARED = Path(os.environ.get("L2S_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
R1_TOKENIZER = SHARED / "tokenizers" / "deepseek-r1-distill-qwen"  # byte-level BPE that adds a BOS


def _vllm_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed here: `make test-vllm` runs these tests in .venv-vllm (vLLM's CPU build)"
    from l2s.eval.backends import vllm_usable

    return None if vllm_usable() else "vLLM is installed but has no CUDA GPU and is not its CPU build"


_SKIP = _vllm_skip_reason()
if _SKIP and os.environ.get("L2S_VLLM_TESTS") == "1":  # make test-vllm: a skip would pass unnoticed
    raise RuntimeError(f"L2S_VLLM_TESTS=1 but {_SKIP}")
pytestmark = [pytest.mark.vllm, pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]

ROW_FIELDS = ("id", "sample", "prompt", "response", "n_tokens", "finished", "truncated", "pred", "correct")


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc), but multiprocessing's resource tracker, which the
    first spawn starts and which lives as long as this process."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            tracker = b"resource_tracker" in (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[0] != "Z" and not tracker:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _wait_dead(pids: set[int], timeout_s: float = 30.0) -> set[int]:
    """The ``pids`` still alive after up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (alive := pids & _descendants(1)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.fixture(scope="session")
def family(tmp_path_factory):
    from l2s.toy.build import build_family

    return build_family("micro", cache=tmp_path_factory.mktemp("l2s-cache"))


@pytest.fixture(scope="module")
def engine(family):
    """One VLLMBackend on the slow micro model (fp32); ``engine.pids``: the processes it started."""
    from l2s.eval.backends import make_backend

    before = _descendants(os.getpid())
    start = time.monotonic()
    backend = make_backend("vllm", str(family["slow"]), dtype="float32", enforce_eager=True,
                           batch_size=7)  # an hf option: ignored by vllm
    print(f"vLLM engine start: {time.monotonic() - start:.1f} s")
    backend.pids = _descendants(os.getpid()) - before
    yield backend
    backend.close()


def _rows(run: Path) -> list[dict]:
    return io.read_jsonl(run / "generations.jsonl")


def test_greedy_matches_hf_on_toy_problems(engine, family, tmp_path):
    """fp32 greedy ``l2s eval`` rows: every field equal on 120 toy test problems."""
    runs = {}
    for name, backend in (("vllm", engine), ("hf", None)):
        cfg = EvalConfig(model=str(family["slow"]), datasets=("toy",), out=str(tmp_path / name), prompt="chat",
                         limit=120, backend=name, dtype="float32", batch_size=120,
                         sampling=SamplingConfig(max_new_tokens=64))
        runs[name] = evaluate(cfg, backend=backend, progress=False)
    v, h = _rows(runs["vllm"]), _rows(runs["hf"])
    assert len(v) == len(h) == 120
    assert [{k: r[k] for k in ROW_FIELDS} for r in v] == [{k: r[k] for k in ROW_FIELDS} for r in h]


def test_per_request_budget_and_truncation_match_hf(engine, family):
    from l2s.data import load_benchmark
    from l2s.eval.backends.hf import HFBackend
    from l2s.eval.prompts import build_prompt

    sampling = SamplingConfig(max_new_tokens=40)
    problems = load_benchmark("toy")[::23][:16]
    caps = [None, 1, 5, 17, 40, 200, None, 3]
    requests = [Request(("toy", p["id"], 0), build_prompt("chat", p["problem"], engine.tokenizer),
                        max_new_tokens=caps[i % len(caps)]) for i, p in enumerate(problems)]
    got = {r.key: g for batch in engine.generate(requests, sampling, progress=False) for r, g in batch}
    hf = HFBackend(str(family["slow"]), dtype="float32", batch_size=16)
    want = {r.key: g for batch in hf.generate(requests, sampling, progress=False) for r, g in batch}
    assert got == want
    for r in requests:
        budget = r.budget(sampling)
        g = got[r.key]
        assert len(g.token_ids) <= budget and g.truncated == (not g.finished and len(g.token_ids) == budget)
    assert sum(got[r.key].truncated for r in requests if r.max_new_tokens in (1, 3, 5)) == 6  # the small caps bite
    with pytest.raises(ValueError, match="Request.max_new_tokens must be an integer >= 1 or None, got 0"):
        Request(("toy", "x", 0), "p", max_new_tokens=0)


def test_results_stream_as_they_finish_and_a_left_generation_frees_the_engine(engine):
    from l2s.data import load_benchmark
    from l2s.eval.prompts import build_prompt

    sampling = SamplingConfig(max_new_tokens=40)
    problems = load_benchmark("toy")[:12]
    # budgets 1..12 tokens, below the slow micro model's shortest response ("Let me track the ball .
    # start→D The answer is \boxed{B}", 15 tokens): every request is cut at its own step, one by one
    requests = [Request(("toy", p["id"], 0), build_prompt("chat", p["problem"], engine.tokenizer),
                        max_new_tokens=1 + i) for i, p in enumerate(problems)]
    engine.yield_every = 3
    try:
        batches = list(engine.generate(requests, sampling, progress=False))
        assert sorted(r.key for b in batches for r, _ in b) == sorted(r.key for r in requests)
        assert len(batches) >= 3 and all(len(b) >= 3 for b in batches[:-1])
        gen = engine.generate(requests, sampling, progress=False)
        next(gen)
        gen.close()  # the caller stopped reading: the rest is aborted
        assert not engine.llm.llm_engine.has_unfinished_requests()
    finally:
        engine.yield_every = 64
    again = {r.key: g for b in engine.generate(requests, sampling, progress=False) for r, g in b}
    assert again == {r.key: g for b in batches for r, g in b}


def test_two_data_parallel_workers_write_the_same_run_as_one(engine, family, tmp_path):
    """Sampled (T=1, n=2): 2 workers sharing the CPU give byte-identical generations.jsonl to one engine;
    closing the workers takes their EngineCore processes with them."""
    from l2s.eval.backends import make_backend

    runs = {}
    for n in (1, 2):
        cfg = EvalConfig(model=str(family["slow"]), datasets=("toy",), out=str(tmp_path / f"dp{n}"), prompt="chat",
                         limit=30, backend="vllm", dtype="float32", data_parallel_size=n,
                         sampling=SamplingConfig(max_new_tokens=48, temperature=1.0, n=2, seed=3))
        if n == 1:
            runs[n] = evaluate(cfg, backend=engine, progress=False)
            continue
        before = _descendants(os.getpid())
        start = time.monotonic()
        dp = make_backend("vllm", str(family["slow"]), data_parallel_size=2, dtype="float32", enforce_eager=True)
        print(f"2 data-parallel vLLM workers start: {time.monotonic() - start:.1f} s")
        started = _descendants(os.getpid()) - before
        try:
            assert dp.devices is None and not any(p.daemon for p in dp._procs)
            assert len(started) >= 4  # each worker has an EngineCore below it
            runs[n] = evaluate(cfg, backend=dp, progress=False)
        finally:
            dp.close()
        assert not _wait_dead(started), "data-parallel workers or their engines outlived close()"
    assert (runs[1] / "generations.jsonl").read_bytes() == (runs[2] / "generations.jsonl").read_bytes()
    rows = _rows(runs[2])
    assert len(rows) == 60 and len({r["response"] for r in rows}) > 30  # sampled: the responses differ


def test_close_then_a_second_engine_on_the_text_path(engine, tmp_path):
    """close() ends the engine's processes; a second engine then starts in this process. It runs a
    tiny random Qwen2 with DeepSeek-R1-Distill's tokenizer (vLLM detokenizes, l2s does not), whose
    encoder adds a BOS: the prompt already has one, and output equal to transformers' shows that vLLM
    did not add a second. Its eos logit is doubled so that some responses end and others are cut."""
    engine.close()
    assert not _wait_dead(engine.pids), "the engine's processes outlived close()"
    engine.close()  # a second close does nothing
    if not (R1_TOKENIZER / "tokenizer.json").is_file():
        pytest.skip(f"no R1-Distill tokenizer at {R1_TOKENIZER} (set L2S_SHARED_DATA): text path not tested")
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s.eval.backends.hf import HFBackend
    from l2s.eval.backends.vllm import VLLMBackend
    from l2s.tokenizers import load_tokenizer

    tok = load_tokenizer(R1_TOKENIZER)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                      initializer_range=0.5,  # large weights: well separated logits, no near-ties to flip
                      tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 2
    model_dir = tmp_path / "tiny-r1"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    questions = ["What is 2 + 3?", "Solve x^2 = 4.", "How many primes are below 20?", "Simplify 6/8.",
                 "Find 7 * 8.", "What is the square root of 81?", "Is 91 prime?", "Compute 2^10."]
    requests = [Request(("bpe", str(i), 0), f"{tok.bos_token}<｜User｜>{q}<｜Assistant｜><think>\n")
                for i, q in enumerate(questions)]
    sampling = SamplingConfig(max_new_tokens=24)
    start = time.monotonic()
    second = VLLMBackend(str(model_dir), dtype="float32", enforce_eager=True, max_model_len=256)
    print(f"second vLLM engine start: {time.monotonic() - start:.1f} s")
    try:
        assert not second.ids_only and second.llm.llm_engine.model_config.max_model_len == 256
        got = {r.key: g for b in second.generate(requests, sampling, progress=False) for r, g in b}
    finally:
        second.close()
    hf = HFBackend(str(model_dir), dtype="float32", batch_size=8)
    want = {r.key: g for b in hf.generate(requests, sampling, progress=False) for r, g in b}
    assert got == want
    assert 0 < sum(g.finished for g in got.values()) < len(got) and any(g.text for g in got.values())
