"""``l2s pairs s1k``: the pairs of Wu et al. (2025)'s DPO baseline, from the s1K calibration files.

Wu et al. (2025, Table 1, "DPO") train DeepSeek-R1-Distill-Qwen-7B with DPO on s1K, the short answer
chosen and the long one rejected (LoRA rank 16, lr 5e-5, 3 epochs, max length 4096: the ``wu-dpo``
preset of :mod:`l2s.dpo.config`). This module builds those pairs from the files ``l2s calibration s1k``
writes (:mod:`l2s.merge.s1k`): row i of ``s1k-short.jsonl`` (``{question, solution}``, s1K's solution) is
chosen over row i of ``s1k-long.jsonl`` (the same question; thinking trajectory + attempt). The
calibration draws 100 rows by default; ``l2s calibration s1k --n 1000`` writes the whole of s1K.

The output is an ``l2s pairs`` directory (``dataset/``, ``pairs.jsonl``, ``summary.json``,
``config.json``, ``provenance.json``; no ``problems.csv``: nothing was sampled), so
``l2s dpo --preset wu-dpo --model MODEL --pairs OUT --out CKPT`` trains on it. Each pair's prompt is a
chat (TRL's conversational format, rendered by the trained model's own template): ``qwen25-math-cot``
(default; the Qwen2.5-Math system prompt and the question: the prompt the study evaluates R1 with) or
``chat`` (the question alone). Wu et al. do not say which prompt they used. The tokenizer of the model
to train renders ``prompt_text`` and counts the tokens; the summary counts the pairs that do not fit
``max_length`` (TRL keeps their first ``max_length`` tokens) and what the chat template breaks
(:mod:`l2s.prefs.template`). The same files, tokenizer and options give the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from statistics import mean
from typing import Any

from l2s.io import read_json, read_jsonl

log = logging.getLogger(__name__)
PROMPTS = ("qwen25-math-cot", "chat")
VARIANT = "wu_dpo"


def default_max_length() -> int:
    """The ``wu-dpo`` preset's ``max_length`` (4,096, Wu et al. 2025)."""
    from l2s.dpo.config import PRESETS

    return PRESETS["wu-dpo"]["max_length"]


