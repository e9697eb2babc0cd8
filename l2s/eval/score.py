"""Score saved responses from any tool: grade, measure, re-encode lengths with the model's tokenizer.

Input rows: ``response`` and either ``answer`` (gold) or ``dataset`` + ``id`` (looked up in
``data_dir``); optional ``level``, ``sample``, ``truncated``. Without ``truncated``, a response is
truncated when ``max_new_tokens`` is given and its re-encoded length reaches it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from l2s import io
from l2s.data import load_benchmark
from l2s.eval.grading import GradeConfig, Grader
from l2s.eval.measures import count_tokens
from l2s.eval.metrics import compute_metrics
from l2s.eval.run import GENERATIONS, METRICS, PROVENANCE, score_row
from l2s.provenance import file_sha256, provenance


@dataclass
class ScoreConfig:
    responses: str
    tokenizer: str
    out: str
    data_dir: str | None = None
    max_new_tokens: int | None = None
    dataset: str = "responses"  # dataset name for rows without one
    grading: GradeConfig = field(default_factory=GradeConfig)
    overwrite: bool = False


def _gold_lookup(rows: list[dict], data_dir: str | None, path: str) -> dict:
    names = sorted({r["dataset"] for r in rows if "answer" not in r})
    if names and data_dir is None:
        raise ValueError(f"{path}: rows without 'answer' need --data-dir to look up the gold of {names}")
    return {(n, b["id"]): b for n in names for b in load_benchmark(n, data_dir)}


def score_responses(cfg: ScoreConfig, progress: bool = True) -> Path:
    from l2s.tokenizers import load_tokenizer

    rows = io.read_jsonl(cfg.responses)
    if not rows:
        raise ValueError(f"{cfg.responses}: no rows")
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("response"), str):
            raise ValueError(f"{cfg.responses}:{i}: missing field 'response'")
        if "answer" not in r and not ("dataset" in r and "id" in r):
            raise ValueError(f"{cfg.responses}:{i}: needs field 'answer', or 'dataset' and 'id'")
    gold = _gold_lookup(rows, cfg.data_dir, cfg.responses)
    base = []
    for i, r in enumerate(rows, 1):
        ref = None
        if "answer" not in r:
            ref = gold.get((r["dataset"], str(r["id"])))
            if ref is None:
                raise ValueError(f"{cfg.responses}:{i}: no problem with id {r['id']!r} in {r['dataset']}")
        level = r.get("level", ref["level"] if ref else None)
        base.append({"id": str(r.get("id", i - 1)), "dataset": r.get("dataset", cfg.dataset),
                     "level": int(level) if level is not None else None, "sample": int(r.get("sample", 0)),
                     "prompt": r.get("prompt"), "answer": str(r["answer"]) if "answer" in r else ref["answer"]})
    tok = load_tokenizer(cfg.tokenizer)
    responses = [r["response"] for r in rows]
    n_tokens = count_tokens(tok, responses)
    truncated = [bool(r["truncated"]) if "truncated" in r else
                 (cfg.max_new_tokens is not None and n >= cfg.max_new_tokens) for r, n in zip(rows, n_tokens)]
    with Grader(cfg.grading) as grader:
        grades = grader.grade([(resp, b["answer"], t) for resp, b, t in zip(responses, base, truncated)],
                              progress=progress, desc="scoring")
    scored = [score_row(b, resp, n, not t, t, g)
              for b, resp, n, t, g in zip(base, responses, n_tokens, truncated, grades)]
    config = {**asdict(cfg), "responses_sha256": file_sha256(cfg.responses)}
    with io.atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        io.write_jsonl(tmp / GENERATIONS, scored)
        io.atomic_write_json(tmp / METRICS, compute_metrics(scored))
        io.atomic_write_json(tmp / "config.json", config)
        io.atomic_write_json(tmp / PROVENANCE, provenance(seed=None, tokenizer=cfg.tokenizer))
    return Path(cfg.out)
