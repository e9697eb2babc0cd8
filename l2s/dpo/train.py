"""Fine-tune a (merged) model on ``l2s pairs`` data with TRL's ``DPOTrainer`` (or ``SFTTrainer``).

Precision. The policy (and the reference model) are loaded in float32 whatever the checkpoint's dtype,
and a preset's ``bf16`` means bf16 *autocast*: matmuls run in bf16, the weights and AdamW's updates stay
in float32. Training bf16 weights directly rounds away every update below half a bf16 step (2^-8 to
2^-9 of the weight): AdamW at lr 5e-7 for 64 steps changed 0.95% of the entries of bf16 weights of
magnitude 0.02, and 99.99% in float32. Under DeepSpeed (``deepspeed=configs/deepspeed/zero3.json``),
DeepSpeed's bf16 mode keeps the float32 master weights in the optimizer instead. ``save_dtype`` decides
what is written (see ``TrainConfig``).

Checkpoints and resuming. Checkpoints (weights, optimizer, scheduler, RNG, trainer state) are written
every ``save_steps`` optimizer steps into the run's work directory, ``.<out>.work`` beside ``out`` (or
under ``<cache>/dpo-work/`` for an output inside the repository's ``runs/``, which is committed). Running
the same command again after a crash or a kill resumes from the last complete checkpoint and ends with
the same weights as an uninterrupted run (bit for bit on CPU; on GPUs up to the nondeterminism of their
kernels). The work directory records what it was made from: resuming with other weights-relevant options
is an error that names them. The output directory appears whole at the end (``l2s.io.atomic_output_dir``),
and the work directory is removed then.

What is trained on. Each pair is tokenized here, not by TRL: the prompt is the exact string both models
were sampled with (the pairs' ``prompt_text``; for pairs written without it, a text ``prompt`` as it is,
or the ``prompt`` messages rendered by the model's chat template with the generation prompt), and each
response is the raw sampled text plus the tokenizer's eos (unless it ends with it), prompt and
response tokenized apart with ``add_special_tokens=False``, as the generation backends do. TRL's own
tokenization would re-render the responses with the chat template, and R1-distill's template keeps
only what follows ``</think>`` of an assistant turn (DPO would train on the final answers, not on the
sampled reasoning; see :mod:`l2s.prefs.template`), while for text pairs it tokenizes with special
tokens on, and the R1 tokenizer then adds a second BOS to a prompt that already starts with one. The
columns go to TRL pre-tokenized (``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``, TRL's collator
then joins, truncates at ``max_length`` and pads them; ``input_ids`` / ``completion_mask`` for the
``sft`` variant, as :mod:`l2s.sft` does). Rows whose prompt alone fills ``max_length`` are dropped (no
completion token would be left, TRL's rule under ``keep_start``). ``l2s_train.json``'s
``tokenization`` records the scheme, where the prompts came from, and the counts. Where the chat
template keeps a response whole (the toy's ChatML) these are the ids of TRL's own
rendering but for the newline the template writes after each response's eos, which the sampled model
never wrote (generation stops at the eos).

How to launch it (one process, several GPUs with DeepSpeed ZeRO-3, CPU processes): see :mod:`l2s.dpo`.

The output is a normal Hugging Face checkpoint (safetensors, config, generation_config, tokenizer; LoRA
adapters merged into the weights) plus ``l2s_train.json`` (options, saved dtype, inputs, tokenization,
loss log, provenance).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from l2s import paths
from l2s.dpo.config import TrainConfig
from l2s.io import atomic_output_dir, atomic_write_json, check_replaceable, read_json

log = logging.getLogger(__name__)

COLUMNS = {"dpo": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}
TOKEN_COLUMNS = {"dpo": ("prompt_ids", "chosen_ids", "rejected_ids"), "sft": ("input_ids", "completion_mask")}
# How pairs become token ids (see the module docstring); a checkpoint of another scheme is not resumed.
TOKENIZATION = "sampled-text-v1"
WORK_RECORD = "l2s_work.json"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence marks a complete one


def load_pairs(pairs_dir: str | Path):
    """``(dataset, pairs config.json)`` of an ``l2s pairs`` run, checked."""
    from datasets import load_from_disk

    pairs_dir = Path(pairs_dir)
    meta_path = pairs_dir / "config.json"
    if not meta_path.is_file() or not (pairs_dir / "dataset").is_dir():
        raise FileNotFoundError(f"{pairs_dir} is not an `l2s pairs` output (needs config.json and dataset/)")
    meta = read_json(meta_path)
    if meta.get("kind") != "pairs":
        raise ValueError(f"{meta_path}: not a pairs config (kind={meta.get('kind')!r})")
    ds = load_from_disk(str(pairs_dir / "dataset"))
    if ds.num_rows == 0:
        raise ValueError(f"{pairs_dir}: the dataset has no rows")
    return ds, meta


def resolve_method(config: TrainConfig, meta: dict[str, Any], columns: list[str]) -> str:
    data_method = "sft" if meta.get("format") == "prompt-completion" else "dpo"
    method = data_method if config.method == "auto" else config.method
    if method != data_method:
        variant = meta.get("pairs", {}).get("variant")
        raise ValueError(f"method {method!r} needs {'prompt/completion' if method == 'sft' else 'preference'} "
                         f"data, but the pairs are {meta.get('format')!r} (variant {variant!r})")
    missing = [c for c in COLUMNS[method] if c not in columns]
    if missing:
        raise ValueError(f"the pairs dataset lacks column(s) {missing} needed for {method}")
    return method


def work_dir(out: str | Path) -> Path:
    """Where the checkpoints of the run writing ``out`` go: ``.<name>.work`` beside it, except for an output
    inside the repository's ``runs/`` (committed, and a 7B checkpoint is ~100 GB): ``<cache>/dpo-work/...``."""
    out = Path(out).resolve()
    runs = paths.REPO_ROOT / "runs"
    if out.is_relative_to(runs):
        return paths.cache_dir() / "dpo-work" / out.relative_to(runs)
    return out.parent / f".{out.name}.work"


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.removeprefix("checkpoint-"))


