"""A resumable evaluation run: ``runs/<name>/{config,generations,metrics,provenance}``.

``generations.jsonl`` is appended (and fsynced) as each batch finishes; a rerun with the same config
skips the (dataset, id, sample) triples already there, so a killed run resumes without losing or
duplicating rows. At the end the file is rewritten in canonical order (dataset, problem, sample), so
the same config gives the same bytes whether or not the run was interrupted (for greedy decoding),
and ``metrics.json`` and ``provenance.json`` are written.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from l2s import io
from l2s.data import load_benchmark
from l2s.eval.backends import Request, make_backend, resolve_backend
from l2s.eval.grading import Grade, GradeConfig, Grader
from l2s.eval.measures import interim_answer, keyword_hits
from l2s.eval.metrics import compute_metrics
from l2s.eval.prompts import DEFAULT_STOP, PROMPTS, build_prompt, chat_messages, load_exemplars
from l2s.eval.sampling import SamplingConfig
from l2s.paths import model_location
from l2s.provenance import config_hash, file_sha256, provenance

log = logging.getLogger(__name__)
GENERATIONS, CONFIG, METRICS, PROVENANCE = "generations.jsonl", "config.json", "metrics.json", "provenance.json"


@dataclass
class EvalConfig:
    """Everything that decides a run's outputs (saved as config.json). ``tags`` are free-form labels
    for the study (size, role, method, params) and do not change the outputs."""

    model: str
    datasets: tuple[str, ...]
    out: str
    data_dir: str | None = None
    split: str = "test"
    limit: int | None = None
    prompt: str = "qwen25-math-cot"
    exemplars: str | None = None
    n_shots: int = 4
    tokenizer: str | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    grading: GradeConfig = field(default_factory=GradeConfig)
    backend: str = "auto"
    batch_size: int = 16
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # vllm: worker processes, each on tensor_parallel_size GPUs
    dtype: str = "auto"
    # The context a response must fit in, prompt included: None = the model's max_position_embeddings.
    # A request whose prompt + max_new_tokens exceeds it gets a smaller budget, recorded in its row
    # (``budget``) and counted in metrics.json ``token_limit``: Qwen2.5-Math-7B has 4,096 positions,
    # so its 8,192-token budget of Wu et al. can never be reached (vLLM would stop at the context).
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9  # vllm: share of GPU memory for weights and KV cache
    tags: dict = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.datasets, str):
            self.datasets = tuple(d for d in self.datasets.split(",") if d)
        self.datasets = tuple(self.datasets)
        if not self.datasets:
            raise ValueError("no datasets given")
        if isinstance(self.sampling, dict):
            self.sampling = SamplingConfig.from_dict(self.sampling)
        if isinstance(self.grading, dict):
            self.grading = GradeConfig(**self.grading)
        if self.prompt not in PROMPTS:
            raise ValueError(f"unknown prompt {self.prompt!r}; expected one of {', '.join(PROMPTS)}")
        for name in ("batch_size", "tensor_parallel_size", "data_parallel_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.data_parallel_size > 1 and self.backend == "hf":
            raise ValueError("data_parallel_size > 1 needs the vllm backend (hf generates in one process)")
        if self.max_model_len is not None and (not isinstance(self.max_model_len, int) or self.max_model_len < 2):
            raise ValueError(f"max_model_len must be an integer >= 2 or None, got {self.max_model_len!r}")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        if self.prompt in DEFAULT_STOP and not self.sampling.stop:
            self.sampling = SamplingConfig.from_dict({**self.sampling.to_dict(),
                                                      "stop": list(DEFAULT_STOP[self.prompt])})
        from l2s.runs import check_tags  # l2s.runs reads run directories with this module's names

        self.tags = check_tags(self.tags)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["datasets"] = list(self.datasets)
        d["sampling"] = self.sampling.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "eval config") -> EvalConfig:
        """A config from a mapping (a YAML file, a run's config.json), type-checked (:func:`l2s.config.parse`)."""
        from l2s.config import parse

        return parse(cls, d, where)

    def outputs_key(self) -> dict:
        """The part of the config that decides outputs (everything but where they go and the tags)."""
        d = self.to_dict()
        # requests are seeded per key: N workers do not change outputs; memory share neither
        for k in ("out", "tags", "data_parallel_size", "gpu_memory_utilization"):
            d.pop(k)
        d["grading"].pop("workers")
        return d


def _read_done(path: Path) -> list[dict]:
    """Complete rows of generations.jsonl; a torn last line (killed mid-write) is cut off on disk
    so that appending continues on a clean line boundary."""
    if not path.exists():
        return []
    text = io.read_text(path)
    lines = io.read_jsonl_lines(path, tolerate_torn_tail=True)
    for line, r in lines:
        missing = [k for k in ("dataset", "id", "sample") if k not in r]
        if missing or not isinstance(r.get("sample"), int):
            raise ValueError(f"{path}:{line}: not a generations row (lacks {missing or 'an integer sample'}); "
                             "was the file edited? Delete the run directory to start over")
    rows = [r for _, r in lines]
    if text and not text.endswith("\n"):
        io.write_jsonl(path, rows)
    return rows


def _prepare_out(cfg: EvalConfig) -> Path:
    out = Path(cfg.out)
    cfg_path = out / CONFIG
    if cfg_path.exists():
        saved = io.read_json(cfg_path)
        if not isinstance(saved, dict):
            raise ValueError(f"{cfg_path}: expected the run's config (a JSON object), got {type(saved).__name__}; "
                             "choose another --out or delete it")
        old = EvalConfig.from_dict(saved)
        if old.outputs_key() != cfg.outputs_key():
            diff = sorted(k for k in cfg.outputs_key() if old.outputs_key().get(k) != cfg.outputs_key()[k])
            raise FileExistsError(f"{out} holds a run with a different config (differs in {diff}); "
                                  "choose another --out or delete it")
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not an l2s run directory (no {CONFIG})")
    io.atomic_write_json(cfg_path, cfg.to_dict())
    return out


def model_load_error(model: str, e: OSError) -> FileNotFoundError:
    """What a failed model load means: a hub id the hub did not give (offline, no such repo), or a
    local directory transformers cannot read."""
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not Path(model).is_dir():
        return FileNotFoundError(f"model directory {model} not found, and the hub gave no repo {model} ({first}); "
                                 "check the path, or the network for a hub id")
    return FileNotFoundError(f"cannot load model {model!r}: {first}")


def _model_provenance(cfg: EvalConfig, backend) -> dict:
    info: dict = {"model": cfg.model}
    model_dir = Path(cfg.model)
    if (model_dir / "config.json").is_file():
        info["model_config_hash"] = config_hash(io.read_json(model_dir / "config.json"))
    elif backend is not None:
        info["model_config_hash"] = config_hash(backend.model_info().get("config"))
    if (model_dir / "l2s_merge.json").is_file():
        info["l2s_merge"] = io.read_json(model_dir / "l2s_merge.json")
        info["l2s_merge_sha256"] = file_sha256(model_dir / "l2s_merge.json")
    return info


def grade_responses(grader: Grader, items: list[tuple[str, str, bool]], progress: bool = False,
                    desc: str = "grading") -> list[tuple[Grade, Grade | None]]:
    """(final grade, interim grade) per (response, gold, truncated), graded in one batch. The interim
    answer (:func:`l2s.eval.measures.interim_answer`: the last box before the first reflection keyword)
    is graded as the response ``\\boxed{interim}`` would be, so exactly like a final boxed answer (never
    truncated: it was stated before the response went on); None where the response has none."""
    interims = [interim_answer(response) for response, _, _ in items]
    extra = [(f"\\boxed{{{p}}}", gold, False) for p, (_, gold, _) in zip(interims, items, strict=True)
             if p is not None]
    grades = grader.grade(list(items) + extra, progress=progress, desc=desc)
    finals, rest = grades[:len(items)], iter(grades[len(items):])
    return [(g, None if p is None else replace(next(rest), pred=p))
            for g, p in zip(finals, interims, strict=True)]


def score_row(base: dict, response: str, n_tokens: int, finished: bool, truncated: bool, grade,
              interim: Grade | None) -> dict:
    """One generations.jsonl row (the contract's fields, plus ``grade_status``; ``messages``: the chat
    the prompt rendered, None for a text prompt, see :func:`l2s.eval.prompts.chat_messages`; ``budget``
    only where the context capped the response's new tokens below ``max_new_tokens``), and the
    interim answer given before the first reflection keyword and whether it is right (``interim_pred``,
    ``interim_correct``; None without one, :func:`grade_responses`)."""
    hits = keyword_hits(response)
    budget = base.pop("budget", None)
    row = {**base, "response": response, "pred": grade.pred, "correct": grade.correct,
           "grade_status": grade.status, "n_tokens": n_tokens, "finished": finished,
           "truncated": truncated, "reflective": hits > 0, "keyword_hits": hits,
           "interim_pred": None if interim is None else interim.pred,
           "interim_correct": None if interim is None else interim.correct}
    return row if budget is None else {**row, "budget": budget}


def context_length(cfg: EvalConfig, backend) -> int | None:
    """The tokens a prompt and its response may take together: ``max_model_len``, else the model's
    ``max_position_embeddings`` (None when the backend does not say)."""
    config = (backend.model_info() or {}).get("config") or {}
    positions = config.get("max_position_embeddings")
    if cfg.max_model_len is not None:
        return cfg.max_model_len if positions is None else min(cfg.max_model_len, positions)
    return positions


def token_budget(max_new_tokens: int, context: int | None, prompt_tokens: int, where: str) -> int | None:
    """A request's new-token budget when the context caps it below ``max_new_tokens``, else None."""
    if context is None or prompt_tokens + max_new_tokens <= context:
        return None
    if prompt_tokens >= context:
        raise ValueError(f"{where}: the prompt has {prompt_tokens} tokens, the model's context {context}: "
                         "nothing can be generated; raise max_model_len (if the model allows it) or shorten "
                         "the prompt (fewer n_shots)")
    return context - prompt_tokens


def evaluate(cfg: EvalConfig, backend=None, progress: bool = True) -> Path:
    """Run (or resume) an evaluation and return its directory. ``backend``: an already built
    :class:`~l2s.eval.backends.Backend` (e.g. ``HFBackend.from_objects``) instead of loading ``cfg.model``."""
    problems = {name: load_benchmark(name, cfg.data_dir, cfg.split, cfg.limit) for name in cfg.datasets}
    exemplars = load_exemplars(cfg.exemplars) if cfg.prompt == "cot" else None
    if backend is None:
        from l2s.merge.checkpoint import check_safetensors  # torch: imported when a model is loaded

        check_safetensors(model_location(cfg.model))
    created = not Path(cfg.out).exists()
    out = _prepare_out(cfg)  # after the data loaded: bad input leaves no run directory behind
    gen_path = out / GENERATIONS
    done = {(r["dataset"], str(r["id"]), int(r["sample"])) for r in _read_done(gen_path)}
    wanted = [(name, row, s) for name, rows in problems.items() for row in rows for s in range(cfg.sampling.n)]
    pending = [w for w in wanted if (w[0], w[1]["id"], w[2]) not in done]
    log.info("%s: %d responses wanted, %d done, %d to generate", out, len(wanted), len(wanted) - len(pending),
             len(pending))

    own_backend = backend is None
    with Grader(cfg.grading) as grader:
        try:
            if pending:
                if len(pending) >= cfg.grading.min_pool_items and grader._workers() > 0:
                    grader.start()  # fork the grading workers before the model reaches the GPU
                if own_backend:
                    try:
                        backend = make_backend(resolve_backend(cfg.backend), cfg.model, cfg.tokenizer,
                                               batch_size=cfg.batch_size, dtype=cfg.dtype,
                                               tensor_parallel_size=cfg.tensor_parallel_size,
                                               data_parallel_size=cfg.data_parallel_size,
                                               max_model_len=cfg.max_model_len,
                                               gpu_memory_utilization=cfg.gpu_memory_utilization)
                    except OSError as e:
                        raise model_load_error(cfg.model, e) from e
                _generate(cfg, backend, grader, pending, gen_path, progress, exemplars)
            rows = finalize(out, wanted, cfg.sampling.max_new_tokens)
            if pending or not (out / PROVENANCE).exists():  # a no-op rerun keeps the record of the real run
                backend_name = type(backend).__name__ if backend is not None else cfg.backend
                io.atomic_write_json(out / PROVENANCE, provenance(seed=cfg.sampling.seed, backend=backend_name,
                                                                  n_responses=len(rows),
                                                                  **_model_provenance(cfg, backend)))
        except BaseException:
            if created and not gen_path.exists():  # failed before any response: leave nothing behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            if own_backend and backend is not None:
                backend.close()
    return out


def _generate(cfg: EvalConfig, backend, grader: Grader, pending: list[tuple], gen_path: Path,
              progress: bool, exemplars: list[dict] | None) -> None:
    """Generate the pending responses; grade, measure and append each batch as it arrives."""
    context = context_length(cfg, backend)
    limit = cfg.sampling.max_new_tokens
    prompt_of: dict[tuple, str] = {}
    budget_of: dict[tuple, int | None] = {}
    base_of: dict[tuple, dict] = {}
    requests = []
    for name, row, s in pending:
        pid = (name, row["id"])
        if pid not in prompt_of:
            prompt_of[pid] = build_prompt(cfg.prompt, row["problem"], backend.tokenizer, exemplars, cfg.n_shots)
            n_prompt = len(backend.tokenizer(prompt_of[pid], add_special_tokens=False).input_ids)
            budget_of[pid] = token_budget(limit, context, n_prompt, f"{name} problem {row['id']}")
        key = (name, row["id"], s)
        base_of[key] = {"id": row["id"], "dataset": name, "level": row["level"], "sample": s,
                        "prompt": prompt_of[pid], "messages": chat_messages(cfg.prompt, row["problem"]),
                        "answer": row["answer"]}
        if budget_of[pid] is not None:
            base_of[key]["budget"] = budget_of[pid]
        requests.append(Request(key, base_of[key]["prompt"], max_new_tokens=budget_of[pid]))
    capped = sum(b is not None for b in budget_of.values())
    if capped:
        log.warning("%d of %d prompts: max_new_tokens %d does not fit the model's context of %d tokens; "
                    "their budget is capped to the context (recorded as 'budget' in their rows and in "
                    "metrics.json token_limit)", capped, len(budget_of), limit, context)
    for batch in backend.generate(requests, cfg.sampling, progress=progress):
        grades = grade_responses(grader, [(g.text, base_of[r.key]["answer"], g.truncated) for r, g in batch])
        io.append_jsonl(gen_path, [score_row(dict(base_of[r.key]), g.text, len(g.token_ids), g.finished, g.truncated,
                                             final, interim)
                                   for (r, g), (final, interim) in zip(batch, grades, strict=True)])


def finalize(out: Path, wanted: list[tuple], max_new_tokens: int | None = None) -> list[dict]:
    """Rewrite generations.jsonl in canonical order (one row per wanted response; duplicates from
    any older writer dropped) and write metrics.json (with ``token_limit``: the run's
    ``max_new_tokens``, how many responses the context capped below it, how many hit their limit)."""
    gen_path = out / GENERATIONS
    by_key = {}
    for r in _read_done(gen_path):
        by_key.setdefault((r["dataset"], str(r["id"]), int(r["sample"])), r)
    missing = [(n, row["id"], s) for n, row, s in wanted if (n, row["id"], s) not in by_key]
    if missing:
        raise RuntimeError(f"{gen_path}: {len(missing)} responses missing after generation, e.g. {missing[:3]}")
    rows = [by_key[(n, row["id"], s)] for n, row, s in wanted]
    io.write_jsonl(gen_path, rows)
    metrics = compute_metrics(rows)
    if max_new_tokens is not None:
        metrics["token_limit"] = {"max_new_tokens": max_new_tokens,
                                  "capped_by_context": sum("budget" in r for r in rows),
                                  "min_budget": min((r["budget"] for r in rows if "budget" in r), default=None),
                                  "hit_limit": sum(bool(r["truncated"]) for r in rows)}
    io.atomic_write_json(out / METRICS, metrics)
    return rows
