"""DPO / SFT on a micro random Qwen2 with the toy tokenizer: a few CPU steps, checkpoints that load and generate."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import pytest
import torch

from l2s.cli import main
from l2s.dpo import PRESETS, TrainConfig, preset_config, train
from l2s.io import write_jsonl
from l2s.prefs import PairsConfig, write_pairs
from l2s.toy import task
from l2s.toy.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parent.parent


def _runs(root: Path) -> tuple[Path, Path]:
    """Toy problems: the long model writes `long` solutions (1 in 4 wrong), the short one `short` (all right)."""
    tok = build_tokenizer()
    rng = random.Random(0)
    long, short = [], []
    for n in range(6):
        p = task.sample_problem(rng, level=1 + n % 5)
        prompt = tok.apply_chat_template([{"role": "user", "content": p.text()}], tokenize=False,
                                         add_generation_prompt=True)
        for style, rows in (("long", long), ("short", short)):
            for k in range(4):
                text = task.solution(p, style)
                wrong = style == "long" and k == 3
                if wrong:  # the final answer moved to the next cup
                    other = task.CUPS[(task.CUPS.index(p.answer) + 1) % task.N_CUPS]
                    text = text.replace(f"\\boxed{{{p.answer}}}", f"\\boxed{{{other}}}")
                rows.append({"id": f"p{n}", "dataset": "toy", "level": p.level, "sample": k, "prompt": prompt,
                             "response": text, "correct": not wrong, "n_tokens": len(tok(text)["input_ids"])})
    for name, rows in (("long", long), ("short", short)):
        (root / name).mkdir()
        write_jsonl(root / name / "generations.jsonl", rows)
    return root / "long", root / "short"


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pairs")
    long, short = _runs(root)
    return {v: write_pairs(root / v, long, short, PairsConfig(variant=v, m1=2)) for v in ("group", "sft")}


def _losses(ckpt: Path) -> list[float]:
    return [h["loss"] for h in json.loads((ckpt / "l2s_train.json").read_text())["log_history"] if "loss" in h]


def _generates(ckpt: Path) -> None:
    from transformers import AutoModelForCausalLM

    from l2s.tokenizers import load_tokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(ckpt), load_tokenizer(ckpt)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Where is the ball ?"}], return_tensors="pt",
                                     add_generation_prompt=True, return_dict=True)
    out = model.generate(**prompt, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_dpo_full_finetune_smoke(micro_model, pairs, tmp_path):
    config = preset_config("toy", loss_type=["sigmoid"], loss_weights=None, learning_rate=1e-2, max_steps=4,
                           effective_batch_size=4, per_device_train_batch_size=4, logging_steps=1, warmup_steps=0)
    out = train(micro_model, pairs["group"], tmp_path / "dpo", config)
    losses = _losses(out)
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-4)     # policy == reference at step 0: -log σ(0)
    assert losses[-1] < losses[0]                                # it learns to prefer the chosen responses
    meta = json.loads((out / "l2s_train.json").read_text())
    assert meta["method"] == "dpo" and meta["config"]["preset"] == "toy" and meta["pairs"]["n_rows"] == 12
    assert meta["save_dtype"] == "float32" and meta["trainer_args"]["loss_type"] == ["sigmoid"]
    assert meta["provenance"]["packages"]["trl"] and meta["model"]["sha256:config.json"]
    tokenization = meta["tokenization"]
    assert tokenization["scheme"] == "sampled-text-v1" and tokenization["add_special_tokens"] is False
    assert tokenization["prompt_source"] == {"prompt_text": 12, "prompt": 0, "chat_template": 0}
    assert tokenization["eos_appended"] == 24 and tokenization["rows_dropped_prompt_fills_max_length"] == 0
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= files
    before, after = _weights(micro_model), _weights(out)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    _generates(out)
    assert not list(tmp_path.glob(".dpo*"))


def test_rpo_alpha_adds_the_nll_of_the_chosen(micro_model, pairs, tmp_path):
    config = preset_config("toy", loss_weights=[1.0, 0.5], max_steps=1, effective_batch_size=12,
                           per_device_train_batch_size=12, logging_steps=1, warmup_steps=0)
    out = train(micro_model, pairs["group"], tmp_path / "rpo", config)
    # step 0: log 2 + α · mean NLL of the chosen tokens; a random V-way model has NLL near log V
    nll = (_losses(out)[0] - math.log(2)) / 0.5
    vocab = json.loads((Path(micro_model) / "config.json").read_text())["vocab_size"]
    assert 0.7 * math.log(vocab) < nll < 1.3 * math.log(vocab)


def test_lora_via_cli_merges_the_adapter(micro_model, pairs, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("max_steps: 2\nlearning_rate: 1e-2\neffective_batch_size: 4\nper_device_train_batch_size: 4\n"
                   "lora: {r: 4, lora_alpha: 8}\n")  # YAML reads 1e-2 as a string: converted for a float
    out = tmp_path / "lora"
    assert main(["dpo", "--model", str(micro_model), "--pairs", str(pairs["group"]), "--preset", "toy",
                 "--config", str(cfg), "--lora", "--out", str(out)]) == 0
    before, after = _weights(micro_model), _weights(out)
    assert before.keys() == after.keys()                        # merged: plain Qwen2 weights, no lora_A/lora_B
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("proj" in k for k in changed)        # only the adapted linear layers moved
    meta = json.loads((out / "l2s_train.json").read_text())
    assert meta["config"]["lora"] == {"r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": "all-linear"}
    assert meta["config"]["learning_rate"] == 0.01
    _generates(out)


def test_sft_variant_trains_with_sft_trainer(micro_model, pairs, tmp_path):
    config = preset_config("toy", max_steps=2, effective_batch_size=4, per_device_train_batch_size=4,
                           logging_steps=1)
    out = train(micro_model, pairs["sft"], tmp_path / "sft", config)
    meta = json.loads((out / "l2s_train.json").read_text())
    assert meta["method"] == "sft" and all(math.isfinite(x) for x in _losses(out))
    with pytest.raises(ValueError, match="needs preference data"):
        train(micro_model, pairs["sft"], tmp_path / "x", preset_config("toy", method="dpo"))


@pytest.mark.parametrize("source", ["group", "sft", "toy-s-group", "toy-s-sft"])
def test_toy_ids_are_trls_own_tokenization_less_the_newline_after_eos(micro_model, pairs, source, tmp_path):
    """The toy chat template (ChatML) keeps a response whole, so l2s's tokenization (prompt_text + response
    + eos, no special tokens) gives the ids of TRL's own rendering of the conversational pairs, prompt
    for prompt, but for the newline the template writes after each turn's <|im_end|>: the byte-level
    tokenizer keeps it as a token, and l2s trains without it, as the model, sampled until its eos, never
    wrote it. Checked on fresh pairs and on the committed toy study's (runs/toy-s-adar1)."""
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer, SFTTrainer

    from l2s.dpo.train import COLUMNS, TOKEN_COLUMNS, _trainer, load_pairs, tokenize_pairs

    pairs_dir = pairs.get(source)
    if pairs_dir is None:  # a copy: TRL's tokenization writes datasets cache files beside the dataset
        pairs_dir = shutil.copytree(REPO / "runs" / "toy-s-adar1" / f"pairs-{source[6:]}", tmp_path / "pairs")
    dataset, _ = load_pairs(pairs_dir)
    method = "sft" if "sft" in source else "dpo"
    tok = build_tokenizer()
    args = preset_config("toy").trainer_args(method, str(tmp_path / "work"))
    ids, _ = tokenize_pairs(dataset, tok, method, args.max_length, args.truncation_mode)
    ours = _trainer(method, AutoModelForCausalLM.from_pretrained(micro_model), tok, ids, args, None)
    trl_class = SFTTrainer if method == "sft" else DPOTrainer
    theirs = trl_class(model=AutoModelForCausalLM.from_pretrained(micro_model), args=args, processing_class=tok,
                       train_dataset=dataset.select_columns(list(COLUMNS[method])))
    columns = ["input_ids", "labels"] if method == "sft" else list(TOKEN_COLUMNS[method])
    ids = {name: t.train_dataset.select_columns(columns).to_dict() for name, t in (("l2s", ours), ("trl", theirs))}
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    assert len(newline) == 1 and newline != [tok.eos_token_id]
    for column in columns:
        l2s_ids, trl_ids = ids["l2s"][column], ids["trl"][column]
        assert len(l2s_ids) == len(trl_ids) == dataset.num_rows, column
        if column == "prompt_ids":
            assert l2s_ids == trl_ids
        else:  # every response (and its labels) ends at the eos; TRL's goes on to the template's newline
            assert all(r[-1] == tok.eos_token_id for r in l2s_ids), column
            assert trl_ids == [r + newline for r in l2s_ids], column