def _checkpoints(work: Path) -> list[Path]:
    return [p for p in work.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete ``checkpoint-<step>`` in ``work`` (one being written when the run was killed
    has no trainer state yet), or None."""
    return max((p for p in _checkpoints(work) if (p / TRAINER_STATE).is_file()), key=_step, default=None)


def _prepare_work_dir(work: Path, record: dict[str, Any], explicit: str | None, state) -> Path | None:
    """Check that ``work`` holds no checkpoints of another run, drop a torn newest checkpoint, and return
    the one to resume from: ``explicit`` (``resume_from_checkpoint``) or the last complete one. Every
    process checks (before anything is written, so all see the same files); the main process writes."""
    old = read_json(work / WORK_RECORD) if (work / WORK_RECORD).is_file() else None
    if old is not None and old != record and last_checkpoint(work) is not None:
        differ = sorted(k for k in {*old.get("config", {}), *record["config"]}
                        if old.get("config", {}).get(k) != record["config"].get(k))
        differ += [k for k in ("model", "pairs", "method", "world_size", "tokenization") if old.get(k) != record[k]]
        raise ValueError(f"{work} holds checkpoints of a run with other {differ}; rerun with the same options "
                         f"to resume it, or delete {work} to start over")
    if explicit and not Path(explicit).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint {explicit} is not a checkpoint directory")
    state.wait_for_everyone()
    if state.is_main_process:
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_json(work / WORK_RECORD, record)
        if not explicit:
            newest = last_checkpoint(work)
            for torn in _checkpoints(work):
                if newest is None or _step(torn) > _step(newest):  # torn: Trainer would write into it again
                    log.warning("removing incomplete checkpoint %s", torn)
                    shutil.rmtree(torn)
    state.wait_for_everyone()
    return Path(explicit) if explicit else last_checkpoint(work)


def _prompt_string(row: dict[str, Any], tokenizer, where: str) -> tuple[str, str]:
    """``(the prompt string the models were sampled with, where it came from)`` of a pairs row."""
    text = row.get("prompt_text")
    if isinstance(text, str) and text:
        return text, "prompt_text"
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        return prompt, "prompt"
    if isinstance(prompt, list) and prompt and all(isinstance(m, dict) for m in prompt):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{where}: the prompt is a chat and the row has no 'prompt_text', but the tokenizer has "
                             "no chat template to render it")
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), "chat_template"
    raise ValueError(f"{where}: 'prompt' must be a string or a list of messages, got {type(prompt).__name__}")


def _response_string(value: Any, where: str) -> str:
    """The raw text of a response: a string, or one assistant message (TRL's conversational format)."""
    if isinstance(value, str):
        return value
    if (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)
            and value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str)):
        return value[0]["content"]
    raise ValueError(f"{where}: expected a string or one assistant message, got {value!r:.80}")


