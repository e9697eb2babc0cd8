"""Preference data for one ablation variant, its per-problem stats, and the run directory that holds them.

Output directory (appears whole or not at all)::

    dataset/        datasets.Dataset (save_to_disk): TRL's conversational preference format
                    (prompt / chosen / rejected as message lists), or prompt / completion for ``sft``,
                    plus metadata columns (id, level, kind, lengths, styles, correctness, and
                    ``prompt_text``: the exact string both models were sampled with). Runs sampled with
                    a text prompt give TRL's standard format instead (strings; see
                    :mod:`l2s.prefs.groups` for where a pair's prompt comes from)
    pairs.jsonl     the same rows, one JSON object per line (easy to read and diff)
    problems.csv    per problem: acc_L, acc_S, preferred style, mean lengths, pairs made, drop reason
    summary.json    counts, how many problems prefer long (overall and by level), pair lengths, the
                    problems covered and dropped, the sample runs' token limits, ``warnings``
    config.json     PairsConfig + inputs (paths, sha256) ;  provenance.json

A variant whose pairs cover under :data:`MIN_COVERAGE` of the problems says so (log and ``warnings``):
a model trained on them learns from few problems (the review of the toy study found its long-only
shortest-vs-longest baseline trained on 3 pairs from 500 problems).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from pathlib import Path
from statistics import mean
from typing import Any

from l2s.io import atomic_output_dir, atomic_write_json, atomic_write_text, check_replaceable, write_jsonl
from l2s.prefs.config import PairsConfig
from l2s.prefs.groups import (
    LEGACY,
    Group,
    Sample,
    build_groups,
    check_messages,
    generations_path,
    load_problem_messages,
    pair_prompt,
    token_limit,
)
from l2s.prefs.pairs import accuracy, default_epsilon, group_pairs, instance_pairs, preferred_style, shortest_vs_longest

log = logging.getLogger(__name__)
MIN_COVERAGE = 0.25  # warn when a variant's pairs cover fewer problems than this fraction

PROBLEM_COLUMNS = ("dataset", "id", "level", "k_long", "k_short", "acc_long", "acc_short", "acc_diff", "epsilon",
                   "preferred", "kept", "drop_reason", "mean_tokens_long", "mean_tokens_short",
                   "shortest_correct_preferred", "n_group", "n_instance", "n_baseline", "n_sft")


def _mean(xs: list[float]) -> float | None:
    return round(mean(xs), 4) if xs else None


def problem_pairs(group: Group, config: PairsConfig) -> tuple[dict[str, Any], list[tuple[str, Sample, Sample]]]:
    """Stats of one problem and its ``(kind, chosen, rejected)`` pairs under ``config``."""
    acc_l, acc_s = accuracy(group.long), accuracy(group.short)
    eps = config.epsilon if config.epsilon is not None else default_epsilon(len(group.long))
    pref = preferred_style(acc_l, acc_s, eps)
    preferred, other = (group.long, group.short) if pref == "long" else (group.short, group.long)
    correct_pref = [s.n_tokens for s in preferred if s.correct]
    stats = {"dataset": group.dataset, "id": group.id, "level": group.level, "k_long": len(group.long),
             "k_short": len(group.short), "acc_long": round(acc_l, 6), "acc_short": round(acc_s, 6),
             "acc_diff": round(acc_l - acc_s, 6), "epsilon": round(eps, 6), "preferred": pref,
             "kept": True, "drop_reason": "",
             "mean_tokens_long": _mean([s.n_tokens for s in group.long]),
             "mean_tokens_short": _mean([s.n_tokens for s in group.short]),
             "shortest_correct_preferred": min(correct_pref) if correct_pref else None}
    pairs: list[tuple[str, Sample, Sample]] = []
    if config.drop_both_zero and acc_l == 0 and acc_s == 0:
        stats.update(kept=False, drop_reason="both_zero")
    else:
        v = config.variant
        if v in ("bilevel", "group", "sft"):
            rng = random.Random(f"{config.seed}:{group.key}")
            pairs += [("group", c, r) for c, r in group_pairs(preferred, other, config.m1, rng)]
        if v in ("bilevel", "instance"):
            pairs += [("instance", c, r) for c, r in instance_pairs(preferred, config.m2, config.instance_rejected)]
        if v == "shortest_vs_longest":
            source = group.long if config.baseline_source == "long" else group.long + group.short
            pairs += [("baseline", c, r) for c, r in shortest_vs_longest(source, config.baseline_pairs)]
    for kind in ("group", "instance", "baseline"):
        stats[f"n_{kind}"] = sum(k == kind for k, _, _ in pairs)
    stats["n_sft"] = len({c for k, c, _ in pairs if k == "group"}) if config.variant == "sft" else 0
    return stats, pairs


def _completion(text: str, conversational: bool) -> list[dict[str, str]] | str:
    """A response as TRL wants it: an assistant turn (conversational) or the text itself (standard)."""
    return [{"role": "assistant", "content": text}] if conversational else text


def _records(group: Group, prompt: list[dict[str, str]] | str, pairs, variant: str) -> list[dict[str, Any]]:
    chat = isinstance(prompt, list)
    base = {"dataset": group.dataset, "id": group.id, "level": group.level, "prompt": prompt,
            "prompt_text": group.prompt}
    if variant == "sft":  # unique group-level chosen responses, in first-drawn order
        chosen = list(dict.fromkeys(c for _, c, _ in pairs))
        return [{**base, "completion": _completion(c.response, chat), "kind": "sft", "style": c.style,
                 "sample": c.sample, "correct": c.correct, "n_tokens": c.n_tokens} for c in chosen]
    return [{**base, "chosen": _completion(c.response, chat), "rejected": _completion(r.response, chat), "kind": kind,
             "chosen_style": c.style, "chosen_sample": c.sample, "chosen_correct": c.correct,
             "chosen_tokens": c.n_tokens, "rejected_style": r.style, "rejected_sample": r.sample,
             "rejected_correct": r.correct, "rejected_tokens": r.n_tokens} for kind, c, r in pairs]


def _problem_key(p: dict[str, Any]) -> str:
    return f"{p['dataset']}:{p['id']}" if p["dataset"] else str(p["id"])


def coverage(problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Which problems gave rows: their number and fraction, and the others by reason: ``both_zero``
    (both models scored 0: dropped, as Ada-R1 does) or ``no_pair`` (kept, but no distinct pair: no
    correct response where the rule needs one, or identical responses)."""
    made = [p for p in problems if p["n_group"] + p["n_instance"] + p["n_baseline"] > 0]
    made_keys = {_problem_key(p) for p in made}
    dropped = {"both_zero": [_problem_key(p) for p in problems if not p["kept"]],
               "no_pair": [_problem_key(p) for p in problems if p["kept"] and _problem_key(p) not in made_keys]}
    return {"n_problems": len(problems), "n_with_pairs": len(made),
            "frac_with_pairs": round(len(made) / len(problems), 6) if problems else 0.0,
            "n_dropped": {reason: len(keys) for reason, keys in dropped.items()}, "dropped": dropped}


