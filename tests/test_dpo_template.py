"""``l2s dpo`` on an R1-templated model trains on what was sampled: the reasoning, and one BOS.

R1-distill's chat template keeps only what follows ``</think>`` of an assistant turn, and its generation
prompt ends in ``<think>\\n``; its tokenizer adds a BOS to a text that already starts with
``<｜begin▁of▁sentence｜>`` when special tokens are on. So TRL's own tokenization of the pairs would train
on the final answers only (conversational pairs) or see two BOS (text pairs). ``l2s.dpo.train`` tokenizes
the pairs itself: ``prompt_text`` + raw response + eos, without special tokens. Here, on the R1-Distill-
Qwen-7B stand-in (real R1 tokenizer and template, random tiny weights) and hand-made pairs whose
responses are ``reasoning </think> answer``, the ids the model is fed are checked in a 2-step DPO run
(and a 1-step SFT run). Skipped without the shared tokenizers (``shared_data``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from l2s.dpo import preset_config
from l2s.dpo.train import train  # l2s.dpo.train, once imported (test_dpo_scale), shadows l2s.dpo's lazy train
from l2s.prefs.build import write_pairs_dir

R1_BOS_ID, R1_EOS_ID, THINK_END_ID = 151646, 151643, 151649
QUESTIONS = [("What is 3 plus 4?", 3, 4), ("What is 10 minus 2?", 10, -2), ("What is 6 plus 6?", 6, 6),
             ("What is 9 plus 5?", 9, 5)]


@pytest.fixture(scope="module")
def slow(shared_data, tmp_path_factory):
    from l2s.standins import StandinConfig, build_standins

    tok = shared_data / "tokenizers"
    return build_standins(StandinConfig("qwen-7b", qwen_tokenizer=str(tok / "qwen2.5"),
                                        r1_tokenizer=str(tok / "deepseek-r1-distill-qwen")),
                          cache=tmp_path_factory.mktemp("standins"))["slow"]


@pytest.fixture(scope="module")
def tok(slow):
    from l2s.tokenizers import load_tokenizer

    return load_tokenizer(slow)


def _reasoning(a: int, b: int, wrong: bool) -> tuple[str, str]:
    """``(reasoning, whole response)``: an R1-style response (the generation prompt opened <think>)."""
    total = a + b + (1 if wrong else 0)
    reasoning = f"Let me work it out step by step: {a} + {b} = {total}. Check: {total} - {b} = {total - b}."
    return reasoning, f"{reasoning}\n</think>\n\nThe answer is \\boxed{{{total}}}."


def _records(tok, fmt: str) -> list[dict]:
    """Pairs as `l2s pairs` writes them: ``chat`` (messages + prompt_text), ``legacy`` (messages, no
    prompt_text: rendered with the generation prompt), ``text`` (strings), ``sft`` (prompt/completion)."""
    rows = []
    for i, (q, a, b) in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": q}]
        prompt_text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        chosen, rejected = _reasoning(a, b, False)[1], _reasoning(a, b, True)[1]
        chat = fmt != "text"
        row = {"dataset": "hand", "id": f"q{i}", "level": 1, "prompt": messages if chat else prompt_text,
               "prompt_text": prompt_text}
        turn = (lambda t: [{"role": "assistant", "content": t}]) if chat else (lambda t: t)
        if fmt == "sft":
            row["completion"] = turn(chosen)
        else:
            row.update(chosen=turn(chosen), rejected=turn(rejected), kind="group")
        if fmt == "legacy":
            del row["prompt_text"]
        rows.append(row)
    return rows


def _pairs_dir(tok, root, fmt: str):
    meta = {"kind": "pairs", "format": "prompt-completion" if fmt == "sft" else "preference",
            "prompt_format": "standard" if fmt == "text" else "conversational", "pairs": {"variant": fmt}}
    return write_pairs_dir(root / f"pairs-{fmt}", _records(tok, fmt), None, {"n_rows": len(QUESTIONS)}, meta, 0)


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def _reasoning_ids(tok, reasoning: str) -> list[int]:
    """The ids of the reasoning and its ``</think>`` (an added token, so the text before it is tokenized
    on its own, as in the whole response)."""
    return tok(reasoning + "\n", add_special_tokens=False)["input_ids"] + [THINK_END_ID]


def _fed_ids(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Make every trainer ``l2s.dpo.train`` builds record the (input_ids, attention_mask, labels) its
    policy model is called with."""
    import l2s.dpo.train as dpo_train

    fed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    build = dpo_train._trainer

    def recording(*args, **kwargs):
        trainer = build(*args, **kwargs)

        def hook(module, a, kw):
            ids = kw.get("input_ids", a[0] if a else None)
            if ids is not None:
                mask = kw.get("attention_mask")
                mask = mask if mask is not None else torch.ones_like(ids)
                labels = kw.get("labels")
                fed.append((ids.detach().clone(), mask.clone(), None if labels is None else labels.clone()))

        trainer.model.register_forward_pre_hook(hook, with_kwargs=True)
        return trainer

    monkeypatch.setattr(dpo_train, "_trainer", recording)
    return fed


