"""Ada-R1 end to end (Luo et al. 2025, arXiv 2504.21659): merge, sample, pair, DPO, evaluate.

1. merge the long- and short-CoT models linearly, θ_M = α·θ_L + (1−α)·θ_S (α = 0.8 in the authors'
   MergeKit config), into the cache (``l2s.paths.cache_dir()/merged/``; weights never go to git);
2. sample K responses per training problem from the long and from the short model, up to 16,384 new
   tokens each (``<out>/sample-long``, ``<out>/sample-short``, see :mod:`l2s.prefs.sample`); every
   row keeps the chat its prompt rendered (``messages``), whatever the chat template;
3. build bi-level preference pairs (or an ablation variant) per variant (``<out>/pairs-<variant>``),
   their prompts taken from the rows; the ``shortest_vs_longest`` baseline pools both models' samples;
4. DPO (SFT for the ``sft`` variant) of the merged model on them, into the cache;
5. evaluate the long model, the plain merge and every Ada-R1 variant (greedy, up to 10,240 new
   tokens) on the eval split (``<out>/eval-long``, ``<out>/eval-merge``, ``<out>/eval-<variant>``).

The token limits are stated, never taken from a model's generation config (:func:`token_limits`).
The stages are :mod:`l2s.pipeline` tasks, the study's runner: a finished stage is skipped, so
``run_adar1`` resumes where a killed run stopped and a second call does no work; a stage whose
inputs changed (say the DPO preset) reruns, and so does everything downstream of it, and nothing else.
``<out>/adar1.json`` records the config, the token limits, the checkpoint paths and the provenance;
``<out>/summary.json`` compares the runs with the long model by
level, and states each run's token limit and how many responses hit it, each variant's pair count
and coverage, and the ``warnings`` (pairs covering few problems, a chat template that would train on
other text than was sampled).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s import io, paths
from l2s.prefs.config import BASELINE_SOURCES, VARIANTS

log = logging.getLogger(__name__)
RECORD = "adar1.json"
EVAL_BATCH_SIZE = 32
# Ada-R1 (Luo et al. 2025) evaluates with up to 10,240 new tokens (sampling: l2s.prefs.sample, 16,384).
EVAL_MAX_NEW_TOKENS = 10240
@dataclass
class AdaR1Config:
    """The whole pipeline. ``variants``: any of :data:`l2s.prefs.config.VARIANTS`, default all: ``bilevel``
    is Ada-R1; ``group``, ``instance`` and ``sft`` are Table 3's ablations, ``shortest_vs_longest`` the
    DPO baseline, from both models' samples (``baseline_source`` ``pooled``) or the long model's.
    Token limits (:func:`token_limits`): ``sample_max_new_tokens`` (default 16,384) and
    ``eval_max_new_tokens`` (default 10,240), or ``max_new_tokens`` for both stages at once (the toy
    study sets 128). ``tags`` are added to every evaluation run's tags (e.g. ``{"size": "toy-s"}``)."""

    long_model: str
    short_model: str
    out: str
    alpha: float = 0.8
    k: int = 12
    temperature: float = 0.6
    top_p: float = 0.95
    train_dataset: str = "toy"
    train_split: str = "train"
    train_limit: int | None = None
    data_dir: str | None = None
    train_data_dir: str | None = None  # where the training problems are, if not in data_dir (the mix)
    prompt: str = "chat"
    eval_datasets: tuple[str, ...] = ("toy",)
    eval_split: str = "test"
    eval_limit: int | None = None
    max_new_tokens: int | None = None
    sample_max_new_tokens: int | None = None
    eval_max_new_tokens: int | None = None
    dpo_preset: str = "toy"
    variants: tuple[str, ...] = VARIANTS
    baseline_source: str = "pooled"
    seed: int = 0
    backend: str = "auto"  # sampling and evaluation: auto, hf, vllm
    engine: dict[str, Any] = field(default_factory=dict)  # vLLM settings (l2s.prefs.sample.ENGINE_OPTIONS)
    tags: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from l2s.dpo.config import PRESETS

        self.long_model, self.short_model, self.out = str(self.long_model), str(self.short_model), str(self.out)
        if isinstance(self.eval_datasets, str):
            self.eval_datasets = tuple(d for d in self.eval_datasets.split(",") if d)
        self.eval_datasets, self.variants = tuple(self.eval_datasets), tuple(self.variants)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha (weight of the long model in the merge) must be in [0, 1], got {self.alpha!r}")
        self.alpha = float(self.alpha)
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k (samples per problem and model) must be an integer >= 1, got {self.k!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not self.variants:
            raise ValueError(f"no variants given; choose from {VARIANTS}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or len(set(self.variants)) != len(self.variants):
            raise ValueError(f"unknown or repeated variant(s) {unknown or list(self.variants)}; "
                             f"expected distinct values from {VARIANTS}")
        if self.baseline_source not in BASELINE_SOURCES:
            raise ValueError(f"baseline_source must be one of {BASELINE_SOURCES}, got {self.baseline_source!r}")
        if self.dpo_preset not in PRESETS:
            raise ValueError(f"unknown dpo_preset {self.dpo_preset!r}; expected one of {sorted(PRESETS)}")
        if not self.eval_datasets:
            raise ValueError("eval_datasets is empty")
        from l2s.prefs.sample import check_engine

        check_engine(self.engine)  # before any stage runs, not only when sampling starts
        for name in ("train_limit", "eval_limit", "max_new_tokens", "sample_max_new_tokens", "eval_max_new_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_datasets"], d["variants"] = list(self.eval_datasets), list(self.variants)
        return d


def token_limits(cfg: AdaR1Config) -> dict[str, int]:
    """New tokens per response, ``{"sample": N, "eval": M}``: the stage's own option if set, else
    ``max_new_tokens`` if set, else Ada-R1's (Luo et al. 2025): 16,384 to sample the training responses
    (:data:`l2s.prefs.sample.SAMPLE_MAX_NEW_TOKENS`), 10,240 to evaluate (:data:`EVAL_MAX_NEW_TOKENS`)."""
    from l2s.prefs.sample import SAMPLE_MAX_NEW_TOKENS

    return {"sample": cfg.sample_max_new_tokens or cfg.max_new_tokens or SAMPLE_MAX_NEW_TOKENS,
            "eval": cfg.eval_max_new_tokens or cfg.max_new_tokens or EVAL_MAX_NEW_TOKENS}


def merge_fields(cfg: AdaR1Config) -> dict[str, Any]:
    """The linear merge of Ada-R1 (α on the long model) as :class:`l2s.merge.MergeConfig` fields."""
    return {"method": "linear", "base": None, "models": [cfg.long_model, cfg.short_model],
            "params": {"alpha": cfg.alpha}, "seed": cfg.seed}


def merged_path(cfg: AdaR1Config) -> Path:
    """Where the plain merge of ``cfg`` lives in the cache (:func:`l2s.merge.cache.merged_path`)."""
    from l2s.merge.cache import merged_path as cache_path

    return cache_path(f"adar1-linear-a{cfg.alpha:g}", merge_fields(cfg))


def trained_path(cfg: AdaR1Config, variant: str, merged: Path, pairs_dir: Path) -> Path:
    """Where the DPO/SFT model of one variant lives in the cache: keyed by the merge, the pairs and the preset."""
    from l2s.dpo.config import preset_config
    from l2s.provenance import checkpoint_record, config_hash, file_sha256

    key = config_hash({"merged": checkpoint_record(merged), "pairs": file_sha256(pairs_dir / "pairs.jsonl"),
                       "train": preset_config(cfg.dpo_preset, seed=cfg.seed).to_dict()})
    return paths.cache_dir() / "adar1" / f"{variant}-{cfg.dpo_preset}-{key}"


def _eval(cfg: AdaR1Config, model: Path | str, run: Path, tags: dict, data_dir: str | None) -> None:
    from l2s.eval.run import EvalConfig, evaluate
    from l2s.eval.sampling import SamplingConfig

    evaluate(EvalConfig(model=str(model), datasets=cfg.eval_datasets, out=str(run), data_dir=data_dir,
                        split=cfg.eval_split, limit=cfg.eval_limit, prompt=cfg.prompt,
                        sampling=SamplingConfig(max_new_tokens=token_limits(cfg)["eval"]), backend=cfg.backend,
                        batch_size=EVAL_BATCH_SIZE, **cfg.engine, tags={**cfg.tags, **tags}))


def summarize(eval_runs: dict[str, Path], reference: str = "long") -> dict[str, Any]:
    """Per run and eval dataset: accuracy, mean tokens, reflective (long-CoT) ratio, overall and by
    level, and the length change and accuracy delta vs the ``reference`` run (Ada-R1 Table 1's columns)."""
    from l2s.eval.metrics import compare
    from l2s.runs import read_run

    metrics = {name: read_run(run).metrics for name, run in eval_runs.items()}
    keys = ("n", "accuracy", "mean_tokens", "reflective_ratio")
    out: dict[str, Any] = {}
    for name, m in metrics.items():
        cmp = compare(m, metrics[reference])["datasets"]
        out[name] = {ds: {**{k: v[k] for k in keys},
                          "accuracy_delta": cmp[ds]["accuracy_delta"], "length_change": cmp[ds]["length_change"],
                          "by_level": {lv: {k: b[k] for k in keys} for lv, b in v["by_level"].items()}}
                     for ds, v in m["datasets"].items()}
    return {"reference": reference, "runs": out}


def _problems_csv(path: Path) -> list[dict[str, Any]]:
    """problems.csv rows with the fields :func:`l2s.prefs.build.coverage` reads (older pairs directories'
    summary.json has no coverage)."""
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return [{"dataset": r["dataset"], "id": r["id"], "kept": r["kept"] == "True",
                 **{k: int(r[k] or 0) for k in ("n_group", "n_instance", "n_baseline")}} for r in csv.DictReader(f)]


def pairs_overview(pairs_dirs: dict[str, Path]) -> dict[str, Any]:
    """Per variant: its rows, the problems they cover and drop, and its warnings (pairs summary.json)."""
    from l2s.prefs import PairsConfig
    from l2s.prefs.build import coverage, coverage_warnings

    out = {}
    for variant, d in pairs_dirs.items():
        summary, config = io.read_json(d / "summary.json"), PairsConfig(**io.read_json(d / "config.json")["pairs"])
        cov = summary.get("coverage") or coverage(_problems_csv(d / "problems.csv"))
        warnings = summary["warnings"] if "warnings" in summary else coverage_warnings(cov, config)
        out[variant] = {"n_rows": summary["n_rows"], **{k: cov[k] for k in ("n_problems", "n_with_pairs",
                                                                           "frac_with_pairs", "n_dropped")},
                        **({"baseline_source": config.baseline_source} if variant == "shortest_vs_longest" else {}),
                        "warnings": warnings}
    return out


def run_adar1(cfg: AdaR1Config) -> dict:
    """Run (or resume) the pipeline as :mod:`l2s.pipeline` tasks (markers in ``<out>/stages/``): a stage
    whose inputs changed reruns with everything downstream, a finished one is skipped. Returns every
    path: ``merged``, ``sample_runs``, ``pairs``, ``models`` (variant -> checkpoint), ``eval_runs`` (name ->
    run dir), ``record``, ``summary`` and ``stages`` (stage -> "ran" or "skipped" in this call)."""
    from l2s.dpo.config import preset_config
    from l2s.dpo.train import train
    from l2s.merge import MergeConfig, already_merged, merge
    from l2s.pipeline import Task, clear_when_stale
    from l2s.pipeline import run as run_tasks
    from l2s.prefs import PairsConfig, write_pairs
    from l2s.prefs.groups import token_limit
    from l2s.prefs.sample import SampleConfig, balanced_data_dir, sample
    from l2s.provenance import checkpoint_record, provenance

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    stages = out / "stages"
    limits = token_limits(cfg)
    inputs = {"long": checkpoint_record(cfg.long_model), "short": checkpoint_record(cfg.short_model)}
    tasks: list[Task] = []

    def stage(name: str, key: Any, work, outputs=(), deps=(), clear=(), artifacts: bool = False):
        def go():  # only the merge and the trained models are artifacts (cache paths) of their stage
            made = work()
            return made if artifacts else None
        tasks.append(Task(name=name, key=key, marker=stages / f"{name}.json", work=go, outputs=tuple(outputs),
                          deps=tuple(deps), before_rerun=clear_when_stale(*clear)))

    merged = merged_path(cfg)
    merge_cfg = MergeConfig(out=str(merged), overwrite=True, **merge_fields(cfg))

    def do_merge():
        if not already_merged(merge_cfg):
            merge(merge_cfg)
        return [merged]
    stage("merge", {"merged": str(merged)}, do_merge, artifacts=True)

    scfg = SampleConfig(long_model=cfg.long_model, short_model=cfg.short_model, out=str(out),
                        dataset=cfg.train_dataset, split=cfg.train_split, limit=cfg.train_limit,
                        data_dir=cfg.train_data_dir or cfg.data_dir, prompt=cfg.prompt, k=cfg.k,
                        temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=limits["sample"], seed=cfg.seed,
                        backend=cfg.backend, batch_size=EVAL_BATCH_SIZE, engine=cfg.engine,
                        tags={k: v for k, v in cfg.tags.items() if k != "role"})
    sample_runs = {s: out / f"sample-{s}" for s in ("long", "short")}
    sample_key = {**inputs, **{k: v for k, v in scfg.to_dict().items() if k not in ("out", "backend", "engine")}}
    stage("sample", sample_key, lambda: sample(scfg), [r / "metrics.json" for r in sample_runs.values()],
          clear=sample_runs.values())

    pairs, models = {}, {}
    for variant in cfg.variants:
        pairs[variant] = out / f"pairs-{variant}"
        pcfg = PairsConfig(variant=variant, baseline_source=cfg.baseline_source, seed=cfg.seed)
        stage(f"pairs-{variant}", pcfg.outputs_key(),
              lambda v=variant, c=pcfg: write_pairs(pairs[v], sample_runs["long"], sample_runs["short"], c,
                                                    tokenizer=merged),
              [pairs[variant] / "summary.json"], deps=("sample", "merge"), clear=[pairs[variant]])

        def do_train(v=variant):
            models[v] = trained_path(cfg, v, merged, pairs[v])
            if not (models[v] / "l2s_train.json").is_file():
                train(merged, pairs[v], models[v], preset_config(cfg.dpo_preset, seed=cfg.seed))
            return [models[v]]
        stage(f"train-{variant}", {"train": preset_config(cfg.dpo_preset, seed=cfg.seed).to_dict()}, do_train,
              deps=(f"pairs-{variant}", "merge"), artifacts=True)

    data_dir = cfg.data_dir
    if cfg.eval_limit is not None:
        data_dir = balanced_data_dir(cfg.eval_datasets, cfg.eval_split, cfg.data_dir, out / "data")
    evals: dict[str, tuple[str, dict]] = {
        "long": ("long", {"role": "reference", "method": "long"}),
        "merge": ("merge", {"role": "merged", "method": "linear", "params": {"alpha": cfg.alpha}}),
        **{v: (f"train-{v}", {"role": "adar1", "method": v}) for v in cfg.variants}}
    eval_runs = {}
    inside = data_dir is not None and Path(data_dir).is_relative_to(out)  # the balanced split: keyed by its recipe
    eval_key = {"datasets": list(cfg.eval_datasets), "split": cfg.eval_split, "limit": cfg.eval_limit,
                "data_dir": Path(data_dir).relative_to(out).as_posix() if inside else data_dir,
                "source_data_dir": cfg.data_dir, "prompt": cfg.prompt, "max_new_tokens": limits["eval"],
                "tags": cfg.tags}

    def model_of(source: str) -> Path | str:
        if source == "long":
            return cfg.long_model
        if source == "merge":
            return merged
        return models.get(source[len("train-"):]) or Path(_marker_artifact(stages / f"{source}.json"))

    for name, (source, tags) in evals.items():
        eval_runs[name] = out / f"eval-{name}"
        stage(f"eval-{name}", {**eval_key, "run_tags": tags, **({"model": inputs["long"]} if source == "long" else {})},
              lambda s=source, r=eval_runs[name], t=tags: _eval(cfg, model_of(s), r, t, data_dir),
              [eval_runs[name] / "metrics.json"], deps=() if source == "long" else (source,), clear=[eval_runs[name]])

    outcomes = run_tasks(tasks)
    failed = [o for o in outcomes if o.state in ("failed", "not run")]
    if failed:
        raise RuntimeError(f"ada-r1 {out}: stage {failed[0].task.name} failed: {failed[0].error}; fix it and rerun "
                           "the same command to resume")
    actions = {o.task.name: "ran" if o.state == "ran" else "skipped" for o in outcomes}
    for v in cfg.variants:
        models.setdefault(v, Path(_marker_artifact(stages / f"train-{v}.json")))

    summary = {**summarize(eval_runs), "token_limits": limits,
               "token_limit": {f"{kind}-{name}": token_limit(run) for kind, runs in (("sample", sample_runs),
                                                                                     ("eval", eval_runs))
                               for name, run in runs.items()},
               "pairs": pairs_overview(pairs)}
    summary["warnings"] = list(dict.fromkeys(w for v in summary["pairs"].values() for w in v["warnings"]))
    for warning in summary["warnings"]:
        log.warning("ada-r1 %s: %s", out, warning)
    io.atomic_write_json(out / "summary.json", summary)
    old = io.read_json(out / RECORD) if (out / RECORD).is_file() else {}
    record = {"config": cfg.to_dict(), "token_limits": limits,
              "models": {"merged": str(merged), **{v: str(m) for v, m in models.items()}},
              "stages": {o.task.name: {"seconds": round(o.seconds, 1)} for o in outcomes if o.state == "ran"}
              or old.get("stages", {}),
              "provenance": provenance(seed=cfg.seed) if "ran" in actions.values() or "provenance" not in old
              else old["provenance"],
              "eval_runs": {k: str(v) for k, v in eval_runs.items()}}
    io.atomic_write_json(out / RECORD, record)
    from l2s.pipeline import declare_artifacts

    declare_artifacts(out, [merged, *models.values()])
    return {"out": out, "record": out / RECORD, "merged": merged, "sample_runs": sample_runs, "pairs": pairs,
            "models": models, "eval_runs": eval_runs, "summary": summary, "stages": actions}


def _marker_artifact(marker: Path) -> str:
    """The checkpoint a finished train stage recorded (its marker's only artifact)."""
    return io.read_json(marker)["artifacts"][0]