def read_s1k_pairs(calibration_dir: str | Path) -> tuple[list[tuple[str, str, str, str]], dict[str, Any]]:
    """``[(id, question, short, long)]`` from the calibration files, and their inputs (paths, sha256).

    The id is ``s1k-<row of s1K's train split>`` from the ``s1k.json`` manifest (``row-<i>`` without
    one); a manifest whose hashes do not match the files is an error (the ids would be wrong).
    """
    from l2s.merge.s1k import LONG, MANIFEST, SHORT
    from l2s.provenance import file_sha256

    root = Path(calibration_dir)
    paths = {"short": root / SHORT, "long": root / LONG}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: write the s1K files with `l2s calibration s1k --out-dir "
                                    f"{root}` (--n 1000 for the whole of s1K)")
    inputs = {role: {"path": str(p), "sha256": file_sha256(p)} for role, p in paths.items()}
    short, long = read_jsonl(paths["short"]), read_jsonl(paths["long"])
    if len(short) != len(long) or not short:
        raise ValueError(f"{paths['short']} has {len(short)} rows and {paths['long']} {len(long)}: the files must "
                         "hold the same questions, row by row; rewrite them with `l2s calibration s1k`")
    ids = [f"row-{i}" for i in range(len(short))]
    manifest = root / MANIFEST
    if manifest.is_file():
        m = read_json(manifest)
        files = m.get("files", {})
        if any(files.get(name, {}).get("sha256") != inputs[role]["sha256"] for role, name in (("short", SHORT),
                                                                                               ("long", LONG))):
            raise ValueError(f"{manifest} does not match {SHORT}/{LONG} (edited or half-written files); rewrite "
                             "them with `l2s calibration s1k --overwrite`")
        ids = [f"s1k-{i}" for i in m["indices"]]
        inputs["manifest"] = {"path": str(manifest), "sha256": file_sha256(manifest)}
    rows = []
    for i, (s, lg) in enumerate(zip(short, long)):
        for path, row in ((paths["short"], s), (paths["long"], lg)):
            for key in ("question", "solution"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise ValueError(f"{path}: row {i + 1}: field {key!r} must be a non-empty string")
        if s["question"] != lg["question"]:
            raise ValueError(f"row {i + 1}: {paths['short']} and {paths['long']} hold different questions; "
                             "rewrite both with `l2s calibration s1k`")
        rows.append((ids[i], s["question"], s["solution"], lg["solution"]))
    return rows, inputs


def s1k_records(rows: list[tuple[str, str, str, str]], tokenizer, prompt: str = "qwen25-math-cot") -> list[dict]:
    """One DPO pair per s1K question: short solution chosen, long solution rejected, as chats."""
    from l2s.eval.prompts import build_prompt, chat_messages

    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS} (a chat the model's template renders), got {prompt!r}")

    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    records = []
    for pid, question, short, long in rows:
        text = build_prompt(prompt, question, tokenizer)
        records.append({"dataset": "s1k", "id": pid, "level": None, "prompt": chat_messages(prompt, question),
                        "prompt_text": text, "chosen": [{"role": "assistant", "content": short}],
                        "rejected": [{"role": "assistant", "content": long}], "kind": "s1k",
                        "chosen_style": "short", "rejected_style": "long", "prompt_tokens": n(text),
                        "chosen_tokens": n(short), "rejected_tokens": n(long)})
    return records


def s1k_summary(records: list[dict], max_length: int) -> dict[str, Any]:
    """Counts and lengths, and how many pairs do not fit ``max_length`` (prompt + answer + eos)."""
    over = {side: sum(r["prompt_tokens"] + r[f"{side}_tokens"] + 1 > max_length for r in records)
            for side in ("chosen", "rejected")}
    warnings = []
    if over["rejected"] or over["chosen"]:
        warnings.append(f"{over['rejected']} of {len(records)} long (rejected) and {over['chosen']} short (chosen) "
                        f"answers do not fit max_length {max_length} with their prompt: DPO keeps their first "
                        f"{max_length} tokens (TRL's truncation_mode keep_start), as Wu et al.'s 4,096 does")
    return {"variant": VARIANT, "source": "s1k", "n_rows": len(records), "max_length": max_length,
            "rows_by_kind": {"s1k": {"n": len(records),
                                     "mean_prompt_tokens": round(mean(r["prompt_tokens"] for r in records), 4),
                                     "mean_chosen_tokens": round(mean(r["chosen_tokens"] for r in records), 4),
                                     "mean_rejected_tokens": round(mean(r["rejected_tokens"] for r in records), 4)}},
            "over_max_length": over, "prompt_format": "conversational", "warnings": warnings}


def write_s1k_pairs(out: str | Path, calibration_dir: str | Path, tokenizer: str | Path,
                    prompt: str = "qwen25-math-cot", max_length: int | None = None,
                    overwrite: bool = False) -> Path:
    """Write the ``l2s pairs`` directory ``out`` of Wu et al.'s DPO baseline; returns ``out``.

    ``tokenizer``: the model to train (checkpoint or tokenizer directory, or hub id), whose chat template
    renders ``prompt_text``; ``max_length``: default the ``wu-dpo`` preset's.
    """
    from l2s.prefs.build import write_pairs_dir
    from l2s.prefs.template import template_warnings
    from l2s.tokenizers import load_tokenizer

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; pass --overwrite to replace it")
    max_length = default_max_length() if max_length is None else max_length
    if not isinstance(max_length, int) or max_length < 8:
        raise ValueError(f"max_length must be an integer >= 8, got {max_length!r}")
    rows, inputs = read_s1k_pairs(calibration_dir)
    try:
        tok = load_tokenizer(str(tokenizer))
    except OSError as e:
        raise FileNotFoundError(f"cannot load the tokenizer of {tokenizer}: {e}") from e
    if not getattr(tok, "chat_template", None):
        raise ValueError(f"the tokenizer of {tokenizer} has no chat template; pass the model to train (its "
                         "checkpoint directory), whose template DPO renders the pairs with")
    records = s1k_records(rows, tok, prompt)
    summary = s1k_summary(records, max_length)
    first = records[0]
    summary["warnings"] += template_warnings(tok, first["prompt"], first["prompt_text"],
                                             first["chosen"][0]["content"], where=f"the chat template of {tokenizer}",
                                             probe=False)
    for warning in summary["warnings"]:
        log.warning("%s: %s", out, warning)
    inputs["tokenizer"] = {"path": str(tokenizer),
                           "chat_template_sha256": hashlib.sha256(tok.chat_template.encode()).hexdigest()}
    meta = {"kind": "pairs", "pairs": {"variant": VARIANT, "source": "s1k", "prompt": prompt,
                                       "max_length": max_length},
            "inputs": inputs, "format": "preference", "prompt_format": "conversational"}
    return write_pairs_dir(out, records, None, summary, meta, seed=0, overwrite=overwrite)