def test_presets_match_the_papers():
    assert set(PRESETS) == {"adar1-7b", "adar1-1.5b", "wu-dpo", "toy"}
    a7, a1, wu = preset_config("adar1-7b"), preset_config("adar1-1.5b"), preset_config("wu-dpo")
    assert (a7.args["beta"], a1.args["beta"], a7.args["learning_rate"], a7.args["num_train_epochs"],
            a7.effective_batch_size, a7.args["max_length"], a7.lora) == (0.1, 0.05, 5e-7, 2.0, 32, 4096, None)
    assert a7.args["bf16"] is True and a7.save_dtype == "float32"
    assert (wu.lora["r"], wu.args["learning_rate"], wu.args["num_train_epochs"], wu.args["max_length"]) == \
        (16, 5e-5, 3.0, 4096)
    assert a7.gradient_accumulation_steps(1) == 32 and a7.gradient_accumulation_steps(8) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        a7.gradient_accumulation_steps(3)
    toy = preset_config("toy").args  # the committed toy study was trained with these: they must not change
    assert (toy["learning_rate"], toy["beta"], toy["num_train_epochs"], toy["loss_type"], toy["loss_weights"]) == \
        (1e-4, 0.1, 2.0, ["sigmoid", "sft"], [1.0, 1.0])
    assert preset_config("toy", beta=0.3).args["beta"] == 0.3
    plain_dpo = preset_config("toy", loss_type=["sigmoid"], loss_weights=None)
    for config in (wu, plain_dpo, TrainConfig(args={"beta": 0.2})):
        assert TrainConfig.from_options(config.to_dict()).to_dict() == config.to_dict()  # l2s_train.json reruns
    assert TrainConfig.from_options({"lora": {"target_modules": ["q_proj"]}}).lora["target_modules"] == ["q_proj"]
    with pytest.raises(ValueError, match="lora.r must be int"):
        TrainConfig.from_options({"lora": {"r": "four"}})