def coverage_warnings(cov: dict[str, Any], config: PairsConfig) -> list[str]:
    """A warning when the rows cover under :data:`MIN_COVERAGE` of the problems."""
    if cov["frac_with_pairs"] >= MIN_COVERAGE:
        return []
    hint = ""
    if config.variant == "shortest_vs_longest" and config.baseline_source == "long":
        hint = "; baseline_source 'pooled' pairs the short model's answers with the long ones"
    return [f"variant {config.variant!r}: the rows cover {cov['n_with_pairs']} of {cov['n_problems']} problems "
            f"({cov['frac_with_pairs']:.1%}, under {MIN_COVERAGE:.0%}): {cov['n_dropped']['both_zero']} dropped "
            f"(both models scored 0), {cov['n_dropped']['no_pair']} without a distinct pair; a model trained on "
            f"them learns from few problems{hint}"]


def summarize(problems: list[dict[str, Any]], records: list[dict[str, Any]], config: PairsConfig) -> dict[str, Any]:
    """How many problems prefer long (overall and by level), what the pairs look like, which problems
    they cover (:func:`coverage`) and the coverage ``warnings``."""
    def block(ps: list[dict[str, Any]]) -> dict[str, Any]:
        kept = [p for p in ps if p["kept"]]
        n_long = sum(p["preferred"] == "long" for p in kept)
        return {"n_problems": len(ps), "n_kept": len(kept), "n_dropped_both_zero": len(ps) - len(kept),
                "n_prefer_long": n_long, "n_prefer_short": len(kept) - n_long,
                "frac_prefer_long": round(n_long / len(kept), 6) if kept else None,
                "acc_long": _mean([p["acc_long"] for p in ps]), "acc_short": _mean([p["acc_short"] for p in ps]),
                "mean_tokens_long": _mean([p["mean_tokens_long"] for p in ps]),
                "mean_tokens_short": _mean([p["mean_tokens_short"] for p in ps])}

    levels = sorted({p["level"] for p in problems if p["level"] is not None})
    by_kind: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in records}):
        rs = [r for r in records if r["kind"] == kind]
        if kind == "sft":
            by_kind[kind] = {"n": len(rs), "mean_tokens": _mean([r["n_tokens"] for r in rs]),
                             "frac_correct": _mean([float(r["correct"]) for r in rs])}
            continue
        by_kind[kind] = {"n": len(rs), "mean_chosen_tokens": _mean([r["chosen_tokens"] for r in rs]),
                         "mean_rejected_tokens": _mean([r["rejected_tokens"] for r in rs]),
                         "frac_chosen_correct": _mean([float(r["chosen_correct"]) for r in rs]),
                         "frac_chosen_long": _mean([float(r["chosen_style"] == "long") for r in rs])}
    cov = coverage(problems)
    return {"variant": config.variant, "n_rows": len(records), "overall": block(problems),
            "by_level": {str(lv): block([p for p in problems if p["level"] == lv]) for lv in levels},
            "rows_by_kind": by_kind, "coverage": cov, "warnings": coverage_warnings(cov, config)}


