"""A micro toy family builds in seconds, is cached, loads with AutoModelForCausalLM and generates."""

import json

import pytest
import torch

from l2s.toy import build, family, task
from l2s.toy.tokenizer import build_tokenizer
from l2s.toy.train import encode_example, prompt_messages


@pytest.fixture(scope="module")
def micro_family(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, build.build_family("micro", cache=cache)


def test_micro_family_is_built_cached_and_loads(micro_family, tmp_path):
    from transformers import AutoModelForCausalLM

    from l2s.tokenizers import load_tokenizer

    cache, dirs = micro_family
    assert set(dirs) == {"quick", "slow", "short"}
    for role, path in dirs.items():
        card = json.loads((path / build.CARD).read_text())
        assert card["role"] == role and card["training"]["steps"] > 0
        assert card["provenance"]["packages"]["torch"].startswith("2.13.0")
        for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json"):
            assert (path / name).is_file(), name
    assert json.loads((dirs["slow"] / build.CARD).read_text())["parent"] == "quick"
    mtime = (dirs["slow"] / "model.safetensors").stat().st_mtime_ns
    again = build.build_family("micro", cache=cache)
    assert again == dirs and (dirs["slow"] / "model.safetensors").stat().st_mtime_ns == mtime

    model = AutoModelForCausalLM.from_pretrained(dirs["slow"])
    assert type(model).__name__ == "Qwen2ForCausalLM"
    tok = load_tokenizer(dirs["slow"])
    text = task.solution(task.sample_problem(__import__("random").Random(3), 5), "long")
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    prompt = tok.apply_chat_template(prompt_messages(task.sample_problem(__import__("random").Random(0), 3).text()),
                                     add_generation_prompt=True, tokenize=False)
    enc = tok([prompt, prompt], return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 2 and enc.input_ids.shape[1] < out.shape[1] <= enc.input_ids.shape[1] + 5


def test_slow_is_a_fine_tune_of_quick(micro_family):
    from safetensors.torch import load_file

    _, dirs = micro_family
    q, s = load_file(dirs["quick"] / "model.safetensors"), load_file(dirs["slow"] / "model.safetensors")
    assert q.keys() == s.keys()
    diff = sum(((s[k] - q[k]) ** 2).sum() for k in q) ** 0.5
    norm = sum((q[k] ** 2).sum() for k in q) ** 0.5
    assert 0 < diff / norm < 1


def test_export_refuses_foreign_dir_and_reuses_same(micro_family, tmp_path):
    cache, _ = micro_family
    out = tmp_path / "fam"
    build.export_family("micro", out, cache=cache)
    assert (out / "short" / "model.safetensors").is_file()
    build.export_family("micro", out, cache=cache)  # same build: fine
    (tmp_path / "other").mkdir()
    with pytest.raises(FileExistsError, match="--overwrite"):
        build.export_family("micro", tmp_path / "other", cache=cache)


def test_labels_mask_the_prompt():
    tok = build_tokenizer()
    p = task.sample_problem(__import__("random").Random(1), 2)
    ex = encode_example(tok, p, "terse")
    n_prompt = sum(1 for x in ex["labels"] if x == -100)
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert ex["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(ex["input_ids"][n_prompt:-1]) == task.solution(p, "terse")


def test_unknown_size_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown toy size"):
        family.get_size("xxl")
    assert family.DEFAULT_SIZE in family.SIZES and torch.__version__.startswith("2.13")


def test_toy_checkpoints_are_standard_for_auto_tokenizer_and_hf_backend(micro_family):
    """A toy checkpoint is a byte-level BPE Qwen2 checkpoint: AutoTokenizer, l2s's loader and the HF backend
    give the same ids and exact text, and its heads are 32 wide (vLLM's smallest)."""
    from transformers import AutoConfig, AutoTokenizer

    from l2s.eval.backends.hf import HFBackend
    from l2s.tokenizers import load_tokenizer, saved_tokenizer_model

    _, dirs = micro_family
    text = task.solution(task.sample_problem(__import__("random").Random(4), 4), "long", check=True)
    for role, path in dirs.items():
        assert saved_tokenizer_model(path) == "BPE", role
        auto, ours = AutoTokenizer.from_pretrained(path), load_tokenizer(path)
        ids = auto(text, add_special_tokens=False).input_ids
        assert ours(text, add_special_tokens=False).input_ids == ids and auto.decode(ids) == text
        config = AutoConfig.from_pretrained(path)
        assert config.hidden_size // config.num_attention_heads == 32
    backend = HFBackend(str(dirs["quick"]), batch_size=2)
    assert backend.tokenizer.decode(backend.tokenizer(text, add_special_tokens=False).input_ids) == text


def test_every_size_has_heads_vllm_supports():
    for size in family.SIZES.values():
        assert size.hidden_size // size.num_attention_heads == 32, size.name
        assert size.num_attention_heads % size.num_key_value_heads == 0, size.name


def test_corrupt_tokenizer_file_is_a_clear_error(tmp_path):
    from l2s.tokenizers import saved_tokenizer_model

    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        saved_tokenizer_model(tmp_path)
    assert saved_tokenizer_model(tmp_path / "missing") is None


def test_stage_examples_are_seeded_level_balanced_and_follow_the_curriculum():
    from l2s.toy.train import stage_examples

    tok = build_tokenizer()
    rows = task.make_splits({"train": 30}, seed=0)["train"]
    problems = [task.problem_from_row(r) for r in rows]
    stage = family.Stage({"direct": 0.5, "terse": 0.5}, steps=20, lr=1e-3, batch_size=8, easy_first=0.5)
    a, b = stage_examples(tok, problems, stage, seed=1), stage_examples(tok, problems, stage, seed=1)
    assert a == b and len(a) == 160

    def level(ex):
        prompt = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100]
        n_moves = sum(t.lstrip("Ġ") in task.MOVES for t in tok.convert_ids_to_tokens(prompt))
        return next(lv for lv, k in task.ROUNDS.items() if k == n_moves)

    assert {level(ex) for ex in a[:80]} <= {1, 2}
    assert {level(ex) for ex in a[80:]} == {1, 2, 3, 4, 5}
