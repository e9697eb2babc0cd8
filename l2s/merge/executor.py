"""The streaming merge: block by block from the inputs' shards to the output's shards.

The executor knows no method by name: each registered method (:mod:`l2s.merge.methods`) declares
what it needs (:class:`~l2s.merge.methods.Needs`) and provides it through its hooks, which get the
:class:`Merger` and use its small API (:meth:`Merger.deltas`, :meth:`Merger.read`,
:meth:`Merger.participant_names`, :meth:`Merger.add_stats`, ...). Elementwise methods are merged in
blocks of rows of about :data:`BLOCK_ELEMENTS` entries: each block of the base's and each model's
tensor is read, rewritten by the ``pre`` modifiers (DARE), merged by the core method with the
per-tensor arguments its ``tensor_args`` hook computed from the whole tensor (TIES: the TRIM
thresholds), rewritten by the ``post`` modifiers (AIM), cast and appended to the output shard being
written, then dropped — peak memory is a few blocks, whatever the model's size. Methods that take
SVDs (LoRE, Twin) need whole matrices and hold a few copies of the tensor being merged. The output
directory is built beside the target and renamed into place only when complete
(:func:`l2s.io.atomic_output_dir`).

The fingerprints of the input shards (sampled or full SHA-256, ``MergeConfig.input_hash``) and the
SHA-256 of each output shard once written (for ``l2s_merge.json``) are computed by a background
thread while the merge runs (``hashlib`` releases the GIL).

Real long-to-short pairs differ in two ways the output must absorb. Qwen2.5-Math-1.5B ties its
embeddings (no ``lm_head.weight``) while DeepSeek-R1-Distill-Qwen-1.5B does not: a tied input's
``lm_head.weight`` is read as its ``model.embed_tokens.weight`` (:func:`tie_embeddings`). And
Qwen2.5-Math has 4096 positions where the R1 distills have 131072: the output's config comes from
the tokenizer source but takes the largest context of the inputs (:func:`context_settings`).
"""

from __future__ import annotations

import copy
import ctypes
import logging
import math
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from l2s import __version__
from l2s.io import atomic_output_dir, atomic_write_json, check_replaceable, read_json
from l2s.merge.checkpoint import TIED_EMBEDDINGS, Checkpoint, ShardWriter, resolve, shard_fingerprint, shard_sha256
from l2s.merge.config import MergeConfig, parse_size
from l2s.merge.methods import METHODS
from l2s.merge.methods.dare import dare_generator  # noqa: F401  (kept importable from here)
from l2s.provenance import file_sha256, provenance

log = logging.getLogger(__name__)

BLOCK_ELEMENTS = 1 << 20  # entries per block of rows: 4 MB in fp32, cache-sized, cheap to allocate
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "tokenizer.model", "chat_template.jinja", "chat_template.json")
COPIED_FILES = ("generation_config.json",) + TOKENIZER_FILES


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype  # output dtype
    common_rows: int | None = None  # vocabulary tensors: rows shared by all inputs


def tie_embeddings(inputs: list[tuple[str, Checkpoint]]) -> dict:
    """Line up tied and untied inputs; returns the record for ``l2s_merge.json``.

    An input's output embedding is its stored ``lm_head.weight`` if it has one, else — when its
    config ties the embeddings — its ``model.embed_tokens.weight``. This is mergekit's lookup (its
    ``LoadTensor`` tries a tensor's name, then its ``tied_names``; lm_head.weight's tied name is
    model.embed_tokens.weight), and transformers 5 too loads a stored lm_head.weight that differs
    from the embeddings of a tied config. When some input stores an lm_head.weight, the tied inputs
    without one serve that name from their embeddings (:meth:`Checkpoint.alias`, so the same
    streamed, row-block reads), and the output has its own ``lm_head.weight`` and
    ``tie_word_embeddings: false`` (an untied input without lm_head.weight then fails in
    :func:`plan_tensors`). When none stores one, the output stays tied: no lm_head tensor,
    ``tie_word_embeddings: true``.
    """
    head, embed = TIED_EMBEDDINGS
    tied = {name: ck.ties_embeddings() for name, ck in inputs}
    output_tied = all(head not in ck.weight_map for _, ck in inputs)
    aliased = []
    if not output_tied:
        for name, ck in inputs:
            if ck.ties_embeddings() and head not in ck.weight_map and embed in ck.weight_map:
                ck.alias(head, embed)
                aliased.append(name)
                log.info("%s ties its embeddings: its %s is read as its %s", ck.label, head, embed)
    return {"inputs": tied, "output": output_tied, "lm_head_from_embed_tokens": aliased}


