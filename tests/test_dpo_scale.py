"""DPO at the papers' scale settings, on a tiny bf16 stand-in for a real checkpoint (CPU).

(a) the ``adar1-7b`` preset at lr 5e-7 moves most weights when saved in float32, few when saved in bf16
    (``save_dtype: auto`` saves in the input's bf16);
(b) a run killed while writing a checkpoint, rerun with the same command, resumes from the last complete
    checkpoint and ends with exactly the uninterrupted run's weights;
(c) ``accelerate launch`` with two gloo processes gives exactly the one-process result at the same
    effective batch size.

Tolerances are zero, and why that holds: on CPU every kernel is deterministic at a fixed thread count
(conftest sets one thread, inherited by the subprocesses); a resumed run reloads float32 weights, AdamW's
moments, the scheduler, the RNG states and the data order, so it repeats the same arithmetic; and two
processes average two micro-batch gradients as (g0 + g1) / 2 where one process accumulates g0/2 + g1/2,
which is the same number in floating point (halving is exact).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from l2s.dpo import preset_config, train
from l2s.dpo.train import last_checkpoint, work_dir
from l2s.io import read_json, write_jsonl
from l2s.prefs import PairsConfig, write_pairs
from l2s.toy import task
from l2s.toy.tokenizer import build_tokenizer

REPO = Path(__file__).resolve().parent.parent
# The paper preset, shrunk to the stand-in: 4 pairs per step (2 per device), 6 steps, a checkpoint every 2.
SHORT = ["--preset", "adar1-7b", "--max-steps", "6", "--effective-batch-size", "4",
         "--per-device-train-batch-size", "2", "--max-length", "512", "--save-steps", "2", "--learning-rate", "1e-4",
         "--set", "logging_steps=1"]

# A child `l2s dpo` that SIGKILLs itself while writing checkpoint-<step>: after its weights and optimizer
# state are on disk, before its RNG and trainer state.
KILLER = """
import os, signal, sys
import transformers
step, save = int(sys.argv[1]), transformers.Trainer._save_rng_state
def save_or_die(self, output_dir):
    if self.state.global_step == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, output_dir)
