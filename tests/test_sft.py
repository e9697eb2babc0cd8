"""l2s short-cot and l2s sft: short-CoT rows in the long model's chat format, and SFT (full, LoRA, fp32 masters)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from l2s import io
from l2s.cli import main
from l2s.eval.prompts import build_prompt
from l2s.sft import (
    PRESETS,
    build_trainer,
    chat_prompt_completion,
    preset_config,
    read_examples,
    tokenize_examples,
    train_sft,
    turn_end,
)
from l2s.short_cot import ShortCoTConfig, build_short_cot, correct_responses, keep_shortest
from l2s.toy import task
from l2s.toy.tokenizer import build_tokenizer

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"


@pytest.fixture(scope="module")
def standins(shared_data, tmp_path_factory) -> dict[str, Path]:
    """An R1-templated long model (``slow``) and a ChatML one (``quick``, the short-CoT source)."""
    from l2s.standins import StandinConfig, build_standins

    tok = shared_data / "tokenizers"
    cfg = StandinConfig("qwen-7b", qwen_tokenizer=str(tok / "qwen2.5"),
                        r1_tokenizer=str(tok / "deepseek-r1-distill-qwen"))
    return build_standins(cfg, cache=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def r1_tokenizer(standins):
    from l2s.tokenizers import load_tokenizer

    return load_tokenizer(standins["slow"])


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """Toy problems with their short solutions, as prompt/completion rows in the toy chat format."""
    tok = build_tokenizer()
    rng = random.Random(0)
    rows = []
    for n in range(8):
        p = task.sample_problem(rng, level=1 + n % 5)
        rows.append({"prompt": build_prompt("chat", p.text(), tok), "completion": task.solution(p, "short")})
    path = tmp_path_factory.mktemp("toydata") / "sft.jsonl"
    io.write_jsonl(path, rows)
    return path


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def _changed(a: Path, b: Path) -> bool:
    before, after = _weights(a), _weights(b)
    assert before.keys() == after.keys()
    return any(not torch.equal(before[k].float(), after[k].float()) for k in before)


def _rows(path: Path) -> list[dict]:
    return io.read_jsonl(path)


# ---- short-CoT rows -------------------------------------------------------------------------------


def test_keep_correct_shortest_per_problem_then_cap():
    problems = {("mix", "a"): "What is 1+1?", ("mix", "b"): "What  is\n1+1?", ("mix", "c"): "What is 2+2?",
                ("mix", "d"): "What is 3+3?"}
    gen = [  # hand-made generation rows, in the run's order (problem, sample)
        {"dataset": "mix", "id": "a", "sample": 0, "response": "long right 2", "correct": True, "finished": True,
         "truncated": False, "n_tokens": 30},
        {"dataset": "mix", "id": "a", "sample": 1, "response": "short wrong 3", "correct": False, "finished": True,
         "truncated": False, "n_tokens": 5},
        {"dataset": "mix", "id": "b", "sample": 0, "response": " short right 2 ", "correct": True, "finished": True,
         "truncated": False, "n_tokens": 10},
        {"dataset": "mix", "id": "c", "sample": 0, "response": "cut off 4", "correct": True, "finished": False,
         "truncated": True, "n_tokens": 8},
        {"dataset": "mix", "id": "c", "sample": 1, "response": "right 4", "correct": True, "finished": True,
         "truncated": False, "n_tokens": 12},
        {"dataset": "mix", "id": "c", "sample": 2, "response": "also right 4", "correct": True, "finished": True,
         "truncated": False, "n_tokens": 12},
        {"dataset": "mix", "id": "d", "sample": 0, "response": "wrong", "correct": False, "finished": True,
         "truncated": False, "n_tokens": 2},
    ]
    correct = correct_responses(gen, problems)
    assert [(c["id"], c["solution"]) for c in correct] == [("a", "long right 2"), ("b", "short right 2"),
                                                          ("c", "right 4"), ("c", "also right 4")]
    kept = keep_shortest(correct, n=10, seed=0)
    assert [(c["id"], c["solution"]) for c in kept] == [("b", "short right 2"), ("c", "right 4")]  # a == b: one problem
    capped = [keep_shortest(correct, n=1, seed=s)[0]["id"] for s in range(20)]
    assert set(capped) == {"b", "c"} and capped == [keep_shortest(correct, n=1, seed=s)[0]["id"] for s in range(20)]


def test_rows_from_a_solutions_file_in_the_r1_format(standins, r1_tokenizer, tmp_path):
    src = tmp_path / "solutions.jsonl"
    io.write_jsonl(src, [{"problem": "What is 2+3?", "solution": "2+3 = 5, so the answer is \\boxed{5}."},
                         {"problem": "What is  2+3?", "solution": "\\boxed{5}"},
                         {"id": "p2", "problem": "What is 4*4?", "solution": "4*4 = \\boxed{16}"},
                         {"problem": "What is 9-1?", "solution": "\\boxed{8}"}])
    cfg = ShortCoTConfig(long_model=str(standins["slow"]), out=str(tmp_path / "out"), solutions=str(src), n=2)
    out = build_short_cot(cfg)
    rows = _rows(out / "sft.jsonl")
    assert len(rows) == 2 and [r["id"] for r in rows] == json.loads((out / "short_cot.json").read_text())["ids"]
    assert "0" not in [r["id"] for r in rows]  # its re-spaced duplicate "1" has the shorter solution
    for r in rows:
        assert r["prompt"] == build_prompt("qwen25-math-cot", r["problem"], r1_tokenizer)  # what l2s sample sends
        assert r["prompt"].startswith(BOS + "Please reason step by step")
        assert r["prompt"].endswith("<｜Assistant｜><think>\n")
        assert r["completion"] == r["solution"] + EOS and r["prompt"].count(BOS) == 1
    meta = json.loads((out / "short_cot.json").read_text())
    assert meta["source"]["mode"] == "file" and meta["source"]["sha256"] and meta["counts"]["problems"] == 3
    assert meta["counts"]["kept"] == 2 and meta["provenance"]["git"]
    first = (out / "sft.jsonl").read_bytes()
    assert build_short_cot(cfg) == out and (out / "sft.jsonl").read_bytes() == first
    with pytest.raises(FileExistsError, match="another config"):
        build_short_cot(ShortCoTConfig(long_model=str(standins["slow"]), out=str(out), solutions=str(src), n=3))
    with pytest.raises(ValueError, match="exactly one of solutions"):
        ShortCoTConfig(long_model="m", out="o")
    io.write_jsonl(src, [{"problem": "p", "answer": "1"}])
    with pytest.raises(ValueError, match=r"solutions.jsonl \(row 0\): field 'solution' must be a non-empty string"):
        build_short_cot(ShortCoTConfig(long_model=str(standins["slow"]), out=str(tmp_path / "o2"), solutions=str(src)))


def test_rows_generated_by_a_source_model_with_the_hf_backend(standins, tmp_path, capsys):
    """A ChatML stand-in answers (random text: nothing correct), the run resumes, and hand-made generations
    then go through keep-correct / shortest / cap into R1-format rows."""
    data = tmp_path / "data"
    io.write_jsonl(data / "gsm8k" / "train.jsonl", [
        {"question": "Tom has 3 apples and buys 4 more. How many?", "answer": "#### 7"},
        {"question": "Tom has 3 apples and  buys 4 more. How many?", "answer": "#### 7"},
        {"question": "What is 10 minus 2?", "answer": "#### 8"},
        {"question": "What is 6 times 7?", "answer": "#### 42"}])
    out = tmp_path / "out"
    argv = ["short-cot", "--long-model", str(standins["slow"]), "--source-model", str(standins["quick"]),
            "--out", str(out), "--dataset", "gsm8k", "--data-dir", str(data), "--k", "2", "--temperature", "0.7",
            "--max-new-tokens", "6", "--backend", "hf", "--n", "2"]
    assert main(argv) == 2
    assert "no correct, finished response among the 8 responses" in capsys.readouterr().err
    gen_path = out / "generate" / "generations.jsonl"
    gen = io.read_jsonl(gen_path)
    assert len(gen) == 8 and gen[0]["prompt"].startswith("<|im_start|>system\nPlease reason step by step")
    assert all(r["truncated"] and not r["correct"] for r in gen)
    answers = {"0": "7", "1": "7", "2": "8", "3": "42"}
    for r in gen:  # problem 0: both right (sample 1 shorter); 1 (same text as 0): right, longer; 2: one right; 3: none
        right = r["id"] in ("0", "1") or (r["id"] == "2" and r["sample"] == 0)
        text = f"{'Adding' if r['sample'] == 0 else 'So'} gives \\boxed{{{answers[r['id']]}}}." if right else "No idea."
        r.update(response=text, correct=right, finished=True, truncated=False,
                 n_tokens={"0": 20 - 5 * r["sample"], "1": 30, "2": 9, "3": 3}[r["id"]])
    io.write_jsonl(gen_path, gen)
    assert main(argv) == 0  # nothing left to generate: the run is final, the hand-made rows are used
    rows = _rows(out / "sft.jsonl")
    assert sorted((r["id"], r["solution"]) for r in rows) == [("0", "So gives \\boxed{7}."),
                                                              ("2", "Adding gives \\boxed{8}.")]
    assert all(r["dataset"] == "gsm8k" and r["prompt"].startswith(BOS) and r["completion"].endswith(EOS) for r in rows)
    meta = json.loads((out / "short_cot.json").read_text())
    assert meta["source"]["correct_and_finished"] == 5 and meta["source"]["responses"] == 8
    assert meta["counts"] == {"candidates": 5, "problems": 2, "kept": 2, "n": 2}


# ---- SFT ------------------------------------------------------------------------------------------


def test_chat_rows_and_completion_only_labels(micro_model, r1_tokenizer, toy_data, tmp_path):
    from l2s.tokenizers import load_tokenizer

    pc = chat_prompt_completion(r1_tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                               {"role": "assistant", "content": "A"}], "x")
    assert pc == {"prompt": BOS + "S<｜User｜>Q<｜Assistant｜><think>\n", "completion": "A" + EOS}
    assert turn_end(r1_tokenizer) == EOS
    tok = load_tokenizer(micro_model)
    chats = tmp_path / "chats.jsonl"
    io.write_jsonl(chats, [{"messages": [{"role": "user", "content": r["prompt"]},
                                         {"role": "assistant", "content": r["completion"]}]} for r in _rows(toy_data)])
    examples, fmt = read_examples(chats, tok)
    assert fmt == "messages" and examples[0]["completion"].endswith(turn_end(tok))
    examples, fmt = read_examples(toy_data, tok)
    tokenized = tokenize_examples(tok, examples)
    assert fmt == "prompt-completion" and tokenized["input_ids"][0][-1] == tok.eos_token_id
    from transformers import AutoModelForCausalLM

    trainer = build_trainer(AutoModelForCausalLM.from_pretrained(micro_model), tok, tokenized,
                            preset_config("toy"), tmp_path / "work")
    row = trainer.train_dataset[0]
    n_prompt = tokenized["completion_mask"][0].count(0)
    assert row["input_ids"] == tokenized["input_ids"][0]
    assert row["labels"][:n_prompt] == [-100] * n_prompt and row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
    io.write_jsonl(chats, [{"prompt": "p"}])
    with pytest.raises(ValueError, match=r"chats.jsonl \(row 0\): needs string fields 'prompt' and 'completion'"):
        read_examples(chats, tok)


def test_full_sft_changes_the_weights_records_and_reuses(micro_model, toy_data, tmp_path):
    config = preset_config("toy", max_steps=3)
    out = train_sft(micro_model, toy_data, tmp_path / "sft", config)
    assert _changed(micro_model, out)
    meta = json.loads((out / "l2s_sft.json").read_text())
    assert meta["config"]["preset"] == "toy" and meta["config"]["max_steps"] == 3 and meta["train"]["global_step"] == 3
    assert meta["data"]["rows"] == 8 and meta["data"]["format"] == "prompt-completion" and meta["data"]["sha256"]
    assert meta["provenance"]["packages"]["trl"] and meta["provenance"]["git"]
    assert meta["request"]["model"]["sha256:config.json"]
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= files
    assert not list(tmp_path.glob(".sft*"))
    stamp = (out / "l2s_sft.json").stat().st_mtime_ns
    assert train_sft(micro_model, toy_data, tmp_path / "sft", preset_config("toy", max_steps=3)) == out
    assert (out / "l2s_sft.json").stat().st_mtime_ns == stamp  # the same call reuses the checkpoint
    with pytest.raises(FileExistsError, match="made from another model, data or config"):
        train_sft(micro_model, toy_data, out, preset_config("toy", max_steps=2))


def test_lora_via_cli_merges_the_adapter(micro_model, toy_data, tmp_path):
    out = tmp_path / "lora"
    assert main(["sft", "--model", str(micro_model), "--data", str(toy_data), "--out", str(out), "--preset", "toy",
                 "--lora", "--max-steps", "2", "--learning-rate", "0.01"]) == 0
    assert _changed(micro_model, out) and not (out / "adapter_config.json").exists()
    assert json.loads((out / "l2s_sft.json").read_text())["config"]["lora"] is True


def test_bf16_checkpoint_trains_on_fp32_masters_and_is_saved_bf16(standins, r1_tokenizer, tmp_path):
    data = tmp_path / "sft.jsonl"
    io.write_jsonl(data, [{"prompt": build_prompt("qwen25-math-cot", f"What is {i}+{i}?", r1_tokenizer),
                           "completion": f"{i}+{i} = \\boxed{{{2 * i}}}" + EOS} for i in range(4)])
    out = train_sft(standins["slow"], data, tmp_path / "short",
                    preset_config("short-cot", max_steps=2, effective_batch_size=4, per_device_train_batch_size=4,
                                  learning_rate=1e-4, warmup=0.0, logging_steps=1, gradient_checkpointing=False))
    meta = json.loads((out / "l2s_sft.json").read_text())
    assert meta["dtypes"] == {"checkpoint": "bfloat16", "weights": "float32", "autocast": "bfloat16",
                              "saved": "bfloat16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert {t.dtype for t in _weights(out).values()} == {torch.bfloat16} and _changed(standins["slow"], out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        assert (out / name).read_bytes() == (standins["slow"] / name).read_bytes(), name
    config, before = (json.loads((d / "config.json").read_text()) for d in (out, standins["slow"]))
    assert {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")} == \
        {k: before[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    assert PRESETS["short-cot"]["learning_rate"] == 1e-5 and PRESETS["short-cot"]["bf16"] is True