def tokenize_pairs(dataset, tokenizer, method: str, max_length: int | None = None,
                   truncation_mode: str = "keep_start"):
    """``(dataset of TOKEN_COLUMNS[method], record)``: every row as the token ids it was sampled as (the
    module docstring), and what the ``tokenization`` record of ``l2s_train.json`` says about them."""
    from datasets import Dataset

    eos = tokenizer.eos_token
    if not eos:
        raise ValueError("the tokenizer has no eos token: a response's end cannot be marked")
    responses = ("chosen", "rejected") if method == "dpo" else ("completion",)
    prompts, sources, texts = [], {"prompt_text": 0, "prompt": 0, "chat_template": 0}, {c: [] for c in responses}
    appended = 0
    for i, row in enumerate(dataset.select_columns([c for c in ("prompt", "prompt_text", *responses)
                                                    if c in dataset.column_names])):
        prompt, source = _prompt_string(row, tokenizer, f"pairs row {i}")
        prompts.append(prompt)
        sources[source] += 1
        for c in responses:
            text = _response_string(row[c], f"pairs row {i}, {c!r}")
            if not text.endswith(eos):
                text, appended = text + eos, appended + 1
            texts[c].append(text)

    def ids(strings: list[str]) -> list[list[int]]:
        return tokenizer(strings, add_special_tokens=False)["input_ids"]

    prompt_ids, response_ids = ids(prompts), {c: ids(texts[c]) for c in responses}
    lengths = {c: [len(p) + len(r) for p, r in zip(prompt_ids, response_ids[c], strict=True)] for c in responses}
    if method == "dpo":
        columns = {"prompt_ids": prompt_ids, **{f"{c}_ids": response_ids[c] for c in responses}}
    else:
        columns = {"input_ids": [p + r for p, r in zip(prompt_ids, response_ids["completion"], strict=True)],
                   "completion_mask": [[0] * len(p) + [1] * len(r)
                                       for p, r in zip(prompt_ids, response_ids["completion"], strict=True)]}
    bos_id = tokenizer.bos_token_id
    n = len(prompts)
    record: dict[str, Any] = {
        "scheme": TOKENIZATION, "method": method, "add_special_tokens": False,
        "prompt": "the string the models were sampled with (prompt_text), else the text prompt, else the chat "
                  "template's rendering of the prompt messages with the generation prompt",
        "response": "the raw sampled text + eos", "prompt_source": sources, "eos_token": eos,
        "eos_appended": appended, "bos_token": tokenizer.bos_token, "rows": n,
        "rows_starting_with_bos": sum(bool(p) and p[0] == bos_id for p in prompt_ids) if bos_id is not None else 0,
        "rows_with_double_bos": (sum(len(p) > 1 and p[0] == p[1] == bos_id for p in prompt_ids)
                                 if bos_id is not None else 0),
        "mean_tokens": {"prompt": round(sum(map(len, prompt_ids)) / n, 2),
                        **{c: round(sum(map(len, response_ids[c])) / n, 2) for c in responses}},
        "max_length": max_length, "truncation_mode": truncation_mode,
        "rows_truncated": sum(any(lengths[c][i] > max_length for c in responses) for i in range(n))
        if max_length is not None else 0,
        "rows_dropped_prompt_fills_max_length": sum(len(p) >= max_length for p in prompt_ids)
        if max_length is not None and truncation_mode == "keep_start" else 0,
    }
    if record["rows_with_double_bos"]:
        log.warning("%d of %d prompts start with two BOS tokens (%r): the prompt strings themselves carry them "
                    "(tokenized without special tokens, nothing was added)", record["rows_with_double_bos"], n,
                    tokenizer.bos_token)
    if record["rows_dropped_prompt_fills_max_length"]:
        log.warning("%d of %d rows are dropped: their prompt alone fills max_length %d",
                    record["rows_dropped_prompt_fills_max_length"], n, max_length)
    if record["rows_truncated"]:
        log.warning("%d of %d rows are cut at max_length %d (%s)", record["rows_truncated"], n, max_length,
                    truncation_mode)
    return Dataset.from_dict(columns), record