def test_config_file_preset_and_flags(tmp_path):
    from l2s.cli import build_parser
    from l2s.dpo.cli import options_from_args

    cfg = tmp_path / "c.yaml"
    cfg.write_text("preset: adar1-1.5b\nlearning_rate: 5e-6\nlora: {r: 8}\n")

    def config(*flags):
        args = build_parser().parse_args(["dpo", "--model", "m", "--pairs", "p", "--out", "o", *flags])
        return TrainConfig.from_options(options_from_args(args), "c.yaml")

    c = config("--config", str(cfg), "--lora", "--set", "loss_type=[sigmoid, sft]", "--set", "loss_weights=[1, 0.5]")
    assert c.preset == "adar1-1.5b" and c.args["beta"] == 0.05 and c.args["learning_rate"] == 5e-6
    assert c.lora["r"] == 8 and c.args["loss_weights"] == [1, 0.5]
    c = config("--config", str(cfg), "--preset", "toy", "--beta", "0.2")  # flags > file > preset
    assert c.preset == "toy" and c.args["beta"] == 0.2 and c.args["learning_rate"] == 5e-6
    assert config().preset == "toy"


def test_checkpoints_go_beside_the_output_but_never_into_runs(tmp_path, monkeypatch):
    from l2s import paths
    from l2s.dpo.train import work_dir

    monkeypatch.setenv("L2S_CACHE", str(tmp_path / "cache"))
    assert work_dir(tmp_path / "models" / "adar1") == tmp_path / "models" / ".adar1.work"
    assert work_dir(paths.REPO_ROOT / "runs" / "x" / "adar1") == tmp_path / "cache" / "dpo-work" / "x" / "adar1"


