"""Real-shaped stand-ins (l2s.standins): each pair copies its real pair's tokenizers, chat templates,
vocabulary rows, tied/untied embeddings and contexts; System 2 is System 1 plus a small task vector;
evaluation caps a budget that does not fit the context and records it."""

import json

import pytest
import torch
from safetensors import safe_open

from l2s import io
from l2s.eval.prompts import build_prompt
from l2s.eval.run import EvalConfig, evaluate
from l2s.eval.sampling import SamplingConfig
from l2s.standins import LAYOUTS, StandinConfig, build_standins, standin_dir
from l2s.tokenizers import load_tokenizer


@pytest.fixture(scope="module")
def tokenizers(shared_data):
    tok = shared_data / "tokenizers"
    return {"qwen": str(tok / "qwen2.5"), "r1": str(tok / "deepseek-r1-distill-qwen")}


def _cfg(layout, tokenizers, **kw):
    return StandinConfig(layout, qwen_tokenizer=tokenizers["qwen"], r1_tokenizer=tokenizers["r1"], **kw)


@pytest.fixture(scope="module")
def pairs(tokenizers, tmp_path_factory):
    cache = tmp_path_factory.mktemp("standins")
    return {name: build_standins(_cfg(name, tokenizers), cache=cache) for name in ("qwen-1.5b", "qwen-7b")}, cache


def _names(path):
    with safe_open(path / "model.safetensors", "pt") as f:
        return set(f.keys())


@pytest.mark.parametrize("layout", ["qwen-1.5b", "qwen-7b"])
def test_layout_copies_the_real_pair(pairs, layout):
    dirs, _ = pairs
    real = LAYOUTS[layout]
    for role in ("quick", "slow"):
        want = getattr(real, role)
        config = io.read_json(dirs[layout][role] / "config.json")
        assert config["vocab_size"] == want.vocab_rows
        assert config["tie_word_embeddings"] is want.tie_word_embeddings
        assert config["max_position_embeddings"] == want.max_position_embeddings
        assert config["hidden_size"] // config["num_attention_heads"] == 32  # vLLM-CPU's smallest head_dim
        assert ("lm_head.weight" in _names(dirs[layout][role])) is (not want.tie_word_embeddings)
        card = io.read_json(dirs[layout][role] / "l2s_standin.json")
        assert card["stands_for"] == want.stands_for
    assert (real.quick.tie_word_embeddings, real.slow.tie_word_embeddings) == (
        (True, False) if layout == "qwen-1.5b" else (False, False))
    assert (real.quick.max_position_embeddings, real.slow.max_position_embeddings) == (4096, 131072)


def test_chat_templates_render_as_the_real_ones(pairs):
    dirs, _ = pairs
    quick, slow = (load_tokenizer(dirs["qwen-7b"][r]) for r in ("quick", "slow"))
    q = "What is $1+1$?"
    assert build_prompt("qwen25-math-cot", q, quick) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n")
    assert build_prompt("chat", q, quick).startswith("<|im_start|>system\nPlease reason step by step")
    r1 = build_prompt("qwen25-math-cot", q, slow)
    assert r1 == ("<｜begin▁of▁sentence｜>Please reason step by step, and put your final answer within "
                  f"\\boxed{{}}.<｜User｜>{q}<｜Assistant｜><think>\n")
    ids = slow(r1, add_special_tokens=False).input_ids
    assert ids[0] == 151646 and ids.count(151646) == 1  # one BOS, from the template
    assert slow.convert_tokens_to_ids(["<｜User｜>", "<｜Assistant｜>", "<think>"]) == [151644, 151645, 151648]
    assert quick.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [151644, 151645]
    gen = io.read_json(dirs["qwen-7b"]["slow"] / "generation_config.json")
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (151646, 151643)


def test_slow_is_quick_plus_a_small_task_vector(pairs):
    dirs, _ = pairs
    d = dirs["qwen-1.5b"]
    with (safe_open(d["quick"] / "model.safetensors", "pt") as fq,
          safe_open(d["slow"] / "model.safetensors", "pt") as fs):
        base = {k: fq.get_tensor(k).float() for k in fq.keys()}
        ratios = []
        for name in fs.keys():
            theta0 = base["model.embed_tokens.weight"] if name == "lm_head.weight" else base[name]
            delta = fs.get_tensor(name).float() - theta0
            ratios.append(float(delta.norm() / theta0.norm()))
    assert fs is not None and len(ratios) == len(base) + 1
    assert all(0.04 < r < 0.06 for r in ratios), ratios  # delta = 0.05, bf16 rounding aside


