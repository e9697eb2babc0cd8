"""The run contract: evaluation run directories, the tags that say what a run stands for, and the
one method vocabulary that configs, run tags, figures and notebooks share.

An evaluation run directory (written by :func:`l2s.eval.run.evaluate`, or by ``l2s score``) holds

- ``config.json``: the :class:`~l2s.eval.run.EvalConfig`, with ``tags`` (:class:`RunTags`);
- ``generations.jsonl``: one scored response per row;
- ``metrics.json``: ``datasets.NAME.{n, accuracy, mean_tokens, median_tokens, reflective_ratio,
  keyword_hits, truncated, by_level.LEVEL.{...}}`` and ``overall`` (fractions in [0, 1], see
  :mod:`l2s.eval.metrics`), plus, in runs that graded interim answers, ``checked``,
  ``correction_rate``, ``harmful_check_rate`` and ``unchanged_check_rate``;
- ``provenance.json``: written last, so a run that has it is finished.

:func:`read_run` reads one (checking the metrics' shape), :func:`find_runs` every finished run under
a directory. Method keys are the merge registry's (:mod:`l2s.merge.methods`: keys, spellings,
labels); the single models (quick, slow, short), DPO, Ada-R1 and other papers' methods are spelled
here (:func:`canonical_method`, :func:`method_label`, :func:`series_key`, :func:`series_label`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s import io
from l2s.eval.metrics import METRIC_KEYS
from l2s.eval.run import CONFIG, GENERATIONS, METRICS, PROVENANCE

log = logging.getLogger(__name__)

__all__ = ["CONFIG", "GENERATIONS", "HOW_TO_RUN", "METRICS", "METRIC_KEYS", "PROVENANCE", "REFERENCE_ROLE",
           "ROLE_ORDER", "Run", "RunTags", "canonical_method", "check_tags", "find_runs", "is_finished", "method_key",
           "method_label", "method_labels", "params_text", "read_metrics", "read_run", "series_key", "series_label",
           "size_order"]

# -- the method vocabulary ----------------------------------------------------------------------------
# Merge methods are the registry's (:mod:`l2s.merge.methods`, read on first use: it imports torch); the
# rest of the papers' names (single models, DPO, Ada-R1, other papers' baselines) are spelled here.
# The roles of the study's runs, in the figures' order; "baseline" is another paper's method.
ROLE_ORDER = ("quick", "slow", "short", "merged", "dpo", "adar1", "baseline")
SINGLE_MODEL_ROLES = ("quick", "slow", "short")
# Runs tagged with this role re-evaluate a model that has its own run (Ada-R1's ``eval-long`` is the
# slow model again, kept for the Ada-R1 run's summary): read by their owners, not plotted.
REFERENCE_ROLE = "reference"
ROLE_LABELS = {"quick": "Quick (System-1)", "slow": "Slow (System-2)", "short": "Short-CoT"}
OTHER_ALIASES = {"ada-r1": "ada_r1", "adar1": "ada_r1", "long_cot": "slow", "short_cot": "short"}
OTHER_LABELS = {
    "dpo": "DPO", "dpo_shortest_vs_longest": "DPO (shortest vs longest)",
    "ada_r1": "Ada-R1", "o1_pruner": "O1-Pruner", "cot_valve": "CoT-Valve",
    "merge_sft_group_chosen": "Merge + SFT (group chosen)", "merge_group_level_dpo": "Merge + group DPO",
    "merge_bi_level_dpo": "Merge + bi-level DPO",
}
_SIZE_SUFFIXES = ("xxs", "xs", "s", "m", "l", "xl", "xxl")


@functools.cache
def method_labels() -> dict[str, str]:
    """Canonical key -> the name a figure prints: the single models, the merge registry's methods in
    the papers' table order, then DPO, Ada-R1 and the other papers' methods."""
    from l2s.merge.methods import labels

    return {**ROLE_LABELS, **labels(), **OTHER_LABELS}


def method_key(method: str) -> str:
    """The registry key of a merge method string or spelling, the one run tags carry:
    ``"dare+ties"`` -> ``"dare_ties"``, ``"aim+ties"`` -> ``"aim"`` (ValueError when it is no merge method)."""
    from l2s.merge.methods import figure_key

    return figure_key(method)


@functools.cache
def _merge_key(key: str) -> str | None:
    from l2s.merge.methods import aliases

    if key in aliases() or "+" in key:
        try:
            return method_key(key)
        except ValueError:
            return None
    return None


def canonical_method(name: str | None) -> str | None:
    """Lower-case ``name`` and map the papers' spellings to the canonical key ("TIES_merging" -> "ties",
    "dare+ties" -> "dare_ties", "Ada-R1" -> "ada_r1"); unknown names stay as they are, lower-cased."""
    if name is None:
        return None
    key = str(name).strip().lower().replace(" ", "_")
    return OTHER_ALIASES.get(key) or _merge_key(key) or key


def method_label(key: str | None) -> str:
    """Printable name of a canonical method key (the key itself when unknown)."""
    return method_labels().get(key, str(key))


def series_key(role: str, method: str | None) -> str:
    """What a bar or line stands for: the role for single models, "ada_r1" for every Ada-R1 run (its
    method tag names the variant, :data:`l2s.prefs.config.VARIANTS`), else the canonical method."""
    if role in SINGLE_MODEL_ROLES:
        return role
    if role == "adar1":
        return "ada_r1"
    return canonical_method(method) or role


def series_label(role: str, method: str | None) -> str:
    """Printable series name: "TIES", "Slow (System-2)", "Ada-R1 (bilevel)"."""
    key = series_key(role, method)
    variant = canonical_method(method)
    if role == "adar1" and variant and variant != key:
        return f"{method_label(key)} ({method})"
    return method_label(key)


def params_text(params: dict | None) -> str:
    """{"alpha": 0.7, "k": 0.8} -> "alpha=0.7, k=0.8" (sorted keys)."""
    if not params:
        return ""
    return ", ".join(f"{k}={params[k]}" for k in sorted(params))


def size_order(size: str) -> tuple:
    """Model sizes from small to large: "1.5B" < "7B"; toy "…-xs" < "…-s" < "…-m"; else by name."""
    s = str(size)
    if s.endswith("B"):
        try:
            return (1, float(s[:-1]), s)
        except ValueError:
            pass
    suffix = s.rsplit("-", 1)[-1].lower()
    if suffix in _SIZE_SUFFIXES:
        return (0, float(_SIZE_SUFFIXES.index(suffix)), s)
    return (0, float(len(_SIZE_SUFFIXES)), s)


# -- tags ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunTags:
    """What a run stands for in the study (config.json ``tags``); they never change its outputs.

    ``size``: the model size ("toy-s", "7B"); ``role``: one of :data:`ROLE_ORDER`, or
    :data:`REFERENCE_ROLE`; ``method``: the merge registry's key for merged runs, the variant for
    Ada-R1 runs; ``params``: the method's hyper-parameters; ``sweep``: the run only belongs on the
    Pareto plot. Every other tag (e.g. a sampling run's ``stage`` and ``style``) is kept in ``extra``.
    None means not set. The figures plot a run that has a size and a role other than "reference".
    """

    size: str | None = None
    role: str | None = None
    method: str | None = None
    params: dict[str, Any] | None = None
    sweep: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, tags: dict | None, where: str = "tags") -> RunTags:
        """Check and type ``tags``; ``where`` names them in errors (e.g. "runs/x/config.json tags")."""
        if tags is None:
            return cls()
        if not isinstance(tags, dict):
            raise ValueError(f"{where}: expected a mapping of tags, got {type(tags).__name__} {tags!r}")
        known = {f.name for f in dataclasses.fields(cls) if f.name != "extra"}
        for key, kind, name in (("size", str, "a string"), ("role", str, "a string"), ("method", str, "a string"),
                                ("params", dict, "a mapping"), ("sweep", bool, "true or false")):
            value = tags.get(key)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{where}.{key}: expected {name} (or null), got {type(value).__name__} {value!r}")
        bad = [k for k in tags.get("params") or {} if not isinstance(k, str)]
        if bad:
            raise ValueError(f"{where}.params: parameter names must be strings, got {bad!r}")
        return cls(**{k: tags.get(k) for k in known}, extra={k: v for k, v in tags.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        """The tags as config.json stores them: the fields that are set, then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        return {**out, **self.extra}

    @property
    def plotted(self) -> bool:
        """Whether the figures draw the run: it has a size and a role, and is no re-evaluation."""
        return bool(self.size and self.role) and self.role != REFERENCE_ROLE

    @property
    def series(self) -> str:
        return series_key(str(self.role), self.method)

    @property
    def label(self) -> str:
        return series_label(str(self.role), self.method)

    def text(self) -> str:
        """``"toy-s merged ties (k=0.8)"``: size, role, method (when not the role) and parameters."""
        params = params_text(self.params)
        method = self.method if self.method not in (None, self.role) else ""
        return " ".join(x for x in (self.size, self.role, method, f"({params})" if params else "") if x)


def check_tags(tags: dict | None) -> dict[str, Any]:
    """The writer's side: ``tags`` checked and normalized as config.json stores them (unset ones dropped)."""
    return RunTags.from_dict(tags).to_dict()


# -- run directories ----------------------------------------------------------------------------------
# What makes runs, for errors about a runs directory without any.
HOW_TO_RUN = ("run the study first (`make study`, or `l2s study --config configs/toy.yaml`), or evaluate a model "
              "into it (`l2s eval --model M --datasets toy --out RUNS_DIR/NAME`)")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_block(block: Any, where: str, required: tuple[str, ...]) -> None:
    if not isinstance(block, dict):
        raise ValueError(f"{where}: expected a mapping of metrics, got {type(block).__name__}")
    missing = [k for k in required if k not in block]
    if missing:
        raise ValueError(f"{where}: missing metric field(s) {', '.join(missing)}")
    n = block.get("n")
    if "n" in block and not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
        raise ValueError(f"{where}.n: expected a count (an integer >= 0), got {n!r}")
    if n != 0:  # an empty group has no accuracy or length (null)
        bad = [k for k in required if k != "n" and not _is_number(block[k])]
        if bad:
            raise ValueError(f"{where}: field(s) {', '.join(bad)} must be numbers, got "
                             f"{', '.join(repr(block[k]) for k in bad)}")


def read_metrics(path: str | Path, required: tuple[str, ...] = METRIC_KEYS) -> dict:
    """A run's ``metrics.json`` (``path``: the run directory or the file), checked: a JSON object whose
    ``datasets`` maps each dataset to a block with the ``required`` fields (numbers, or null where
    ``n`` is 0) and an optional ``by_level`` mapping of such blocks. Errors name the file and field."""
    path = Path(path)
    file = path / METRICS if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: {file.parent} is not a finished evaluation run "
                                "(rerun its evaluation to finish it)")
    metrics = io.read_json(file)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("datasets"), dict):
        got = type(metrics).__name__ if not isinstance(metrics, dict) else "an object without it"
        raise ValueError(f"{file}: expected a JSON object with a 'datasets' mapping, got {got}")
    for name, block in metrics["datasets"].items():
        where = f"{file} datasets.{name}"
        _check_block(block, where, required)
        levels = block.get("by_level", {})
        if not isinstance(levels, dict):
            raise ValueError(f"{where}.by_level: expected a mapping of level -> metrics, got {type(levels).__name__}")
        for level, lblock in levels.items():
            if not str(level).lstrip("-").isdigit():
                raise ValueError(f"{where}.by_level: level {level!r} is not an integer")
            _check_block(lblock, f"{where}.by_level.{level}", required)
    return metrics


