"""Score saved responses from any tool: grade, measure, re-encode lengths with the model's tokenizer.

Input rows: ``response`` and either ``answer`` (gold) or ``dataset`` + ``id`` (looked up in
``data_dir``); optional ``level``, ``sample``, ``truncated``. Without ``truncated``, a response is
truncated when ``max_new_tokens`` is given and its re-encoded length reaches it. The rows written are
those of ``l2s eval`` (:func:`l2s.eval.run.score_row`), the interim answer before the first reflection
keyword included: re-scoring an older run's ``generations.jsonl`` adds its ``interim_pred`` and
``interim_correct`` (and so the correction rates of its metrics).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from l2s import io
from l2s.data import load_benchmark
from l2s.eval.grading import GradeConfig, Grader
from l2s.eval.measures import count_tokens
from l2s.eval.metrics import compute_metrics
from l2s.eval.run import GENERATIONS, METRICS, PROVENANCE, grade_responses, score_row
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


def _check_row(r: dict, where: str) -> None:
    """Field types of one input row; ``where`` is its file and line."""
    if not isinstance(r.get("response"), str):
        raise ValueError(f"{where}: field 'response' must be a string, got {_kind(r.get('response'))}"
                         if "response" in r else f"{where}: missing field 'response'")
    if "answer" not in r and not ("dataset" in r and "id" in r):
        raise ValueError(f"{where}: needs field 'answer', or 'dataset' and 'id'")
    if "answer" in r:
        answer = r["answer"]
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise ValueError(f"{where}: field 'answer' must be a non-empty string or a number, got {_kind(answer)} "
                             f"{answer!r:.60}; fix the row, or drop 'answer' and give 'dataset' and 'id'")
    for name, types in (("dataset", (str,)), ("id", (str, int)), ("sample", (int,)), ("level", (int, type(None))),
                        ("truncated", (bool,)), ("prompt", (str, type(None)))):
        if name in r and (not isinstance(r[name], types) or (isinstance(r[name], bool) and bool not in types)):
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ValueError(f"{where}: field {name!r} must be {kinds}, got {_kind(r[name])} {r[name]!r:.60}")


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def score_responses(cfg: ScoreConfig, progress: bool = True) -> Path:
    from l2s.tokenizers import load_tokenizer

    io.check_replaceable(cfg.out, cfg.overwrite)
    lines = io.read_jsonl_lines(cfg.responses)
    if not lines:
        raise ValueError(f"{cfg.responses}: no rows")
    for line, r in lines:
        _check_row(r, f"{cfg.responses}:{line}")
    rows = [r for _, r in lines]
    gold = _gold_lookup(rows, cfg.data_dir, cfg.responses)
    base = []
    for i, (line, r) in enumerate(lines, 1):
        ref = None
        if "answer" not in r:
            ref = gold.get((r["dataset"], str(r["id"])))
            if ref is None:
                raise ValueError(f"{cfg.responses}:{line}: no problem with id {r['id']!r} in {r['dataset']}")
        level = r.get("level", ref["level"] if ref else None)
        base.append({"id": str(r.get("id", i - 1)), "dataset": r.get("dataset", cfg.dataset),
                     "level": int(level) if level is not None else None, "sample": int(r.get("sample", 0)),
                     "prompt": r.get("prompt"), "answer": str(r["answer"]) if "answer" in r else ref["answer"]})
    tok = load_tokenizer(cfg.tokenizer)
    responses = [r["response"] for r in rows]
    n_tokens = count_tokens(tok, responses)
    limit = cfg.max_new_tokens
    truncated = [bool(r["truncated"]) if "truncated" in r else (limit is not None and n >= limit)
                 for r, n in zip(rows, n_tokens, strict=True)]
    with Grader(cfg.grading) as grader:
        grades = grade_responses(grader, [(resp, b["answer"], t)
                                          for resp, b, t in zip(responses, base, truncated, strict=True)],
                                 progress=progress, desc="scoring")
    scored = [score_row(b, resp, n, not t, t, final, interim)
              for b, resp, n, t, (final, interim) in zip(base, responses, n_tokens, truncated, grades, strict=True)]
    config = {**asdict(cfg), "responses_sha256": file_sha256(cfg.responses)}
    with io.atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        io.write_jsonl(tmp / GENERATIONS, scored)
        io.atomic_write_json(tmp / METRICS, compute_metrics(scored))
        io.atomic_write_json(tmp / "config.json", config)
        io.atomic_write_json(tmp / PROVENANCE, provenance(seed=None, tokenizer=cfg.tokenizer))
    return Path(cfg.out)