def rope_settings(config: dict) -> dict:
    """A config's rotary-embedding settings in one form: transformers 5's ``rope_parameters``, or
    the older ``rope_theta`` + ``rope_scaling`` (``type`` renamed ``rope_type``, as transformers 5 does)."""
    if isinstance(config.get("rope_parameters"), dict):
        return dict(config["rope_parameters"])
    out = {"rope_theta": config.get("rope_theta"), **(config.get("rope_scaling") or {})}
    if "type" in out:
        out.setdefault("rope_type", out.pop("type"))
    out.setdefault("rope_type", "default")
    return out


def rope_types(settings: dict) -> set:
    """The RoPE types of :func:`rope_settings`' result: one, or one per layer type."""
    if "rope_type" in settings:
        return {settings["rope_type"]}
    return {v.get("rope_type", v.get("type")) for v in settings.values() if isinstance(v, dict)}


SCALED_ROPE = ("llama3", "yarn", "longrope")  # their pretraining length defaults to max_position_embeddings


def pin_rope(config: dict, positions: int) -> bool:
    """Keep a scaled RoPE as it is when ``max_position_embeddings`` is raised from ``positions``.

    transformers 5 gives llama3/yarn/longrope rotary settings without an
    ``original_max_position_embeddings`` the config's ``max_position_embeddings`` (and derives YaRN's
    and longrope's factor from it when they have none), so raising the context would change the
    source's frequencies. This writes ``positions`` there instead, in place, in ``rope_parameters``
    (or the older ``rope_scaling``), flat or per layer type; returns whether anything was written.
    """
    if "original_max_position_embeddings" in config:  # a top-level value (Phi-3) takes precedence
        return False
    params = config.get("rope_parameters")
    params = params if isinstance(params, dict) else config.get("rope_scaling")
    if not isinstance(params, dict):
        return False
    groups = [params] if "rope_type" in params or "type" in params else [
        v for v in params.values() if isinstance(v, dict)]
    pinned = False
    for group in groups:
        if group.get("rope_type", group.get("type")) in SCALED_ROPE and "original_max_position_embeddings" not in group:
            group["original_max_position_embeddings"] = positions
            pinned = True
    return pinned


def window_settings(config: dict) -> dict:
    """A config's effective sliding-window attention: the window and the layers below which it
    applies, both None when ``use_sliding_window`` is off (a ``sliding_window`` without that flag,
    as Mistral writes it, is on)."""
    on = bool(config.get("use_sliding_window", config.get("sliding_window") is not None))
    return {"sliding_window": config.get("sliding_window") if on else None,
            "max_window_layers": config.get("max_window_layers") if on else None}


def context_settings(inputs: list[tuple[str, Checkpoint]], source: str) -> dict:
    """The output's context length, and what the inputs say about positions; the record for
    ``l2s_merge.json``.

    The output's config.json is the tokenizer source's, but its ``max_position_embeddings`` is the
    largest of the inputs': a merge whose source is Qwen2.5-Math (4096 positions) must not cut the
    long answers of the R1 distill it was merged with (131072). The rotary and sliding-window
    settings stay the source's, as they are (a scaled RoPE keeps the source's pretraining length,
    :func:`pin_rope`); where the inputs disagree on them, the record lists each input's (and
    :func:`_merge` warns).
    """
    configs = {name: ck.config for name, ck in inputs}
    positions = {name: c.get("max_position_embeddings") for name, c in configs.items()}
    known = [v for v in positions.values() if isinstance(v, int)]
    record = {"max_position_embeddings": {"inputs": positions, "source": positions[source],
                                          "output": max(known) if known else positions[source]},
              "model_max_length": None}  # tokenizer_config.json's, filled in when the side files are written
    for key, settings in (("rope", rope_settings), ("sliding_window", window_settings)):
        each = {name: settings(c) for name, c in configs.items()}
        record[key] = {"source": each[source], "inputs_disagree": len({repr(v) for v in each.values()}) > 1}
        if record[key]["inputs_disagree"]:
            record[key]["inputs"] = each
    return record


