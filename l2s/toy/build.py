"""Build the toy family of one size: quick (System 1), slow (System 2) and short (Ada-R1's short CoT).

- quick: trained from scratch on a mix of direct answers and terse CoT (a base model that *can* do CoT
  but answers directly under greedy decoding, as Qwen2.5-Math does without a CoT prompt);
- slow: quick fine-tuned gently (small lr) on long CoT with a double-check, as DeepSeek-R1-Distill is
  fine-tuned from Qwen2.5-Math — the task vector stays small (≈0.2× the base's norm), so merges stay
  well-formed;
- short: slow fine-tuned on short solutions (Luo et al. 2025's short-CoT model).

Checkpoints are normal HF directories (safetensors, config, generation_config, tokenizer) with a
training card ``l2s_toy_card.json``. They are cached under ``<cache>/toy/<size>-<config hash>``: a
second build with the same recipe reuses them, and an interrupted build resumes at the first stage
that is not saved yet.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from l2s import io, paths, provenance
from l2s.toy import family, task
from l2s.toy import tokenizer as toy_tokenizer

log = logging.getLogger(__name__)
ROLES = ("quick", "slow", "short")
CARD = "l2s_toy_card.json"
TASK_VERSION = 5  # bump when the task's text or solution formats change: cached models are then rebuilt


def recipe_fingerprint(size: str) -> dict:
    return {"task_version": TASK_VERSION, "size": asdict(family.get_size(size)),
            "recipe": family.get_recipe(size).to_dict(), "vocab": toy_tokenizer.vocabulary(),
            "rounds": task.ROUNDS, "dealer": [task.P_BALL, task.P_NEIGHBOUR, task.P_CHECK, task.CHECK_ROUNDS]}


def family_dir(size: str, cache: Path | None = None) -> Path:
    cache = Path(cache) if cache else paths.cache_dir()
    return cache / "toy" / f"{size}-{provenance.config_hash(recipe_fingerprint(size))}"


def _save(model, tokenizer, target: Path, card: dict) -> None:
    from transformers import GenerationConfig

    with io.atomic_output_dir(target, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(do_sample=False, max_new_tokens=128, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=model.config.bos_token_id).save_pretrained(tmp)
        io.atomic_write_json(tmp / CARD, card)


def _complete(path: Path) -> bool:
    return (path / CARD).is_file() and (path / "model.safetensors").is_file()


def build_family(size: str = family.DEFAULT_SIZE, cache: Path | None = None, threads: int = 1) -> dict[str, Path]:
    """Train (or reuse from the cache) the quick, slow and short models of ``size``; return their dirs."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    arch, recipe = family.get_size(size), family.get_recipe(size)
    root = family_dir(size, cache)
    out = {role: root / role for role in ROLES}
    if all(_complete(p) for p in out.values()):
        log.info("toy family %s: cached at %s", size, root)
        return out
    torch.set_num_threads(threads)
    tokenizer = toy_tokenizer.build_tokenizer()
    rows = task.make_splits({"train": recipe.n_train_per_level}, seed=recipe.data_seed)["train"]
    problems = [task.problem_from_row(r) for r in rows]
    data_card = {"task": "shell-game", "split": "train", "problems": len(problems), "data_seed": recipe.data_seed,
                 "n_train_per_level": recipe.n_train_per_level, "task_version": TASK_VERSION}
    stages = {"quick": (None, recipe.quick), "slow": ("quick", recipe.slow), "short": ("slow", recipe.short)}
    for i, (role, (parent, stage)) in enumerate(stages.items()):
        if _complete(out[role]):
            log.info("toy %s/%s: cached", size, role)
            continue
        provenance.set_seed(recipe.seed + i)
        if parent is None:
            model = Qwen2ForCausalLM(arch.qwen2_config())
        else:
            model = AutoModelForCausalLM.from_pretrained(out[parent], dtype=torch.float32)
        log.info("toy %s/%s: training %d steps (%s)", size, role, stage.steps, stage.styles)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as work:
            from l2s.toy.train import train_stage

            summary = train_stage(model, tokenizer, problems, stage, seed=recipe.seed + i, workdir=work,
                                  desc=f"toy-{size}-{role}")
        card = {"role": role, "size": size, "parent": parent, "architecture": asdict(arch),
                "parameters": sum(p.numel() for p in model.parameters()), "stage": asdict(stage),
                "data": data_card, "seed": recipe.seed + i, "training": summary,
                "wall_seconds": round(time.time() - t0, 1), "torch_threads": threads,
                "fingerprint": provenance.config_hash(recipe_fingerprint(size)),
                "provenance": provenance.provenance(seed=recipe.seed + i)}
        _save(model, tokenizer, out[role], card)
    return out


def export_family(size: str, out: Path, cache: Path | None = None, overwrite: bool = False,
                  threads: int = 1) -> dict[str, Path]:
    """Build (or reuse) the family and copy it to ``out/{quick,slow,short}``."""
    if overwrite:
        io.check_replaceable(out, overwrite)  # before training: --overwrite replaces only an l2s output
    built = build_family(size, cache=cache, threads=threads)
    out = Path(out)
    fingerprint = provenance.config_hash(recipe_fingerprint(size))
    if out.exists():
        cards = [out / r / CARD for r in ROLES]
        same = all(c.is_file() and io.read_json(c).get("fingerprint") == fingerprint for c in cards)
        if same and not overwrite:
            log.info("toy family %s already at %s", size, out)
            return {r: out / r for r in ROLES}
        if not overwrite:
            raise FileExistsError(f"{out} exists and holds another toy build; pass --overwrite to replace it")
    with io.atomic_output_dir(out, overwrite=True) as tmp:
        for role, src in built.items():
            shutil.copytree(src, tmp / role)
    return {r: out / r for r in ROLES}
