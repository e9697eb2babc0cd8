"""What the study's notebooks call: each notebook stays a few lines of narrative and calls.

- models (``00_models``): :func:`prepare_models` builds the toy family of a size (or records the given
  checkpoints of a real size) and writes ``run_dir/models.json``;
- merge (``01_merge``): :func:`merge_from_models` merges the models of a models run into the ignored
  cache ``cache_dir()/merged/<name>`` and keeps only ``run_dir/merge.json`` (paths + ``l2s_merge.json``);
- evaluate (``02_evaluate``): :func:`resolve_model` / :func:`default_tags` say what to evaluate and how
  to tag it for the figures; :func:`metrics_table` shows a run's metrics by level;
- explore (``05_explore``): :func:`side_by_side` and :func:`compare_by_level` put two runs' responses
  next to each other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from l2s import io, paths
from l2s.pipeline import declare_artifacts
from l2s.provenance import config_hash, file_sha256, provenance

log = logging.getLogger(__name__)

MODELS, MERGE = "models.json", "merge.json"
ROLES = ("quick", "slow", "short")


# -- 00 models ----------------------------------------------------------------------------------------
def prepare_models(run_dir: str | Path, size: str, toy_size: str | None = None, quick: str | None = None,
                   slow: str | None = None, short: str | None = None, standins: str | None = None,
                   tokenizers: dict | None = None, toy_data_per_level: int | None = None,
                   calibration: str | None = None, s1k: dict | None = None, mix: dict | None = None,
                   short_cot: dict | None = None, seed: int = 0) -> dict:
    """Write ``run_dir/models.json`` = ``{size, source, quick, slow, short, ...}``.

    With ``toy_size`` the toy family of that size is trained (or reused from the cache) by
    :func:`l2s.toy.build.build_family`; with ``standins`` (a layout of :data:`l2s.standins.LAYOUTS`)
    a real-shaped random pair is written by :func:`l2s.standins.build_standins` (``tokenizers``:
    ``{"qwen": ..., "r1": ...}`` directories or hub ids of the real tokenizers); else
    ``quick``/``slow`` (and optionally ``short``) are local directories or hub ids of real checkpoints,
    recorded as given. ``toy_data_per_level`` also writes a small toy split
    (``run_dir/data/toy/{train,dev,test}.jsonl``, that many problems per level) for evaluations with
    ``data_dir`` — every level represented even with a handful of problems. ``calibration="s1k"``
    writes the s1K calibration files into the cache (:func:`s1k_calibration`) and records them, for
    merges with ``calibration: s1k``. Ada-R1 (Luo et al. 2025): ``mix`` writes the training mix
    (:func:`training_mix`, recorded as ``train_data_dir``); ``short_cot`` builds the short-CoT model from
    the slow one (:func:`short_cot_model`, recorded as ``short``).
    """
    run_dir = Path(run_dir)
    if sum([toy_size is not None, standins is not None, bool(quick or slow or short)]) > 1:
        raise ValueError("give one of toy_size (build the toy family), standins (a real-shaped random pair) "
                         "or quick/slow/short checkpoints")
    if toy_size is not None:
        from l2s.toy.build import build_family

        built = build_family(toy_size)
        models = {role: str(built[role]) for role in ROLES}
        source = f"toy family {toy_size!r} (l2s.toy.build)"
    elif standins is not None:
        from l2s.standins import StandinConfig, build_standins

        tokenizers = dict(tokenizers or {})
        unknown = sorted(set(tokenizers) - {"qwen", "r1"})
        if unknown:
            raise ValueError(f"tokenizers: unknown key(s) {unknown}; expected 'qwen' and/or 'r1'")
        built = build_standins(StandinConfig(standins, qwen_tokenizer=tokenizers.get("qwen"),
                                             r1_tokenizer=tokenizers.get("r1"), seed=seed))
        models = {"quick": str(built["quick"]), "slow": str(built["slow"]), "short": None}
        source = f"stand-ins of the {standins} layout (l2s.standins)"
    else:
        if not quick or not slow:
            raise ValueError("a real size needs at least the quick (System-1) and slow (System-2) models")
        models = {"quick": str(quick), "slow": str(slow), "short": str(short) if short else None}
        source = "given checkpoints"
    record = {"size": size, "source": source, "toy_size": toy_size, **models}
    if standins is not None:
        record["standins"] = standins
    if mix is not None:
        record["train_data_dir"] = training_mix(**mix)
    if short_cot is not None:
        if record.get("short"):
            raise ValueError("give either short (a short-CoT checkpoint) or short_cot (build one), not both")
        options = dict(short_cot)
        if options.get("dataset", "mix") == "mix" and "solutions" not in options:
            options.setdefault("data_dir", record.get("train_data_dir"))
        record["short"] = short_cot_model(record["slow"], **options)
    if calibration is not None:
        if calibration != "s1k":
            raise ValueError(f"calibration must be 's1k' or None, got {calibration!r}")
        record["calibration"] = s1k_calibration(**(s1k or {}))
    if toy_data_per_level is not None:
        from l2s.toy.data import write_splits

        data = run_dir / "data"
        n = {"train": toy_data_per_level, "dev": toy_data_per_level, "test": toy_data_per_level}
        write_splits(data / "toy", n, seed=seed, overwrite=True)
        record["data_dir"] = str(data)
    record["provenance"] = provenance(seed=seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(run_dir / MODELS, record)
    declare_artifacts(run_dir, _cache_paths(record, run_dir))
    return record


def _cache_paths(record: dict, run_dir: Path) -> list[str]:
    """The local paths a models record names outside its run directory: checkpoints, the training mix,
    calibration files — what later steps load (hub ids are not paths and are left out)."""
    found = []
    for key in (*ROLES, "train_data_dir"):
        found.append(record.get(key))
    found += list((record.get("calibration") or {}).values())
    return [p for p in found if p and Path(p).exists() and not Path(p).resolve().is_relative_to(run_dir.resolve())]


def s1k_calibration(n: int = 100, seed: int = 0, source: str | None = None) -> dict:
    """The s1K calibration files (``l2s calibration s1k``) in the cache, written once per (n, seed,
    source): ``{"short": path, "long": path, "manifest": path}``."""
    from l2s.merge.s1k import write_s1k_calibration

    key = config_hash({"n": n, "seed": seed, "source": str(source) if source else None,
                       "source_sha256": file_sha256(source) if source and Path(source).is_file() else None})
    out = paths.cache_dir() / "calibration" / f"s1k-n{n}-seed{seed}-{key}"
    write_s1k_calibration(out, n=n, seed=seed, source=source)
    return {"short": str(out / "s1k-short.jsonl"), "long": str(out / "s1k-long.jsonl"),
            "manifest": str(out / "s1k.json")}


def training_mix(**options) -> str:
    """Ada-R1's training mix (:mod:`l2s.mix`, ``MixConfig`` options) in the cache, written once per
    options; returns the data directory that holds ``mix/train.jsonl``."""
    from l2s.mix import MixConfig, write_mix

    cfg = MixConfig(**options)
    out = paths.cache_dir() / "mix" / f"mix-{config_hash(cfg.to_dict())}"
    if not (out / "mix" / "train.jsonl").is_file():
        write_mix(out, cfg)
    return str(out)


def short_cot_model(long_model: str, preset: str = "short-cot", sft: dict | None = None, **options) -> str:
    """Ada-R1's short-CoT model: ``long_model`` fine-tuned (``l2s sft``, ``preset`` with ``sft``
    overrides) on short-CoT solutions built by :func:`l2s.short_cot.build_short_cot` (``ShortCoTConfig``
    options: a ``solutions`` file, or a ``source_model`` that solves ``dataset``), both in the cache."""
    from l2s.sft import preset_config, train_sft
    from l2s.short_cot import ShortCoTConfig, build_short_cot

    solutions = options.get("solutions")
    key = config_hash({"long": long_model, "preset": preset, "sft": sft or {}, **options,
                       "solutions_sha256": file_sha256(solutions) if solutions and Path(solutions).is_file() else None})
    root = paths.cache_dir() / "short-cot" / key
    data = build_short_cot(ShortCoTConfig(long_model=long_model, out=str(root / "data"), **options))
    return str(train_sft(long_model, Path(data) / "sft.jsonl", root / "model", preset_config(preset, **(sft or {}))))


def read_models(models_run: str | Path) -> dict:
    path = Path(models_run) / MODELS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run notebooks/00_models.ipynb with run_dir={models_run} first")
    record = io.read_json(path)
    missing = [k for k in ("size", "quick", "slow") if not record.get(k)]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    return record


def training_cards(models: dict) -> pd.DataFrame:
    """One row per toy model: parameters, parent, training styles, steps, lr, final loss, time."""
    from l2s.toy.build import CARD

    rows = []
    for role in ROLES:
        card_path = Path(models[role]) / CARD if models.get(role) else None
        if card_path is None or not card_path.is_file():
            rows.append({"role": role, "checkpoint": models.get(role)})
            continue
        card = io.read_json(card_path)
        stage, training = card["stage"], card["training"]
        rows.append({"role": role, "checkpoint": models[role], "parameters": card["parameters"],
                     "parent": card["parent"] or "-",
                     "styles": ", ".join(f"{k} {v:g}" for k, v in stage["styles"].items()),
                     "steps": stage["steps"], "lr": stage["lr"], "batch": stage["batch_size"],
                     "final loss": round(training["final_logged_loss"], 4), "seconds": card["wall_seconds"]})
    return pd.DataFrame(rows).set_index("role")


# -- 01 merge -----------------------------------------------------------------------------------------
def toy_calibration(style: str, n_per_level: int = 20, seed: int = 0) -> Path:
    """Toy train problems with their ``style`` solution (``short``, ``long``, ...) as an AIM /
    Sens-Merging calibration file (JSONL ``{problem, solution}``), written once into the cache."""
    from l2s.toy import task

    if style not in task.STYLES:
        raise ValueError(f"unknown toy solution style {style!r}; expected one of {task.STYLES}")
    path = paths.cache_dir() / "calibration" / f"toy-train-{style}-n{n_per_level}-seed{seed}.jsonl"
    if not path.is_file():
        rows = task.make_splits({"train": n_per_level}, seed=seed)["train"]
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(path, [{"problem": r["problem"], "solution": task.solution(task.problem_from_row(r), style)}
                              for r in rows])
    return path


def calibration_files(method: str, calibration: str | list[str] | None, models: dict | None = None) -> list[str]:
    """The calibration files of a merge, as Wu et al. 2025 (§4) calibrate: AIM on question + short
    answer; Sens-Merging with one file per participant in the executor's order [base (System 1): long
    answers, System 2: short answers]. ``"toy"``: toy train problems; ``"s1k"``: the s1K files of the
    models run (``00_models`` with ``calibration="s1k"``); a list: the files themselves."""
    from l2s.merge import parse_method

    spec = parse_method(method)
    if not spec.needs_calibration:
        if calibration not in (None, "toy", "s1k"):
            raise ValueError(f"method {method!r} uses no calibration texts; drop calibration")
        return []
    if calibration is None:
        raise ValueError(f"method {method!r} needs calibration texts: set calibration to 'toy', 's1k' or a "
                         "list of files")
    styles = ["long", "short"] if spec.core == "sens" else ["short"]
    if calibration == "toy":
        return [str(toy_calibration(s)) for s in styles]
    if calibration == "s1k":
        files = (models or {}).get("calibration")
        if not files:
            raise ValueError("calibration 's1k' needs a models run made with calibration='s1k' (00_models)")
        return [files[s] for s in styles]
    return [str(c) for c in ([calibration] if isinstance(calibration, str) else calibration)]


def merge_inputs(method: str, models: dict) -> dict:
    """base / models of a long-to-short merge from a models record: task-vector methods merge the slow
    model into the quick one (its base, Wu et al. 2025); ``average`` averages the two; ``linear``
    merges long (slow) and short-CoT models, α on the long one (Luo et al. 2025)."""
    from l2s.merge import parse_method

    spec = parse_method(method)
    if spec.core == "linear":
        if not models.get("short"):
            raise ValueError("linear merges the slow and short models; this models run has no short model")
        return {"base": None, "models": [models["slow"], models["short"]]}
    if not spec.needs_base:
        return {"base": None, "models": [models["quick"], models["slow"]]}
    return {"base": models["quick"], "models": [models["slow"]]}


def merge_from_models(run_dir: str | Path, models_run: str | Path, method: str, params: dict | None = None,
                      calibration: str | list[str] | None = None, seed: int = 0, dtype: str = "auto",
                      calibration_samples: int = 100, name: str | None = None) -> dict:
    """Merge the models of ``models_run`` with ``method``/``params`` into ``cache_dir()/merged/<name>``
    (reused when it already holds this very merge) and write ``run_dir/merge.json``:
    ``{size, method, figure_method, params, path, models_run, l2s_merge}`` — never weights."""
    from l2s.merge import MergeConfig, already_merged, merge
    from l2s.merge.cache import merged_path

    models = read_models(models_run)
    params = dict(params or {})
    fields = {"method": method, **merge_inputs(method, models), "params": params, "seed": seed, "dtype": dtype,
              "calibration": calibration_files(method, calibration, models),
              "calibration_samples": calibration_samples}
    out = merged_path(name or Path(run_dir).name, fields)
    cfg = MergeConfig(out=str(out), overwrite=True, **fields)
    if already_merged(cfg):
        log.info("merge %s: reusing %s", method, out)
    else:
        merge(cfg)
    record = {"size": models["size"], "method": cfg.spec.name, "figure_method": figure_method(method),
              "params": params, "path": str(out), "models_run": str(models_run),
              "l2s_merge": io.read_json(out / "l2s_merge.json")}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    io.atomic_write_json(Path(run_dir) / MERGE, record)
    declare_artifacts(run_dir, [out])
    return record


def figure_method(method: str) -> str:
    """The method key run tags carry (:func:`l2s.runs.method_key`), so that the figures put a measured
    run beside the reported one: ``"dare+ties"`` -> ``"dare_ties"``, ``"aim+ties"`` -> ``"aim"``."""
    from l2s.runs import method_key

    return method_key(method)


def merge_summary(record: dict) -> pd.DataFrame:
    """The merge at a glance: method, resolved hyper-parameters, inputs and their config hashes."""
    from l2s.runs import params_text

    m = record["l2s_merge"]
    rows = [("method", m["method"]), ("parameters", params_text(m["params"])),
            ("base", (m.get("base") or {}).get("input", "-"))]
    rows += [(f"model {i}", x["input"]) for i, x in enumerate(m["models"])]
    rows += [("dtype", m["dtype"]), ("calibration", ", ".join(m["config"]["calibration"]) or "-"),
             ("output", record["path"]), ("output shards", ", ".join(sorted(m["outputs"])))]
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


# -- 02 evaluate --------------------------------------------------------------------------------------
def resolve_model(model: str | None = None, models_run: str | Path | None = None, role: str | None = None,
                  merge_run: str | Path | None = None) -> str:
    """The checkpoint to evaluate: ``model`` itself, the ``role`` model of a models run, or the merged
    checkpoint of a merge run (exactly one of the three)."""
    given = [model is not None, role is not None, merge_run is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of model (a path or hub id), models_run + role, or merge_run")
    if model is not None:
        return str(model)
    if merge_run is not None:
        path = Path(merge_run) / MERGE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run notebooks/01_merge.ipynb with run_dir={merge_run} first")
        record = io.read_json(path)
        if not Path(record["path"]).is_dir():
            raise FileNotFoundError(f"merged checkpoint {record['path']} of {merge_run} is gone from the cache; "
                                    f"delete {merge_run} and rerun its merge step")
        return record["path"]
    if models_run is None:
        raise ValueError("role needs models_run")
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    models = read_models(models_run)
    if not models.get(role):
        raise ValueError(f"{models_run} has no {role} model")
    return models[role]


def default_tags(models_run: str | Path | None = None, role: str | None = None,
                 merge_run: str | Path | None = None, tags: dict | None = None) -> dict:
    """Run tags for the figures (size, role, method, params), from the models or merge run; ``tags``
    given explicitly win (e.g. ``sweep: true``). Checked as :class:`l2s.runs.RunTags`."""
    from l2s.runs import check_tags

    auto: dict[str, Any] = {}
    if merge_run is not None:
        record = io.read_json(Path(merge_run) / MERGE)
        auto = {"size": record["size"], "role": "merged", "method": record["figure_method"],
                "params": record["params"]}
    elif models_run is not None:
        auto = {"size": read_models(models_run)["size"], "role": role, "method": role}
    return check_tags({**auto, **(tags or {})})


def data_dir_of(models_run: str | Path | None = None, merge_run: str | Path | None = None) -> str | None:
    """The small toy split a models run wrote (``toy_data_per_level``), also through a merge run."""
    if merge_run is not None:
        models_run = io.read_json(Path(merge_run) / MERGE)["models_run"]
    return read_models(models_run).get("data_dir") if models_run is not None else None


def metrics_table(run_dir: str | Path) -> pd.DataFrame:
    """A run's metrics per dataset and level (``all`` = the whole dataset): accuracy and reflective
    ratio in %, tokens, keyword hits per response, truncated count; for a run that records interim
    answers, also the checked count and the correction, harmful-check and unchanged-check rates in %."""
    from l2s.runs import read_run

    blocks = list(read_run(run_dir).blocks())
    rows = [{"dataset": name, "level": "all" if level is None else str(level), "n": v["n"],
             "accuracy %": 100 * v["accuracy"], "mean tokens": v["mean_tokens"],
             "median tokens": v["median_tokens"], "reflective %": 100 * v["reflective_ratio"],
             "keyword hits": v["keyword_hits"], "truncated": v["truncated"]}
            for name, level, v in blocks]
    if any("checked" in v for _, _, v in blocks):  # runs that record interim answers (l2s.eval.metrics.correction)
        for row, (_, _, v) in zip(rows, blocks):
            row["checked"] = v.get("checked", 0)
            for column, key in (("correction %", "correction_rate"), ("harmful check %", "harmful_check_rate"),
                                ("unchanged check %", "unchanged_check_rate")):
                row[column] = float("nan") if v.get(key) is None else 100 * v[key]
    return pd.DataFrame(rows).set_index(["dataset", "level"]).round(2)


def runs_by_level(runs: dict[str, str | Path]) -> pd.DataFrame:
    """Several runs side by side (name -> run dir): accuracy, mean tokens and reflective (long-CoT)
    ratio per dataset and level, one column per run under each measure."""
    keep = ["accuracy %", "mean tokens", "reflective %"]
    table = pd.concat({name: metrics_table(run)[keep] for name, run in runs.items()}, axis=1)
    return table.swaplevel(axis=1).sort_index(axis=1, level=0, sort_remaining=False)


# -- 05 explore ---------------------------------------------------------------------------------------
def run_label(run_dir: str | Path) -> str:
    """``"toy-s merged ties (k=0.8)"`` from a run's tags (:meth:`l2s.runs.RunTags.text`; the directory
    name when untagged)."""
    from l2s.runs import read_run

    run = read_run(run_dir)
    return run.tags.text() or run.name


def _generations(run_dir: str | Path) -> pd.DataFrame:
    from l2s.runs import read_run

    return pd.DataFrame(read_run(run_dir).generations)


def side_by_side(run_a: str | Path, run_b: str | Path, n: int = 5, dataset: str | None = None,
                 level: int | None = None) -> pd.DataFrame:
    """The same problems answered by two runs: response, tokens, keyword hits and correctness of
    each; ``n`` problems per level (or of ``level``), the first by id."""
    a, b = _generations(run_a), _generations(run_b)
    key = ["dataset", "id", "sample"]
    both = a.merge(b, on=key, suffixes=(" A", " B"))
    if both.empty:
        raise ValueError(f"{run_a} and {run_b} share no (dataset, id, sample)")
    if dataset is not None:
        both = both[both["dataset"] == dataset]
    if level is not None:
        both = both[both["level A"] == level]
    both = both.sort_values(["dataset", "level A", "id", "sample"], na_position="last")
    both = both.groupby(["dataset", "level A"], dropna=False, sort=False).head(n)
    cols = {"dataset": "dataset", "level A": "level", "id": "id", "answer A": "gold"}
    for side in ("A", "B"):
        cols.update({f"response {side}": f"response {side}", f"n_tokens {side}": f"tokens {side}",
                     f"keyword_hits {side}": f"hits {side}", f"correct {side}": f"correct {side}"})
    return both[list(cols)].rename(columns=cols).reset_index(drop=True)


def compare_by_level(run_a: str | Path, run_b: str | Path) -> pd.DataFrame:
    """Per dataset and level: accuracy, mean tokens and reflective ratio of both runs, and B's length
    change vs A (:func:`l2s.eval.metrics.length_change`, Wu et al. 2025's length reduction)."""
    from l2s.eval.metrics import length_change

    ta, tb = metrics_table(run_a), metrics_table(run_b)
    keep = ["n", "accuracy %", "mean tokens", "reflective %"]
    out = ta[keep].add_suffix(" A").join(tb[keep].add_suffix(" B"), how="inner")
    out["length change B vs A %"] = (100 * length_change(out["mean tokens B"], out["mean tokens A"])).round(1)
    return out