def plan_tensors(inputs: list[Checkpoint], source: Checkpoint, out_dtype: torch.dtype | None) -> list[TensorPlan]:
    """Check that all inputs hold the same tensors with the same shapes (vocabulary rows excepted)."""
    ref = inputs[0]
    for ck in inputs[1:]:
        for name in sorted(set(ref.weight_map) - set(ck.weight_map)):
            raise ValueError(f"tensor {name!r} is in {ref.file_of(name)} but missing from {ck.label} "
                             f"({ck.path}); the checkpoints do not have the same architecture")
        for name in sorted(set(ck.weight_map) - set(ref.weight_map)):
            raise ValueError(f"tensor {name!r} is in {ck.file_of(name)} but missing from {ref.label} ({ref.path})")
    plans = []
    for name in ref.names:
        infos = [ck.info(name) for ck in inputs]
        src = source.info(name)
        floating = src.dtype.is_floating_point
        if not floating and any(i.dtype != src.dtype for i in infos):
            raise ValueError(f"tensor {name!r}: non-float dtypes differ between {ref.file_of(name)} and others")
        dtype = (out_dtype or src.dtype) if floating else src.dtype
        shapes = [i.shape for i in infos]
        if all(s == shapes[0] for s in shapes):
            plans.append(TensorPlan(name, shapes[0], dtype))
            continue
        vocab = [ck.config.get("vocab_size") for ck in inputs]
        if (all(len(s) == len(shapes[0]) and s[1:] == shapes[0][1:] for s in shapes)
                and all(s[0] == v for s, v in zip(shapes, vocab, strict=True))):
            plans.append(TensorPlan(name, src.shape, dtype, common_rows=min(s[0] for s in shapes)))
            continue
        i = next(i for i, s in enumerate(shapes) if s != shapes[0])
        raise ValueError(f"tensor {name!r} has shape {list(shapes[0])} in {ref.file_of(name)} but "
                         f"{list(shapes[i])} in {inputs[i].file_of(name)}")
    return plans