@dataclass(frozen=True, eq=False)
class Run:
    """One evaluation run directory, read: ``generations`` (the rows) is read on first use."""

    path: Path
    config: dict
    tags: RunTags
    metrics: dict
    provenance: dict | None = None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def datasets(self) -> dict[str, dict]:
        return self.metrics["datasets"]

    @functools.cached_property
    def generations(self) -> list[dict]:
        file = self.path / GENERATIONS
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found: {self.path} is not a finished evaluation run")
        return io.read_jsonl(file)

    def blocks(self) -> Iterator[tuple[str, int | None, dict]]:
        """(dataset, level, metrics) of every group with responses: each dataset (level None), then
        its levels; datasets by name, levels in order."""
        for name in sorted(self.datasets):
            values = self.datasets[name]
            if values["n"]:
                yield name, None, values
            for level in sorted(values.get("by_level") or {}, key=int):
                if values["by_level"][level]["n"]:
                    yield name, int(level), values["by_level"][level]


def read_run(path: str | Path) -> Run:
    """Read the run directory ``path``; errors name the file that is missing or malformed."""
    path = Path(path)
    config_path = path / CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {path} is not an evaluation run directory")
    config = io.read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object (the run's config), got {type(config).__name__}")
    tags = RunTags.from_dict(config.get("tags"), f"{config_path} tags")
    metrics = read_metrics(path)
    provenance = io.read_json(path / PROVENANCE) if (path / PROVENANCE).is_file() else None
    return Run(path=path, config=config, tags=tags, metrics=metrics, provenance=provenance)


def is_finished(path: str | Path) -> bool:
    """Whether ``path`` holds a finished evaluation run: config, metrics and provenance (written last)."""
    path = Path(path)
    return all((path / name).is_file() for name in (CONFIG, METRICS, PROVENANCE))


def find_runs(root: str | Path) -> list[Run]:
    """Every finished evaluation run below ``root`` at any depth (e.g. Ada-R1's ``<run>/eval-*``), sorted
    by path; hidden directories (temporary outputs) are skipped, a malformed run is an error."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"runs directory {root} does not exist: {HOW_TO_RUN}")
    found = {m.parent for m in root.rglob(METRICS) if m.parent != root
             and not any(p.startswith(".") for p in m.parent.relative_to(root).parts)}
    runs = []
    for path in sorted(found):
        if is_finished(path):
            runs.append(read_run(path))
        else:
            read_metrics(path)  # a malformed metrics file is named even where the run is unfinished
            log.info("runs: skipping %s (no %s/%s: not a finished evaluation run)", path, CONFIG, PROVENANCE)
    return runs