def _pretokenized_dpo_trainer():
    """``DPOTrainer`` that takes ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` as they are: TRL 1.16
    tokenizes every text dataset itself (with the chat template), and has no switch to skip it."""
    from trl import DPOTrainer

    class PretokenizedDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            if "prompt_ids" not in dataset.column_names:
                return super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            if args.max_length is not None and args.truncation_mode == "keep_start":  # TRL's own rule
                dataset = dataset.filter(lambda example: len(example["prompt_ids"]) < args.max_length,
                                         desc=f"Dropping fully truncated examples from {dataset_name} dataset")
            return dataset

    return PretokenizedDPOTrainer


def _trainer(method: str, model, tokenizer, dataset, args, lora: dict[str, Any] | None):
    """The TRL trainer for ``method`` over ``dataset``, the pre-tokenized columns of :func:`tokenize_pairs`."""
    peft_config = None
    if lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(**lora, task_type="CAUSAL_LM")
    dataset = dataset.select_columns(list(TOKEN_COLUMNS[method]))
    if method == "sft":
        from trl import SFTTrainer

        if args.completion_only_loss is None:  # TRL decides it from prompt/completion columns, absent here
            args.completion_only_loss = True
        return SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          peft_config=peft_config)
    return _pretokenized_dpo_trainer()(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                       peft_config=peft_config)


def _final_weights(trainer, lora: bool, dtype):
    """``(model, state_dict)`` to save, the state dict in ``dtype`` and only on the main process (None on
    the others). Every process must call this: gathering ZeRO-3 shards is collective."""
    import torch

    acc = trainer.accelerator
    model = acc.unwrap_model(trainer.model)
    if lora:
        if not acc.is_main_process:
            return model, None
        model = model.to(torch.float32).merge_and_unload()  # merged in float32 (in-process it trained in float32)
        return model, _cast(model.state_dict(), dtype)
    if trainer.is_deepspeed_enabled and dtype == torch.float32:
        from deepspeed.utils import safe_get_full_fp32_param

        # DeepSpeed's model holds its bf16 copies (and ZeRO-3's gather returns those); the float32 master
        # weights live in the optimizer's partitions
        state = {}
        for name, param in model.named_parameters():
            full = safe_get_full_fp32_param(param)  # an all-reduce: every process, same order
            if full is None:
                raise RuntimeError(f"DeepSpeed has no float32 master copy of {name}; save with save_dtype bfloat16")
            if acc.is_main_process:
                state[name] = full.cpu()
        return model, state if acc.is_main_process else None
    state = acc.get_state_dict(trainer.model_wrapped)
    return model, _cast(state, dtype) if acc.is_main_process else None


def _cast(state: dict, dtype) -> dict:
    """``state`` in ``dtype``, tensors that shared storage (tied embeddings) still shared."""
    cast: dict[int, Any] = {}
    out = {}
    for name, tensor in state.items():
        key = tensor.untyped_storage().data_ptr()
        if key not in cast:
            cast[key] = tensor.detach().to("cpu", dtype)
        out[name] = cast[key]
    return out