def row_blocks(shape: tuple[int, ...], start: int = 0, stop: int | None = None) -> list[tuple[int, int] | None]:
    """Blocks of rows ``[a, b)`` covering rows [start, stop) of a tensor; [None] (the whole) for a scalar.

    A vector is one block: its only dimension is the channel dimension AIM scales along.
    """
    if not shape:
        return [None]
    stop = shape[0] if stop is None else stop
    if len(shape) == 1:
        return [(start, stop)]
    per = max(1, BLOCK_ELEMENTS // max(1, math.prod(shape[1:])))
    return [(r, min(r + per, stop)) for r in range(start, stop, per)]


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in ``t``: one min/max reduction (both propagate NaN), no tensor-sized mask."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


class Merger:
    """Holds the opened inputs and what each method's ``prepare`` hook computed; :meth:`blocks` merges
    one tensor. The methods' hooks use ``cfg``, ``params``, ``paths``, ``base``, ``models``, ``plans``,
    ``records`` (the inputs' fingerprints), ``tied``, ``compute`` and the methods below."""

    def __init__(self, cfg: MergeConfig):
        self.cfg = cfg
        self.spec = cfg.spec
        self.params = cfg.resolved_params()
        self.compute = getattr(torch, cfg.compute_dtype_name())
        self.paths = {inp: resolve(inp) for inp in cfg.inputs}
        self.base = Checkpoint(self.paths[cfg.base], "the base") if cfg.base else None
        self.models = [Checkpoint(self.paths[m], f"model {i} ({m})") for i, m in enumerate(cfg.models)]
        self.inputs = ([self.base] if self.base else []) + self.models
        self.source = self.inputs[cfg.inputs.index(cfg.tokenizer_input)]
        named = list(zip(cfg.inputs, self.inputs, strict=True))
        self.tied = tie_embeddings(named)
        self.context = context_settings(named, cfg.tokenizer_input)
        out = None if cfg.out_dtype_name() == "auto" else getattr(torch, cfg.out_dtype_name())
        self.plans = {p.name: p for p in plan_tensors(self.inputs, self.source, out)}
        self.elementwise = all(METHODS[c].elementwise for c in self.spec.components)
        self.core = METHODS[self.spec.core]
        self.pre = [METHODS[c] for c in self.spec.pre]
        self.post = [METHODS[c] for c in self.spec.post]
        self.base_participates = self.spec.base_participates(self.params)
        self.records: dict[str, dict] | None = None
        self.state: dict[str, object] = {}
        self.stats_files: dict[str, str] = {}
        self.prepared = False
        self._checked: set[tuple] = set()

    def close(self) -> None:
        for ck in self.inputs:
            ck.close()

    # -- auxiliary statistics -------------------------------------------------------------------
    def input_record(self, ck: Checkpoint, given: str) -> dict:
        cfg = ck.path / "config.json"
        prints = {p.name: shard_fingerprint(p, self.cfg.input_hash) for p in ck.shard_paths()}
        return {"input": given, "path": str(ck.path),
                "config_sha256": file_sha256(cfg) if cfg.is_file() else None,
                "shards": {name: digest for name, (digest, _) in prints.items()},
                "shard_hash": sorted({kind for _, kind in prints.values()})}

    def prepare(self, records: dict[str, dict] | None = None) -> None:
        """Run each component's ``prepare`` hook (global passes, calibration statistics); ``records``
        are the inputs' fingerprints (computed here when a method needs them and none are given)."""
        if records is None and self.spec.needs_calibration:
            records = {inp: self.input_record(ck, inp) for inp, ck in zip(self.cfg.inputs, self.inputs, strict=True)}
        self.records = records
        for comp in self.spec.components:
            hook = METHODS[comp].prepare
            self.state[comp] = hook(self) if hook else None
        self.prepared = True

    def method_records(self) -> dict:
        """The entries the methods add to ``l2s_merge.json``: every registered method's keys, None
        unless one of this merge's components fills them."""
        out = {key: None for m in METHODS.values() for key in m.record_keys}
        for comp in self.spec.components:
            if METHODS[comp].record:
                out.update(METHODS[comp].record(self.state[comp]))
        return out

    # -- the methods' API -----------------------------------------------------------------------
    def participant_names(self) -> list[str]:
        """The merged models as given in the config: the base first when it is a participant."""
        return ([self.cfg.base] if self.base_participates else []) + list(self.cfg.models)

    def participants(self, base: torch.Tensor, models: list[torch.Tensor]) -> list[torch.Tensor]:
        return [base] + models if self.base_participates else models

    def add_stats(self, key: str, path) -> None:
        """Record a statistics file a method used (path and SHA-256 go into ``l2s_merge.json``)."""
        self.stats_files[key] = str(path)

    def float_tensor_names(self) -> list[str]:
        return [p.name for p in self.plans.values() if p.dtype.is_floating_point]

    def merged_numel(self, name: str) -> int:
        """Entries of ``name`` that are merged (a vocabulary tensor's common rows only)."""
        plan = self.plans[name]
        rows = plan.common_rows if plan.common_rows is not None else (plan.shape[0] if plan.shape else 1)
        return math.prod(plan.shape[1:]) * rows

    def deltas(self, name: str, model: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(model index, block of its task vector θ_i − θ_0) over the merged rows of ``name``, θ_i
        rewritten by the pre modifiers exactly as the core method gets it; one model or all."""
        passes = self.tensor_passes(name)
        for rows in row_blocks(self.plans[name].shape, 0, self.plans[name].common_rows):
            base, models = self.load(name, rows, passes, only=model)
            for i, m in zip([model] if model is not None else range(len(self.models)), models, strict=True):
                yield i, m - base

    # -- one tensor ------------------------------------------------------------------------------
    def read(self, ck: Checkpoint, name: str, rows: tuple[int, int] | None, reuse: bool = True) -> torch.Tensor:
        """Rows of an input tensor in the compute dtype, checked for NaN/inf. With ``reuse`` (blocks),
        the result may be a view of ``ck``'s read buffer, valid until its next block is read: the
        methods never modify their inputs and return new tensors."""
        t = ck.read(name, rows, reuse=reuse)
        key = (id(ck), name, rows)  # a block read again (TIES: threshold pass, then merge) is checked once
        if key not in self._checked and not all_finite(t):
            raise ValueError(f"input tensor {name!r} in {ck.file_of(name)} has NaN or inf values")
        self._checked.add(key)
        return t.to(self.compute)

    def tensor_passes(self, name: str) -> dict[str, object]:
        """Fresh per-pass state of each pre modifier for one pass over the blocks of ``name``."""
        return {m.name: m.tensor_pass(self, name) if m.tensor_pass else None for m in self.pre}

    def load(self, name: str, rows: tuple[int, int] | None, passes: dict, reuse: bool = True,
             only: int | None = None):
        """Base and models on ``rows`` of ``name`` (or model ``only``); each pre modifier rewrites the
        models as θ_0 + rewrite(θ_i − θ_0)."""
        base = self.read(self.base, name, rows, reuse) if self.base else None
        indices = [only] if only is not None else range(len(self.models))
        models = [self.read(self.models[i], name, rows, reuse) for i in indices]
        for pre in self.pre:
            models = [base + pre.rewrite(self, self.state[pre.name], passes[pre.name], i, m - base)
                      for i, m in zip(indices, models, strict=True)]
        return base, models

    def core_params(self, name: str) -> dict:
        """The keyword arguments of the core method for tensor ``name``."""
        own = {k: self.params[k] for k in self.core.fn_params}
        if self.core.tensor_args:
            own.update(self.core.tensor_args(self, self.state[self.core.name], name))
        return own

    def blocks(self, name: str) -> Iterator[torch.Tensor]:
        """The merged tensor ``name`` in the output dtype, as consecutive blocks of rows."""
        plan = self.plans[name]
        if not self.prepared:
            self.prepare()
        if not plan.dtype.is_floating_point:
            yield self.source.read(name)
            return
        if not self.elementwise:
            yield self.whole(name)
            return
        own, passes = self.core_params(name), self.tensor_passes(name)
        for rows in row_blocks(plan.shape, 0, plan.common_rows):
            base, models = self.load(name, rows, passes)
            yield self.finish(name, self.apply(name, base, models, own))
        if plan.common_rows is not None:
            for rows in row_blocks(plan.shape, plan.common_rows):
                yield self.finish(name, self.source.read(name, rows).to(self.compute))

    def apply(self, name: str, base, models, own) -> torch.Tensor:
        out = self.core.fn(base, self.participants(base, models), **own)
        for post in self.post:
            out = post.relax(self, self.state[post.name], name, base, out)
        return out

    def whole(self, name: str) -> torch.Tensor:
        """A tensor of a method that needs it whole (SVDs)."""
        plan = self.plans[name]
        rows = None if plan.common_rows is None else (0, plan.common_rows)
        base, models = self.load(name, rows, self.tensor_passes(name), reuse=False)
        out = self.apply(name, base, models, self.core_params(name))
        if plan.common_rows is not None:
            out = torch.cat([out, self.source.read(name, (plan.common_rows, plan.shape[0])).to(self.compute)])
        return self.finish(name, out)

    def finish(self, name: str, out: torch.Tensor) -> torch.Tensor:
        out = out.to(self.plans[name].dtype)
        if not all_finite(out):
            files = ", ".join(str(ck.file_of(name)) for ck in self.inputs)
            raise ValueError(f"merged tensor {name!r} has NaN or inf values (method {self.spec.name}, "
                             f"params {self.params}); inputs: {files}")
        return out

    def tensor(self, name: str) -> torch.Tensor:
        """The merged tensor ``name`` whole."""
        parts = list(self.blocks(name))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    # -- outputs ---------------------------------------------------------------------------------
    def vocab_record(self) -> dict | None:
        vocab = [p for p in self.plans.values() if p.common_rows is not None]
        if not vocab:
            return None
        return {"tensors": [p.name for p in vocab], "common_rows": vocab[0].common_rows,
                "output_rows": vocab[0].shape[0], "extra_rows_from": self.cfg.tokenizer_input,
                "input_vocab_sizes": {inp: ck.config.get("vocab_size")
                                      for inp, ck in zip(self.cfg.inputs, self.inputs, strict=True)}}

    def write_side_files(self, tmp: Path, vocab: dict | None, out_dtype: str) -> None:
        """The tokenizer source's config, generation config and tokenizer files, with the output's
        vocabulary size, dtype, embedding tie and context length. ``tokenizer_config.json``'s
        ``model_max_length``, when smaller than the context, is raised to it (recorded in
        ``self.context``)."""
        src = self.source.path
        for fname in COPIED_FILES:
            if (src / fname).is_file():
                shutil.copyfile(src / fname, tmp / fname)
        config = copy.deepcopy(self.source.config)
        if vocab:
            config["vocab_size"] = vocab["output_rows"]
        for key in ("torch_dtype", "dtype"):
            if key in config or key == "dtype":
                config[key] = out_dtype
        config["tie_word_embeddings"] = self.tied["output"]
        positions = self.context["max_position_embeddings"]["output"]
        source_positions = self.context["max_position_embeddings"]["source"]
        if positions is not None and positions != source_positions:
            config["max_position_embeddings"] = positions
            if isinstance(source_positions, int) and pin_rope(config, source_positions):
                self.context["rope"]["pinned_original_max_position_embeddings"] = source_positions
                log.warning("the tokenizer source's scaled RoPE gets original_max_position_embeddings %d, so that "
                            "raising max_position_embeddings leaves it as it was", source_positions)
            if "dynamic" in rope_types(self.context["rope"]["source"]):
                log.warning("the tokenizer source uses dynamic RoPE scaling, which starts at max_position_embeddings: "
                            "raised to %d, it starts later than in the source", positions)
        atomic_write_json(tmp / "config.json", config)
        tok_config = tmp / "tokenizer_config.json"
        if positions is not None and tok_config.is_file():
            tok = read_json(tok_config)
            length = tok.get("model_max_length")
            self.context["model_max_length"] = {"source": length, "output": length}
            if isinstance(length, (int, float)) and length < positions:
                log.warning("tokenizer_config.json of %s has model_max_length %s; raised to the merged "
                            "context, %d", self.cfg.tokenizer_input, length, positions)
                tok["model_max_length"] = positions
                self.context["model_max_length"]["output"] = positions
                atomic_write_json(tok_config, tok)


def keep_blocks_in_heap() -> None:
    """Serve block-sized allocations from the heap and keep freed ones there (glibc; elsewhere a no-op).

    By default glibc maps each multi-MB allocation fresh and unmaps it when freed, so every block's
    temporaries would fault in new zeroed pages — about half the arithmetic time of a merge. With
    allocations below 32 MiB (a block is 4 MiB) served from a heap that keeps up to 256 MiB free,
    they reuse the same pages. Process-wide, and harmless after the merge: larger allocations are
    still mapped and unmapped as before.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 256 << 20)


@contextmanager
def torch_threads() -> Iterator[None]:
    """All cores for the tensor arithmetic, unless the user capped threads (OMP_NUM_THREADS)."""
    before = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ and (os.cpu_count() or 1) > before:
        torch.set_num_threads(os.cpu_count())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def already_merged(cfg: MergeConfig) -> bool:
    """Whether ``cfg.out`` already holds this very merge: its ``l2s_merge.json`` records the same config
    (``overwrite`` aside). Callers that keep merges in a cache reuse them on that condition."""
    record = Path(cfg.out) / "l2s_merge.json"
    if not record.is_file():
        return False
    old = {k: v for k, v in (read_json(record).get("config") or {}).items() if k != "overwrite"}
    return old == {k: v for k, v in cfg.to_dict().items() if k != "overwrite"}


def merge(cfg: MergeConfig) -> Path:
    """Merge the checkpoints of ``cfg`` into ``cfg.out``; returns the output directory."""
    cfg.validate()
    check_replaceable(cfg.out, cfg.overwrite)  # --overwrite replaces only an l2s output, checked before any work
    keep_blocks_in_heap()
    m = Merger(cfg)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="l2s-hash")
    try:
        with torch_threads():
            return _merge(cfg, m, hasher)
    finally:
        hasher.shutdown(wait=False, cancel_futures=True)  # on an error, do not wait to hash the rest
        m.close()