def _prompt_source(long_run, short_run, problems_file) -> str:
    return f"runs {generations_path(long_run).parent} and {generations_path(short_run).parent}" + (
        f" (problems file {problems_file})" if problems_file else "")


def build_pairs(long_run: str | Path, short_run: str | Path, config: PairsConfig,
                problems_file: str | Path | None = None) -> tuple[list[dict], list[dict], dict]:
    """``(records, per-problem stats, summary)`` for the two runs' graded samples.

    The pairs' prompt is each problem's chat from the rows' ``messages`` (or its text, for a text
    prompt: :func:`l2s.prefs.groups.pair_prompt`); ``problems_file`` (JSONL of ``id`` and
    ``messages`` or ``problem``) replaces it. The summary also holds each run's ``token_limit``.
    """
    groups = build_groups(long_run, short_run, config.require_same_problems)
    problem_messages = load_problem_messages(problems_file) if problems_file else None
    source = _prompt_source(long_run, short_run, problems_file)
    records, problems, legacy = [], [], 0
    for group in groups:
        stats, pairs = problem_pairs(group, config)
        problems.append(stats)
        if not pairs:
            continue
        if problem_messages is None:
            legacy += group.messages == LEGACY
            prompt = pair_prompt(group, source)
        else:
            prompt = problem_messages.get((group.dataset, group.id)) or problem_messages.get(("", group.id))
            if prompt is None:
                raise ValueError(f"problem {group.id!r} is not in the problems file {problems_file}")
        records += _records(group, prompt, pairs, config.variant)
    if legacy:
        log.warning("%s: %d problems' rows have no 'messages' (runs written before l2s stored them); their "
                    "ChatML prompts were read back as chats. Sample again to record the chats", source, legacy)
    if len({isinstance(r["prompt"], list) for r in records}) > 1:
        raise ValueError(f"{source}: some problems have a chat prompt and others a text prompt; sample both "
                         "models with one --prompt (or pass --problems FILE to give every problem its chat)")
    summary = summarize(problems, records, config)
    summary["prompt_format"] = prompt_format(records)
    summary["token_limit"] = {"long": token_limit(long_run), "short": token_limit(short_run)}
    return records, problems, summary