transformers.Trainer._save_rng_state = save_or_die
from l2s.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> dict[str, Path]:
    """A random Qwen2 saved in bf16 (as the real merges are), with the toy tokenizer, and 16 preference
    pairs in the `l2s pairs` format."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("standin")
    torch.manual_seed(0)
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rng = random.Random(0)
    runs: dict[str, list[dict]] = {"long": [], "short": []}
    for n in range(8):
        p = task.sample_problem(rng, level=1 + n % 5)
        prompt = tok.apply_chat_template([{"role": "user", "content": p.text()}], tokenize=False,
                                         add_generation_prompt=True)
        for style, rows in runs.items():
            for k in range(4):
                text, wrong = task.solution(p, style), style == "long" and k == 3
                if wrong:  # the final answer moved to the next cup
                    other = task.CUPS[(task.CUPS.index(p.answer) + 1) % task.N_CUPS]
                    text = text.replace(f"\\boxed{{{p.answer}}}", f"\\boxed{{{other}}}")
                rows.append({"id": f"p{n}", "dataset": "toy", "level": p.level, "sample": k, "prompt": prompt,
                             "response": text, "correct": not wrong, "n_tokens": len(tok(text)["input_ids"])})
    for style, rows in runs.items():
        (root / style).mkdir()
        write_jsonl(root / style / "generations.jsonl", rows)
    pairs = write_pairs(root / "pairs", root / "long", root / "short", PairsConfig(variant="group", m1=2))
    assert read_json(root / "model" / "config.json")["dtype"] == "bfloat16"
    return {"model": root / "model", "pairs": pairs, "root": root}


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    changed = sum((before[k].float() != after[k].float()).sum().item() for k in before)
    return changed / sum(t.numel() for t in before.values())


def _l2s_dpo(standin, out: Path, *extra: str, script: str | None = None) -> subprocess.CompletedProcess:
    """`python -m l2s dpo` (or ``script`` with its own arguments first) in a fresh process."""
    argv = ["dpo", "--model", str(standin["model"]), "--pairs", str(standin["pairs"]), "--out", str(out), *SHORT]
    cmd = [sys.executable, "-c", script, *extra, *argv] if script else [sys.executable, "-m", "l2s", *argv, *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(standin) -> Path:
    out = standin["root"] / "uninterrupted"
    done = _l2s_dpo(standin, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_paper_preset_at_lr_5e7_moves_most_weights_only_in_a_float32_save(standin, tmp_path):
    linear_dtypes: set[tuple[torch.dtype, torch.dtype]] = set()

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            linear_dtypes.add((module.weight.dtype, output.dtype))

    before = _weights(standin["model"])
    fraction, meta = {}, {}
    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        for save_dtype in ("float32", "bfloat16", "auto"):
            config = preset_config("adar1-7b", max_steps=8, effective_batch_size=4, per_device_train_batch_size=2,
                                   max_length=512, save_dtype=save_dtype)
            assert config.args["learning_rate"] == 5e-7 and config.args["bf16"] is True
            out = train(standin["model"], standin["pairs"], tmp_path / save_dtype, config)
            after = _weights(out)
            saved = {"auto": "bfloat16"}.get(save_dtype, save_dtype)  # auto: the input checkpoint's dtype
            assert {t.dtype for t in after.values()} == {getattr(torch, saved)}
            fraction[save_dtype] = _changed(before, after)
            meta[save_dtype] = read_json(out / "l2s_train.json")
    finally:
        hook.remove()
    print(f"\nadar1-7b, lr 5e-7, 8 steps, bf16 stand-in: {fraction['float32']:.2%} of the weight entries changed "
          f"in the float32 save, {fraction['bfloat16']:.2%} in the bf16 save")
    assert linear_dtypes == {(torch.float32, torch.bfloat16)}  # float32 weights, bf16 autocast matmuls
    assert fraction["float32"] > 0.5
    assert fraction["bfloat16"] < fraction["float32"] / 10 and fraction["auto"] == fraction["bfloat16"]
    for save_dtype, m in meta.items():
        saved = {"auto": "bfloat16"}.get(save_dtype, save_dtype)
        assert m["save_dtype"] == saved == read_json(tmp_path / save_dtype / "config.json")["dtype"]
        assert m["config"]["save_dtype"] == save_dtype and m["trainer_args"]["bf16"] is True
    assert not list(tmp_path.glob(".*"))  # work directories removed, no partial outputs


def test_a_killed_run_resumes_to_the_uninterrupted_weights(standin, uninterrupted, tmp_path):
    out = tmp_path / "resumed"
    killed = _l2s_dpo(standin, out, "4", script=KILLER)
    assert killed.returncode == -9, killed.stderr[-3000:]
    work = work_dir(out)
    assert not out.exists() and last_checkpoint(work).name == "checkpoint-2"
    assert (work / "checkpoint-4" / "model.safetensors").is_file()  # torn: weights written, no trainer state

    with pytest.raises(ValueError, match=r"other \['learning_rate'\]"):  # another run's checkpoints: refused
        train(standin["model"], standin["pairs"], out, preset_config("adar1-7b", max_steps=6, effective_batch_size=4,
              per_device_train_batch_size=2, max_length=512, save_steps=2, learning_rate=3e-4))
    resumed = _l2s_dpo(standin, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removing incomplete checkpoint" in resumed.stderr
    expected, got = _weights(uninterrupted), _weights(out)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    meta, full = read_json(out / "l2s_train.json"), read_json(uninterrupted / "l2s_train.json")
    assert meta["train"]["resumed_from"] == "checkpoint-2" and full["train"]["resumed_from"] is None
    assert meta["train"]["global_step"] == full["train"]["global_step"] == 6
    losses = [[h["loss"] for h in m["log_history"] if "loss" in h] for m in (meta, full)]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    assert not work.exists()


def test_two_cpu_processes_equal_one_at_the_same_effective_batch(standin, uninterrupted, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/multi-gpu.yaml"),
           "--num_processes", "2", "--main_process_port", str(port), "-m", "l2s", "dpo",
           "--model", str(standin["model"]), "--pairs", str(standin["pairs"]), "--out", str(out), *SHORT]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split().count(str(out)) == 1  # the output path, printed by the main process only
    two, one = read_json(out / "l2s_train.json"), read_json(uninterrupted / "l2s_train.json")
    assert two["provenance"]["world_size"] == 2 and one["provenance"]["world_size"] == 1
    assert [m["trainer_args"]["gradient_accumulation_steps"] for m in (two, one)] == [1, 2]
    expected, got = _weights(uninterrupted), _weights(out)
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert _changed(_weights(standin["model"]), got) > 0.5


def test_the_accelerate_and_deepspeed_configs_are_what_the_docs_say():
    from accelerate.commands.config.config_args import load_config_from_file

    launch = load_config_from_file(str(REPO / "configs/accelerate/multi-gpu.yaml"))
    assert launch.distributed_type == "MULTI_GPU" and launch.mixed_precision == "no"
    ds = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"]["enabled"] == "auto"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    for key in ("gradient_accumulation_steps", "train_micro_batch_size_per_gpu", "gradient_clipping"):
        assert ds[key] == "auto"  # filled in by transformers from the run's options