def test_cached_and_keyed_by_what_shapes_it(pairs, tokenizers):
    dirs, cache = pairs
    again = build_standins(_cfg("qwen-7b", tokenizers), cache=cache)
    assert again == dirs["qwen-7b"]
    assert standin_dir(_cfg("qwen-7b", tokenizers, seed=1), cache) != dirs["qwen-7b"]["quick"].parent
    with pytest.raises(ValueError, match="unknown stand-in layout"):
        StandinConfig("qwen-3b")


def test_a_budget_beyond_the_context_is_capped_and_recorded(tokenizers, tmp_path):
    """Qwen2.5-Math's 4,096 positions cannot hold an 8,192-token budget: each request gets what fits,
    its row says so (``budget``), and metrics.json counts it (a 96-position System 1 here)."""
    dirs = build_standins(_cfg("qwen-7b", tokenizers, max_position_embeddings=96), cache=tmp_path / "cache")
    data = tmp_path / "data" / "gsm8k"
    data.mkdir(parents=True)
    io.write_jsonl(data / "test.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?", "answer": "3+4=7\n#### 7"},
        {"question": "What is 10 minus 2?", "answer": "#### 8"}])
    out = evaluate(EvalConfig(model=str(dirs["quick"]), datasets=["gsm8k"], out=str(tmp_path / "run"),
                              data_dir=str(tmp_path / "data"), prompt="qwen25-math-cot-literal", backend="hf",
                              dtype="float32", sampling=SamplingConfig(max_new_tokens=200)), progress=False)
    rows = io.read_jsonl(out / "generations.jsonl")
    tok = load_tokenizer(dirs["quick"])
    for r in rows:
        prompt = len(tok(r["prompt"], add_special_tokens=False).input_ids)
        assert r["budget"] == 96 - prompt and r["n_tokens"] <= r["budget"]
        assert r["prompt"].startswith("<|im_start|>system\nPlease reason step by step")
    limit = io.read_json(out / "metrics.json")["token_limit"]
    assert limit["max_new_tokens"] == 200 and limit["capped_by_context"] == 2
    assert limit["min_budget"] == min(r["budget"] for r in rows)
    assert limit["hit_limit"] == sum(r["truncated"] for r in rows)
    assert json.loads((out / "config.json").read_text())["prompt"] == "qwen25-math-cot-literal"
    # a context that cannot hold the prompt at all is an error that says what to do
    with pytest.raises(ValueError, match="raise max_model_len"):
        evaluate(EvalConfig(model=str(dirs["quick"]), datasets=["gsm8k"], out=str(tmp_path / "run2"),
                            data_dir=str(tmp_path / "data"), prompt="cot", backend="hf", max_model_len=40,
                            sampling=SamplingConfig(max_new_tokens=8)), progress=False)
    assert not (tmp_path / "run2").exists()


def test_merged_standins_load_and_generate(pairs, tmp_path):
    """A 1.5B-layout merge (tied System 1, untied System 2) gives an untied model that generates."""
    from transformers import AutoModelForCausalLM

    from l2s.merge import MergeConfig, merge

    dirs, _ = pairs
    d = dirs["qwen-1.5b"]
    out = merge(MergeConfig(method="task_arithmetic", base=str(d["quick"]), models=[str(d["slow"])],
                            params={"alpha": 0.7}, out=str(tmp_path / "ta"), dtype="bfloat16"))
    config = io.read_json(out / "config.json")
    assert config["tie_word_embeddings"] is False and config["max_position_embeddings"] == 131072
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    tok = load_tokenizer(out)
    ids = tok(build_prompt("qwen25-math-cot", "1+1?", tok), return_tensors="pt", add_special_tokens=False).input_ids
    assert model.generate(ids, max_new_tokens=4, do_sample=False).shape[1] == ids.shape[1] + 4


def test_cli_copies_the_pair_and_refuses_a_foreign_directory(pairs, tokenizers, tmp_path, monkeypatch):
    from l2s.cli import main

    _, cache = pairs
    monkeypatch.setenv("L2S_CACHE", str(cache))  # the pair is already built there
    args = ["standins", "--layout", "qwen-7b", "--qwen-tokenizer", tokenizers["qwen"],
            "--r1-tokenizer", tokenizers["r1"], "--out", str(tmp_path / "pair")]
    assert main(args) == 0
    assert io.read_json(tmp_path / "pair" / "slow" / "l2s_standin.json")["stands_for"] == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    assert main(args) == 0  # the same pair: nothing to do
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(args[:-1] + [str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