def prompt_format(records: list[dict[str, Any]]) -> str | None:
    """``conversational`` (prompts are chats) or ``standard`` (text), TRL's names; None without rows."""
    if not records:
        return None
    return "conversational" if isinstance(records[0]["prompt"], list) else "standard"


def check_template(records: list[dict[str, Any]], tokenizer_source: str) -> list[str]:
    """:func:`l2s.prefs.template.template_warnings` of ``tokenizer_source``'s chat template (the model
    DPO trains) on the first conversational record; [] for text pairs (no template renders them)."""
    from l2s.prefs.template import first_chat_record, template_warnings
    from l2s.tokenizers import load_tokenizer

    record = first_chat_record(records)
    if record is None:
        return []
    check_messages(record["prompt"], "the pairs' prompt")
    response = (record.get("chosen") or record.get("completion"))[0]["content"]
    return template_warnings(load_tokenizer(tokenizer_source), record["prompt"], record["prompt_text"], response,
                             where=f"the chat template of {tokenizer_source}")


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in columns})
    return buf.getvalue()


def to_dataset(records: list[dict[str, Any]]):
    """A ``datasets.Dataset`` whose fingerprint is the rows' hash: same rows, same bytes on disk."""
    from datasets import Dataset

    blob = "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)
    ds = Dataset.from_list(records)
    return Dataset(ds.data, info=ds.info, fingerprint=hashlib.sha256(blob.encode()).hexdigest()[:16])


def write_pairs(out: str | Path, long_run: str | Path, short_run: str | Path, config: PairsConfig,
                problems_file: str | Path | None = None, overwrite: bool = False,
                tokenizer: str | Path | None = None) -> Path:
    """Build the pairs and write the run directory ``out`` atomically; returns ``out``.

    ``tokenizer``: the model DPO will train (a checkpoint or tokenizer directory, or hub id): its chat
    template is checked against the sampled prompts and responses (:func:`check_template`) and what
    it breaks joins the summary's ``warnings``. Every warning is also logged.
    """
    from l2s.provenance import file_sha256

    out = Path(out)
    check_replaceable(out, overwrite)  # before any work: --overwrite replaces only an l2s output
    records, problems, summary = build_pairs(long_run, short_run, config, problems_file)
    if not records:
        raise ValueError(f"no preference rows: all {len(problems)} problems were dropped or gave no pair "
                         f"(both models wrong everywhere, or identical responses); nothing written")
    if tokenizer is not None:
        summary["warnings"] += check_template(records, str(tokenizer))
    for warning in summary["warnings"]:
        log.warning("%s: %s", out, warning)
    inputs = {}
    for role, path in (("long", long_run), ("short", short_run), ("problems", problems_file)):
        if path is not None:
            p = generations_path(path) if role != "problems" else Path(path)
            inputs[role] = {"path": str(p), "sha256": file_sha256(p)}
    if tokenizer is not None:
        inputs["tokenizer"] = {"path": str(tokenizer)}
    meta = {"kind": "pairs", "pairs": config.to_dict(), "inputs": inputs,
            "format": "prompt-completion" if config.variant == "sft" else "preference",
            "prompt_format": summary["prompt_format"]}
    return write_pairs_dir(out, records, problems, summary, meta, config.seed, overwrite)


def write_pairs_dir(out: Path, records: list[dict[str, Any]], problems: list[dict[str, Any]] | None,
                    summary: dict[str, Any], meta: dict[str, Any], seed: int, overwrite: bool = False) -> Path:
    """Write an ``l2s pairs`` directory (the layout in the module docstring) atomically; ``problems``
    None: no problems.csv (pairs that do not come from sampled groups)."""
    from l2s.provenance import provenance

    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        to_dataset(records).save_to_disk(str(tmp / "dataset"))
        write_jsonl(tmp / "pairs.jsonl", records)
        if problems is not None:
            atomic_write_text(tmp / "problems.csv", _csv(problems, PROBLEM_COLUMNS))
        atomic_write_json(tmp / "summary.json", summary)
        atomic_write_json(tmp / "config.json", meta)
        atomic_write_json(tmp / "provenance.json", provenance(seed=seed))
    return out