def train(model_path: str | Path, pairs_dir: str | Path, out: str | Path, config: TrainConfig,
          overwrite: bool = False) -> Path:
    """Train ``model_path`` on the pairs in ``pairs_dir`` (resuming a killed run of the same options);
    the checkpoint appears at ``out``."""
    import torch
    from accelerate import PartialState
    from transformers import AutoConfig, AutoModelForCausalLM

    from l2s.provenance import checkpoint_record, file_sha256, provenance
    from l2s.tokenizers import load_tokenizer

    out = Path(out)
    check_replaceable(out, overwrite)  # before training: --overwrite replaces only what l2s wrote
    dataset, meta = load_pairs(pairs_dir)
    method = resolve_method(config, meta, dataset.column_names)
    model_path = str(model_path)
    if not Path(model_path).exists() and (model_path.startswith((".", "/")) or model_path.count("/") != 1):
        raise FileNotFoundError(f"model {model_path} not found (a local checkpoint directory or a hub id)")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    config.gradient_accumulation_steps(world_size)  # fail before anything is set up
    if config.lora is not None and config.args.get("deepspeed") and _zero3_file(config.args["deepspeed"]):
        raise ValueError("lora with DeepSpeed ZeRO-3 is not supported (merging the adapters needs whole weights); "
                         "run LoRA without --deepspeed: one GPU holds a 7B model")
    try:
        tokenizer = load_tokenizer(model_path)
    except OSError as e:
        raise FileNotFoundError(f"cannot load the tokenizer of model {model_path}: {e}") from e

    work = work_dir(out)
    args = config.trainer_args(method, str(work), world_size)  # before the model: ZeRO-3 partitions it at load
    tokenized, tokenization = tokenize_pairs(dataset, tokenizer, method, args.max_length, args.truncation_mode)
    state = PartialState()
    pairs_file = Path(pairs_dir) / "pairs.jsonl"
    inputs = {"model": checkpoint_record(model_path),
              "pairs": {"path": str(pairs_dir), "config": meta, "n_rows": dataset.num_rows,
                        "sha256:pairs.jsonl": file_sha256(pairs_file) if pairs_file.is_file() else None}}
    record = {"config": config.resume_key(), "model": inputs["model"], "pairs": inputs["pairs"],
              "method": method, "world_size": state.num_processes, "tokenization": TOKENIZATION}
    resume = _prepare_work_dir(work, json.loads(json.dumps(record, default=str)), args.resume_from_checkpoint, state)

    input_dtype = getattr(AutoConfig.from_pretrained(model_path), "dtype", None) or torch.float32
    input_dtype = getattr(torch, input_dtype) if isinstance(input_dtype, str) else input_dtype
    save_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": input_dtype}[config.save_dtype]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    trainer = _trainer(method, model, tokenizer, tokenized, args, config.lora)
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except BaseException:
        if state.is_main_process and last_checkpoint(work) is None:
            shutil.rmtree(work, ignore_errors=True)  # nothing to resume from: leave nothing behind
        raise
    final, weights = _final_weights(trainer, config.lora is not None, save_dtype)
    if state.is_main_process:
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            final.config.use_cache = True
            final.save_pretrained(tmp, state_dict=weights)
            final.config.dtype = str(save_dtype).removeprefix("torch.")  # save_pretrained wrote the in-memory dtype
            final.config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / "l2s_train.json", {
                "method": method, "config": config.to_dict(), "save_dtype": final.config.dtype,
                "trainer_args": args.to_dict(), **inputs, "tokenization": tokenization,
                "train": {"global_step": result.global_step, "metrics": result.metrics,
                          "resumed_from": resume.name if resume else None},
                "log_history": trainer.state.log_history,
                "provenance": provenance(seed=args.seed, world_size=state.num_processes),
            })
        shutil.rmtree(work, ignore_errors=True)
    state.wait_for_everyone()
    return out


def _zero3_file(deepspeed: str | dict) -> bool:
    ds = deepspeed if isinstance(deepspeed, dict) else read_json(deepspeed)
    return (ds.get("zero_optimization") or {}).get("stage") == 3
