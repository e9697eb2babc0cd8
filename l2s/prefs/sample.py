"""``l2s sample``: K responses per training problem from the long and from the short model (Ada-R1 Sec. 3.2).

Each model's samples are an ordinary evaluation run (``<out>/sample-long``, ``<out>/sample-short``),
generated, graded and measured by :func:`l2s.eval.run.evaluate`, so they resume after a kill and feed
``l2s pairs`` directly. Defaults are Luo et al. (2025)'s: K = 12, temperature 0.6, top_p 0.95, and up
to 16k new tokens per response (:data:`SAMPLE_MAX_NEW_TOKENS`): the limit is stated, never taken from a
model's ``generation_config.json`` (R1-distill's sets none, and the evaluation default is 1,024). Each
run's ``metrics.json`` ``token_limit`` records it and how many responses hit it.

The toy splits are ordered by level; with a ``limit`` the first N problems would all be level 1. For
``toy`` the split is therefore written level-interleaved (L1, L2, ..., L5, L1, ...) into
``<out>/data`` first, so that a limit keeps the levels balanced (without a limit the set is unchanged).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STYLES = ("long", "short")
SAMPLE_MAX_NEW_TOKENS = 16384  # Ada-R1 (Luo et al. 2025) samples the training responses up to 16k tokens
# The EvalConfig fields that set up the generation engine, given through ``engine``.
ENGINE_OPTIONS = ("tensor_parallel_size", "data_parallel_size", "dtype", "max_model_len", "gpu_memory_utilization")


def check_engine(engine: dict) -> None:
    """Refuse ``engine`` options that are not :data:`ENGINE_OPTIONS`, naming them."""
    unknown = sorted(set(engine) - set(ENGINE_OPTIONS))
    if unknown:
        raise ValueError(f"engine: unknown option(s) {unknown}; expected some of {list(ENGINE_OPTIONS)}")


@dataclass
class SampleConfig:
    """What to sample; ``max_new_tokens`` per response (default :data:`SAMPLE_MAX_NEW_TOKENS`)."""

    long_model: str
    short_model: str
    out: str
    dataset: str = "toy"
    split: str = "train"
    limit: int | None = None
    data_dir: str | None = None
    prompt: str = "chat"
    k: int = 12
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = SAMPLE_MAX_NEW_TOKENS
    seed: int = 0
    backend: str = "auto"
    batch_size: int = 16
    # vLLM engine settings passed to both evaluations (EvalConfig fields): tensor_parallel_size,
    # data_parallel_size, dtype, max_model_len, gpu_memory_utilization
    engine: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_engine(self.engine)
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k (samples per problem) must be an integer >= 1, got {self.k!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 to draw {self.k} different samples, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def interleave_levels(rows: list[dict]) -> list[dict]:
    """Rows reordered L1, L2, ..., L5, L1, ... (order inside a level kept): a prefix is level-balanced."""
    by_level: dict[Any, list[dict]] = {}
    for r in rows:
        by_level.setdefault(r.get("level"), []).append(r)
    queues = [by_level[lv] for lv in sorted(by_level, key=lambda v: (v is None, v or 0))]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def balanced_data_dir(datasets: tuple[str, ...] | list[str], split: str, data_dir: str | None,
                      target: Path) -> str | None:
    """A data directory in which ``toy`` is level-interleaved, or ``data_dir`` unchanged when there is
    no toy dataset or another dataset comes from the hub (it cannot be redirected)."""
    from l2s import io
    from l2s.data import load_benchmark

    if "toy" not in datasets or (data_dir is None and any(d != "toy" for d in datasets)):
        return data_dir
    toy_file = target / "toy" / f"{split}.jsonl"
    if not toy_file.is_file():
        rows = load_benchmark("toy", data_dir, split)
        io.write_jsonl(toy_file, [{k: r[k] for k in ("id", "problem", "answer", "level")}
                                  for r in interleave_levels(rows)])
    for name in datasets:
        link = target / name
        if name != "toy" and not link.exists():
            os.symlink(Path(data_dir, name).resolve(), link)
    return str(target)


def eval_configs(cfg: SampleConfig) -> dict[str, Any]:
    """The two evaluation configs (``long``, ``short``): same problems, prompt and sampling."""
    from l2s.eval.run import EvalConfig
    from l2s.eval.sampling import SamplingConfig

    out = Path(cfg.out)
    data_dir = cfg.data_dir
    if cfg.limit is not None:
        data_dir = balanced_data_dir((cfg.dataset,), cfg.split, cfg.data_dir, out / "data")
    sampling = SamplingConfig(n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                              max_new_tokens=cfg.max_new_tokens)
    models = {"long": cfg.long_model, "short": cfg.short_model}
    return {style: EvalConfig(model=str(models[style]), datasets=(cfg.dataset,), out=str(out / f"sample-{style}"),
                              data_dir=data_dir, split=cfg.split, limit=cfg.limit, prompt=cfg.prompt,
                              sampling=sampling, backend=cfg.backend, batch_size=cfg.batch_size, **cfg.engine,
                              tags={**cfg.tags, "stage": "sample", "style": style})
            for style in STYLES}


def sample(cfg: SampleConfig, progress: bool = True) -> dict[str, Path]:
    """Sample (or resume sampling) both models; returns ``{"long": run_dir, "short": run_dir}``."""
    from l2s.data import load_benchmark
    from l2s.eval.run import evaluate
    from l2s.paths import model_location

    for style, model in (("long", cfg.long_model), ("short", cfg.short_model)):
        model_location(model, f"{style} model")
    load_benchmark(cfg.dataset, cfg.data_dir, cfg.split)  # bad problems fail here, before anything is written
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return {style: Path(evaluate(ecfg, progress=progress)) for style, ecfg in eval_configs(cfg).items()}


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.eval.prompts import PROMPTS

    p = sub.add_parser("sample", help="K samples per training problem from a long and a short model (Ada-R1)",
                       description="Sample K responses per problem from the long-CoT and the short-CoT model "
                                   "as two resumable evaluation runs OUT/sample-long and OUT/sample-short "
                                   "(input of `l2s pairs`). Options override --config, which overrides the "
                                   "defaults (K 12, temperature 0.6, top_p 0.95, 16,384 new tokens).")
    p.add_argument("--long", dest="long_model", help="long-CoT model (checkpoint directory or hub id)")
    p.add_argument("--short", dest="short_model", help="short-CoT model")
    p.add_argument("--out", help="output directory (rerun to resume)")
    p.add_argument("--config", type=Path, help="JSON/YAML file of SampleConfig options")
    p.add_argument("--dataset", help="training problems (default toy)")
    p.add_argument("--split", help="default train")
    p.add_argument("--limit", type=int, help="first N problems (toy: level-balanced)")
    p.add_argument("--data-dir", help="directory of <dataset>/<split>.jsonl")
    p.add_argument("--prompt", choices=PROMPTS)
    p.add_argument("--k", type=int, help="samples per problem and model (default 12)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-new-tokens", type=int, help=f"per response (default {SAMPLE_MAX_NEW_TOKENS}, Ada-R1)")
    p.add_argument("--seed", type=int)
    p.add_argument("--backend", choices=["auto", "vllm", "hf"])
    p.add_argument("--batch-size", type=int)
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    from l2s.cli import UserError
    from l2s.config import options_from_args, parse, where_of

    options = options_from_args(SampleConfig, args)
    for required in ("long_model", "short_model", "out"):
        if not options.get(required):
            flag = {"long_model": "--long", "short_model": "--short", "out": "--out"}[required]
            raise UserError(f"{flag} is required (or set {required} in --config)")
    runs = sample(parse(SampleConfig, options, where_of(args)))
    for run in runs.values():
        print(run)
    return 0