def warn_context(context: dict, source: str) -> None:
    """Warn where the output's context differs from the tokenizer source's, or the inputs disagree
    on rotary or sliding-window settings (the source's are kept: a merge of such inputs may not
    behave like either at long range)."""
    positions = context["max_position_embeddings"]
    if positions["output"] != positions["source"]:
        log.warning("max_position_embeddings: the tokenizer source %s has %s, the inputs %s; the merged config "
                    "gets %s (the source's would cut longer answers)", source, positions["source"],
                    positions["inputs"], positions["output"])
    for key in ("rope", "sliding_window"):
        if context[key]["inputs_disagree"]:
            log.warning("the inputs' %s settings differ (%s); the merged config keeps those of %s: %s",
                        key, context[key]["inputs"], source, context[key]["source"])


def _merge(cfg: MergeConfig, m: Merger, hasher: ThreadPoolExecutor) -> Path:
    log.info("merge %s: %d tensors, base=%s, models=%s", m.spec.name, len(m.plans), cfg.base, cfg.models)
    pending = {inp: hasher.submit(m.input_record, ck, inp) for inp, ck in zip(cfg.inputs, m.inputs, strict=True)}
    records = {inp: f.result() for inp, f in pending.items()} if m.spec.needs_calibration else None
    m.prepare(records)
    vocab = m.vocab_record()
    if vocab:
        log.warning("vocabularies differ (%s rows): merging the %d common rows of %s, extra rows from %s; "
                    "vocab_size set to %d", vocab["input_vocab_sizes"], vocab["common_rows"], vocab["tensors"],
                    vocab["extra_rows_from"], vocab["output_rows"])
    warn_context(m.context, cfg.tokenizer_input)
    plans = list(m.plans.values())
    out_dtype = str(next((p.dtype for p in plans if p.dtype.is_floating_point), torch.float32)).removeprefix("torch.")
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        outputs = {}
        writer = ShardWriter(tmp, [(p.name, p.dtype, p.shape) for p in plans], parse_size(cfg.shard_size),
                             on_finish=lambda path: outputs.setdefault(path.name, hasher.submit(shard_sha256, path)))
        try:
            for name in tqdm(writer.order, desc=f"merge {m.spec.name}", unit="tensor"):
                writer.write(name, m.blocks(name))
            writer.close()
        finally:
            writer.abort()
        m.write_side_files(tmp, vocab, out_dtype)
        records = {inp: f.result() for inp, f in pending.items()}
        record = {
            "method": m.spec.name, "params": m.params, "seed": cfg.seed, "l2s_version": __version__,
            "base": records.get(cfg.base) if cfg.base else None,
            "models": [records[x] for x in cfg.models], "tokenizer_source": cfg.tokenizer_input,
            "dtype": out_dtype, "compute_dtype": cfg.compute_dtype_name(), "vocab_mismatch": vocab,
            "tied_embeddings": m.tied, "context": m.context,
            "stats": {k: {"path": v, "sha256": file_sha256(v)} for k, v in m.stats_files.items()},
            **m.method_records(),
            "outputs": {name: outputs[name].result() for name in writer.shard_names},
            "config": cfg.to_dict(), "provenance": provenance(seed=cfg.seed),
        }
        atomic_write_json(tmp / "l2s_merge.json", record)
    log.info("merged checkpoint written to %s", cfg.out)
    return Path(cfg.out)
