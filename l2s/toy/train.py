"""Supervised training of toy models with the transformers ``Trainer``: loss on the response only."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch

from l2s.toy import task
from l2s.toy.family import Stage


def prompt_messages(problem_text: str) -> list[dict]:
    """The toy prompt: one user message, no system message (the ``chat`` prompt of ``l2s.eval``)."""
    return [{"role": "user", "content": problem_text}]


def encode_example(tokenizer, problem: task.Problem, style: str) -> dict:
    prompt = tokenizer.apply_chat_template(prompt_messages(problem.text()), add_generation_prompt=True,
                                           tokenize=False)
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    response_ids = tokenizer(task.solution(problem, style), add_special_tokens=False).input_ids
    response_ids.append(tokenizer.eos_token_id)
    return {"input_ids": prompt_ids + response_ids, "labels": [-100] * len(prompt_ids) + response_ids}


def stage_examples(tokenizer, problems: list[task.Problem], stage: Stage, seed: int) -> list[dict]:
    """``stage.steps * batch_size`` examples in training order, seeded.

    Each example: a level drawn uniformly (level 1 has only a few hundred problems and would otherwise be
    under 1% of the data), then the next problem of that level in shuffled order, then a style by
    ``stage.styles`` weights. Optional curriculum (easy levels first): the first ``stage.easy_first`` of the
    steps draw only from levels up to ``stage.easy_max_level``. The default recipes do not use it: with
    the one-glance System-1 answer of :func:`l2s.toy.task.solution` the quick model learns level 1 without.
    """
    rng = random.Random(seed)
    styles, weights = zip(*sorted(stage.styles.items()))
    by_level: dict[int, list[task.Problem]] = {}
    for p in problems:
        by_level.setdefault(p.level, []).append(p)
    all_levels = sorted(by_level)
    easy_levels = [lv for lv in all_levels if lv <= stage.easy_max_level] or all_levels
    queues: dict[int, list[task.Problem]] = {lv: [] for lv in all_levels}
    n = stage.steps * stage.batch_size
    n_easy = int(stage.easy_first * stage.steps) * stage.batch_size
    out = []
    for i in range(n):
        level = rng.choice(easy_levels if i < n_easy else all_levels)
        if not queues[level]:
            queues[level] = rng.sample(by_level[level], len(by_level[level]))
        out.append(encode_example(tokenizer, queues[level].pop(), rng.choices(styles, weights)[0]))
    return out


@dataclass
class _Collator:
    pad_id: int

    def __call__(self, batch):
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def train_stage(model, tokenizer, problems: list[task.Problem], stage: Stage, seed: int, workdir,
                desc: str = "train") -> dict:
    """Train ``model`` in place for one stage; return a summary (steps, losses, seconds)."""
    from transformers import Trainer, TrainingArguments

    examples = stage_examples(tokenizer, problems, stage, seed)
    args = TrainingArguments(
        output_dir=str(workdir), per_device_train_batch_size=stage.batch_size, max_steps=stage.steps,
        learning_rate=stage.lr, lr_scheduler_type="cosine", warmup_steps=max(1, int(stage.warmup_ratio * stage.steps)),
        weight_decay=stage.weight_decay, adam_beta2=0.98, max_grad_norm=1.0, seed=seed, data_seed=seed,
        logging_steps=max(1, stage.steps // 10), save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=False, run_name=desc,
        train_sampling_strategy="sequential",  # the examples are already in their (seeded, curriculum) order
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=_Collator(tokenizer.pad_token_id))
    t0 = time.time()
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"steps": stage.steps, "train_loss": out.training_loss, "final_logged_loss": losses[-1] if losses else None,
            "loss_curve": losses, "seconds": round(time.time() - t0, 1), "examples": len(examples)}