def test_bad_inputs_give_clear_errors_and_leave_nothing(micro_model, pairs, tmp_path, capsys):
    from datasets import Dataset

    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("adar1-70b")
    with pytest.raises(ValueError, match="beta must be > 0"):
        TrainConfig(args={"beta": 0})
    with pytest.raises(ValueError, match="beta must be float, got 'high'"):
        preset_config("toy", beta="high")
    with pytest.raises(ValueError, match="gradient_accumulation_steps cannot be set"):
        preset_config("toy", gradient_accumulation_steps=2)
    with pytest.raises(FileNotFoundError, match="not an `l2s pairs` output"):
        train(micro_model, tmp_path / "nowhere", tmp_path / "o1", preset_config("toy"))
    empty = tmp_path / "empty"
    rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": "a"}]], "chosen": [[{"role": "assistant",
                              "content": "b"}]], "rejected": [[{"role": "assistant", "content": "c"}]]})
    rows.filter(lambda r: False).save_to_disk(str(empty / "dataset"))
    (empty / "config.json").write_text(json.dumps({"kind": "pairs", "format": "preference"}))
    with pytest.raises(ValueError, match="no rows"):
        train(micro_model, empty, tmp_path / "o2", preset_config("toy"))
    cut = tmp_path / "cut"
    Dataset.from_dict({"prompt": [[{"role": "user", "content": "a"}]], "chosen": [[{"role": "assistant",
                       "content": "b"}]]}).save_to_disk(str(cut / "dataset"))
    (cut / "config.json").write_text(json.dumps({"kind": "pairs", "format": "preference"}))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['rejected'\]"):
        train(micro_model, cut, tmp_path / "o3", preset_config("toy"))
    with pytest.raises(FileNotFoundError, match="model"):
        train(tmp_path / "no-model", pairs["group"], tmp_path / "o4", preset_config("toy"))
    assert main(["dpo", "--model", str(micro_model), "--pairs", str(pairs["group"]), "--out", str(tmp_path / "o5"),
                 "--preset", "toy", "--effective-batch-size", "6", "--per-device-train-batch-size", "4"]) == 2
    assert "not a multiple" in capsys.readouterr().err
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"bta": 0.1}))
    assert main(["dpo", "--model", str(micro_model), "--pairs", str(pairs["group"]), "--out", str(tmp_path / "o6"),
                 "--config", str(cfg)]) == 2
    assert "unknown key(s) ['bta']: 'bta' (did you mean 'beta'?)" in capsys.readouterr().err
    cfg.write_text(json.dumps({"preset": "adar1-70b"}))
    assert main(["dpo", "--model", str(micro_model), "--pairs", str(pairs["group"]), "--out", str(tmp_path / "o7"),
                 "--config", str(cfg)]) == 2
    assert "unknown preset 'adar1-70b'" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("o", ".o"))]


def test_rpo_term_keeps_the_chosen_likely(micro_model, pairs, tmp_path):
    """The toy failure mode: plain DPO at a high lr pushes the rejected down and drags the chosen with it;
    the NLL term (RPO α, loss_weights[1]) makes the chosen responses more likely instead."""
    chosen = {}
    for alpha in (None, 1.0):
        loss = dict(loss_type=["sigmoid"], loss_weights=None) if alpha is None else dict(loss_weights=[1.0, alpha])
        config = preset_config("toy", **loss, learning_rate=5e-4, max_steps=30, effective_batch_size=12,
                               per_device_train_batch_size=12, logging_steps=10)
        out = train(micro_model, pairs["group"], tmp_path / f"a{alpha}", config)
        hist = [h for h in json.loads((out / "l2s_train.json").read_text())["log_history"] if "loss" in h]
        chosen[alpha] = [h["logps/chosen"] for h in hist]
        assert hist[-1]["rewards/margins"] > hist[0]["rewards/margins"] > 0
    assert chosen[1.0][-1] > chosen[1.0][0] + 1
    assert chosen[1.0][-1] > chosen[None][-1] + 1