def _check_sequence(tok, ids: list[int], question: str) -> None:
    """One BOS, at the start; the prompt as sampled (ends in <think>\\n); then a response ending in eos."""
    assert ids[0] == R1_BOS_ID and ids.count(R1_BOS_ID) == 1, ids[:4]
    prompt = tok(tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    assert ids[:len(prompt)] == prompt and tok.decode(prompt).endswith("<｜Assistant｜><think>\n")
    assert THINK_END_ID in ids and ids[-1] == R1_EOS_ID


@pytest.mark.parametrize("fmt", ["chat", "text"])
def test_dpo_feeds_the_sampled_reasoning_and_one_bos(slow, tok, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "cache"))
    pairs = _pairs_dir(tok, tmp_path, fmt)
    fed = _fed_ids(monkeypatch)
    config = preset_config("adar1-7b", max_steps=2, effective_batch_size=2, per_device_train_batch_size=2,
                           learning_rate=1e-3, bf16=False, activation_checkpointing=False, logging_steps=1)
    out = train(slow, pairs, tmp_path / "dpo", config)
    meta = json.loads((out / "l2s_train.json").read_text())
    losses = [h["loss"] for h in meta["log_history"] if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses) and meta["train"]["global_step"] == 2

    reasonings = {q: (_reasoning(a, b, False)[0], _reasoning(a, b, True)[0]) for q, a, b in QUESTIONS}
    assert len(fed) == 2  # one policy forward per step: chosen rows, then rejected rows
    seen = set()
    for ids, mask, _ in fed:
        half = ids.shape[0] // 2
        for row in range(ids.shape[0]):
            seq = ids[row][mask[row].bool()].tolist()
            text = tok.decode(seq)
            q = next(q for q in reasonings if q in text)
            _check_sequence(tok, seq, q)
            reasoning = reasonings[q][0 if row < half else 1]  # the chosen is right, the rejected is wrong
            assert _contains(seq, _reasoning_ids(tok, reasoning)), text
            seen.add((q, row < half))
    assert len(seen) == 2 * len(QUESTIONS)  # 2 steps x 2 pairs: every chosen and rejected fed once
    t = meta["tokenization"]
    assert t["add_special_tokens"] is False and t["prompt_source"]["prompt_text"] == len(QUESTIONS)
    assert t["rows_starting_with_bos"] == len(QUESTIONS) and t["rows_with_double_bos"] == 0
    assert t["eos_token"] == "<｜end▁of▁sentence｜>" and t["eos_appended"] == 2 * len(QUESTIONS)


def test_prompts_without_prompt_text_render_with_the_generation_prompt(tok):
    from datasets import Dataset

    from l2s.dpo.train import tokenize_pairs

    ids = {}
    for fmt in ("chat", "legacy", "text"):
        ids[fmt], record = tokenize_pairs(Dataset.from_list(_records(tok, fmt)), tok, "dpo")
        assert record["rows_with_double_bos"] == 0 and record["rows_starting_with_bos"] == len(QUESTIONS)
    assert record["prompt_source"] == {"prompt_text": len(QUESTIONS), "prompt": 0, "chat_template": 0}
    _, legacy = tokenize_pairs(Dataset.from_list(_records(tok, "legacy")), tok, "dpo")
    assert legacy["prompt_source"]["chat_template"] == len(QUESTIONS)
    assert ids["chat"].to_dict() == ids["legacy"].to_dict() == ids["text"].to_dict()


def test_max_length_drops_a_filled_prompt_and_cuts_the_rest(slow, tok, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from l2s.dpo.train import _trainer, tokenize_pairs

    rows = _records(tok, "chat")
    long_q = "What is " + " plus ".join(["1"] * 40) + "?"
    rows[0]["prompt"] = [{"role": "user", "content": long_q}]
    rows[0]["prompt_text"] = tok.apply_chat_template(rows[0]["prompt"], tokenize=False, add_generation_prompt=True)
    config = preset_config("adar1-7b", max_length=40, effective_batch_size=2, per_device_train_batch_size=2,
                           bf16=False, activation_checkpointing=False)
    args = config.trainer_args("dpo", str(tmp_path / "work"))
    dataset, record = tokenize_pairs(Dataset.from_list(rows), tok, "dpo", args.max_length, args.truncation_mode)
    assert len(dataset[0]["prompt_ids"]) >= 40 > len(dataset[1]["prompt_ids"])
    assert record["rows_dropped_prompt_fills_max_length"] == 1 and record["rows_truncated"] == len(QUESTIONS)
    trainer = _trainer("dpo", AutoModelForCausalLM.from_pretrained(slow, dtype=torch.float32), tok, dataset, args,
                       None)
    assert len(trainer.train_dataset) == len(QUESTIONS) - 1  # TRL's rule: no completion token would be left
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape[1] == 40 and (batch["input_ids"][:, 0] == R1_BOS_ID).all()


def test_sft_variant_trains_on_the_reasoning_with_one_bos(slow, tok, tmp_path, monkeypatch):
    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "cache"))
    pairs = _pairs_dir(tok, tmp_path, "sft")
    fed = _fed_ids(monkeypatch)
    config = preset_config("adar1-7b", max_steps=1, effective_batch_size=4, per_device_train_batch_size=4,
                           bf16=False, activation_checkpointing=False, logging_steps=1)
    out = train(slow, pairs, tmp_path / "sft", config)
    meta = json.loads((out / "l2s_train.json").read_text())
    ids, mask, labels = fed[0]
    assert ids.shape[0] == len(QUESTIONS) and labels is not None
    for row in range(ids.shape[0]):
        seq = ids[row][mask[row].bool()].tolist()
        q, a, b = next(x for x in QUESTIONS if x[0] in tok.decode(seq))
        _check_sequence(tok, seq, q)
        trained = [t for t in labels[row].tolist() if t != -100]  # the loss is on the whole response
        response = tok(_reasoning(a, b, False)[1] + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert trained == response and _contains(trained, _reasoning_ids(tok, _reasoning(a, b, False)[0]))
    assert meta["method"] == "sft" and meta["trainer_args"]["completion_only_loss"] is True
    assert meta["tokenization"]["rows_with_double_bos"] == 0
