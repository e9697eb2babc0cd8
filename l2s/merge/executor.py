"""The streaming merge: block by block from the inputs' shards to the output's shards.

Elementwise methods (average, TA, TIES, DARE, linear, Sens, AIM) are merged in blocks of rows of
about :data:`BLOCK_ELEMENTS` entries: each block of the base's and each model's tensor is read,
merged, cast and appended to the output shard being written, then dropped — peak memory is a few
blocks, whatever the model's size. TIES first needs each task vector's per-tensor TRIM threshold:
|δ_i| of the whole tensor is assembled (block by block, in one reused buffer the size of the largest
tensor) and its k-th smallest entry selected. The SVD methods (LoRE, Twin) need whole matrices and
hold a few copies of the tensor being merged. The output directory is built beside the target and
renamed into place only when complete (:func:`l2s.io.atomic_output_dir`).

The fingerprints of the input shards (sampled or full SHA-256, ``MergeConfig.input_hash``) and the
SHA-256 of each output shard once written (for ``l2s_merge.json``) are computed by a background
thread while the merge runs (``hashlib`` releases the GIL).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import struct
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from l2s import __version__
from l2s.io import atomic_output_dir, atomic_write_json, read_json
from l2s.merge import calibration
from l2s.merge.checkpoint import Checkpoint, ShardWriter, resolve, shard_fingerprint, shard_sha256
from l2s.merge.config import MergeConfig, parse_size
from l2s.merge.methods import METHODS
from l2s.merge.methods.activation import aim_importance, sens_coefficients, sens_cross_task_scaling, sens_task_scaling
from l2s.merge.methods.task_vector import dare, trim_threshold
from l2s.provenance import config_hash, file_sha256, provenance

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


def dare_generator(seed: int, name: str, model_index: int) -> torch.Generator:
    """A generator seeded from (seed, tensor name, model): masks independent of order and threads."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{model_index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


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
                and all(s[0] == v for s, v in zip(shapes, vocab))):
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
    per = max(1, BLOCK_ELEMENTS // max(1, _prod(shape[1:])))
    return [(r, min(r + per, stop)) for r in range(start, stop, per)]


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= x
    return out


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or inf in ``t``: one min/max reduction (both propagate NaN), no tensor-sized mask."""
    if not t.dtype.is_floating_point or t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t)
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


class Merger:
    """Holds the opened inputs and per-tensor auxiliary data; :meth:`blocks` merges one tensor."""

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
        out = None if cfg.out_dtype_name() == "auto" else getattr(torch, cfg.out_dtype_name())
        self.plans = {p.name: p for p in plan_tensors(self.inputs, self.source, out)}
        self.elementwise = all(METHODS[c].elementwise for c in self.spec.components)
        self.thresholds = None
        self.importance: dict[str, torch.Tensor] = {}
        self.sens_layers: dict[str, list[float]] = {}
        self.stats_files: dict[str, str] = {}
        self._scratch = torch.empty(0, dtype=self.compute)
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

    def prepare(self, records: dict[str, dict]) -> None:
        cfg, p = self.cfg, self.params
        if self.spec.core == "ties" and p["trim"] == "global" and p["k"] > 0:
            self.thresholds = self.global_thresholds(p["k"])
        if self.spec.aim:
            scales, path = calibration.aim_stats(cfg.out, self.base.path, config_hash(records[cfg.base]),
                                                 cfg.calibration[0], cfg.calibration_samples,
                                                 cfg.calibration_max_tokens, file_sha256)
            self.importance = {k: aim_importance(v) for k, v in scales.items() if k in self.plans}
            self.stats_files["aim"] = str(path)
        if self.spec.core == "sens":
            names = ([cfg.base] if p["include_base"] else []) + list(cfg.models)
            stats, path = calibration.sens_stats(cfg.out, [self.paths[n] for n in names],
                                                 [config_hash(records[n]) for n in names], cfg.calibration,
                                                 cfg.calibration_samples, cfg.calibration_max_tokens, file_sha256)
            layers = sorted(stats["layer_sensitivity"][0])
            s = torch.tensor([[row.get(layer, 0.0) for layer in layers] for row in stats["layer_sensitivity"]],
                             dtype=torch.float64)
            alpha = torch.stack([sens_task_scaling(r) for r in s])
            tau = sens_cross_task_scaling(torch.tensor(stats["logit_distance"], dtype=torch.float64))
            sigma = sens_coefficients(alpha, tau, p["T"]) * len(names)
            offset = len(names) - len(cfg.models)
            self.sens_layers = {layer: sigma[offset:, j].tolist() for j, layer in enumerate(layers)}
            self.stats_files["sens"] = str(path)
            self.sens_summary = {"layers": layers, "task_scaling": alpha.tolist(), "tau": tau.tolist(),
                                 "coefficients": (sigma).tolist(), "participants": names}

    def global_thresholds(self, k: float) -> list[float | None]:
        """Whole-model TRIM thresholds: the ⌊k·N⌋-th smallest |δ_i| over all N entries of task vector i.

        Exact and streamed, in two passes over the tensors: a histogram of the upper 16 bits of the
        float32 bit patterns of |δ| (monotone in the value for non-negative floats) locates the bin
        of the threshold, a histogram of the lower 16 bits inside that bin pins its exact value.
        """
        n = len(self.models)
        names = [p.name for p in self.plans.values() if p.dtype.is_floating_point]
        bits = lambda d: d.abs().float().reshape(-1).view(torch.int32)  # noqa: E731
        hist = torch.zeros(n, 65536, dtype=torch.int64)
        counts = [0] * n
        for name in tqdm(names, desc="global TRIM pass 1/2", unit="tensor"):
            for i, d in self.dare_deltas(name):
                hist[i] += torch.bincount(bits(d) >> 16, minlength=65536)
                counts[i] += d.numel()
        ranks = [int(k * c) for c in counts]
        his, before = [], []
        for i in range(n):
            cum = hist[i].cumsum(0)
            hi = int(torch.searchsorted(cum, ranks[i])) if ranks[i] else 0
            his.append(hi)
            before.append(int(cum[hi - 1]) if hi else 0)
        low = torch.zeros(n, 65536, dtype=torch.int64)
        for name in tqdm(names, desc="global TRIM pass 2/2", unit="tensor"):
            for i, d in self.dare_deltas(name):
                b = bits(d)
                low[i] += torch.bincount(b[(b >> 16) == his[i]] & 0xFFFF, minlength=65536)
        out: list[float | None] = []
        for i in range(n):
            if ranks[i] == 0:
                out.append(None)
                continue
            lo = int(torch.searchsorted(low[i].cumsum(0), ranks[i] - before[i]))
            out.append(struct.unpack("<f", struct.pack("<I", (his[i] << 16) | lo))[0])
        return out

    def dare_deltas(self, name: str) -> Iterator[tuple[int, torch.Tensor]]:
        """(model index, block of its task vector after DARE) over the merged rows of ``name``."""
        gens = self.generators(name)
        for rows in row_blocks(self.plans[name].shape, 0, self.plans[name].common_rows):
            base = self.read(self.base, name, rows)
            for i, m in enumerate(self.models):
                d = self.read(m, name, rows) - base
                yield i, (dare(d, self.params["p"], gens[i]) if self.spec.dare else d)

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

    def generators(self, name: str) -> list[torch.Generator | None]:
        """Fresh DARE generators of tensor ``name``, one per model (a pass over its blocks draws the
        same masks as one draw over the whole tensor: the generator's stream is sequential)."""
        return [dare_generator(self.cfg.seed, name, i) if self.spec.dare else None for i in range(len(self.models))]

    def load(self, name: str, rows: tuple[int, int] | None, gens, reuse: bool = True):
        """Base and models on ``rows`` of ``name``; with DARE the models are θ_0 + DARE(θ_i − θ_0)."""
        base = self.read(self.base, name, rows, reuse) if self.base else None
        models = [self.read(m, name, rows, reuse) for m in self.models]
        if self.spec.dare:
            models = [base + dare(m - base, self.params["p"], g) for m, g in zip(models, gens)]
        return base, models

    def core_params(self, name: str) -> dict:
        p, core = self.params, self.spec.core
        own = {k: v for k, v in p.items() if k in METHODS[core].params and k != "include_base"}
        if core == "ties":
            own["thresholds"] = self.thresholds if self.thresholds is not None else self.tensor_thresholds(name)
        if core == "sens":
            layer = calibration.layer_of(name)
            if layer not in self.sens_layers:
                raise ValueError(f"tensor {name!r}: no Sens-Merging sensitivity for its layer {layer!r}")
            own = {"alpha": p["alpha"], "coefficients": self.sens_layers[layer]}
        return own

    def tensor_thresholds(self, name: str) -> list[torch.Tensor | None]:
        """Per-tensor TIES TRIM thresholds t_i (the ⌊k·n⌋-th smallest |δ_i| of the tensor), δ_i taken
        exactly as :func:`ties` takes it from the models :meth:`load` gives."""
        plan, k = self.plans[name], self.params["k"]
        n = _prod(plan.shape[1:]) * (plan.common_rows if plan.common_rows is not None else
                                     (plan.shape[0] if plan.shape else 1))
        if int(k * n) == 0:
            return [None] * len(self.models)
        if self._scratch.numel() < n:
            self._scratch = torch.empty(n, dtype=self.compute)
        out = []
        for i in range(len(self.models)):
            gens, pos = self.generators(name), 0
            for rows in row_blocks(plan.shape, 0, plan.common_rows):
                base = self.read(self.base, name, rows)
                m = self.read(self.models[i], name, rows)
                if self.spec.dare:
                    m = base + dare(m - base, self.params["p"], gens[i])
                dst = self._scratch[pos:pos + m.numel()].view(m.shape)
                torch.sub(m, base, out=dst).abs_()
                pos += m.numel()
            out.append(trim_threshold(self._scratch[:n], k))
        return out

    def blocks(self, name: str) -> Iterator[torch.Tensor]:
        """The merged tensor ``name`` in the output dtype, as consecutive blocks of rows."""
        plan = self.plans[name]
        if not plan.dtype.is_floating_point:
            yield self.source.read(name)
            return
        if not self.elementwise:
            yield self.whole(name)
            return
        own, gens = self.core_params(name), self.generators(name)
        for rows in row_blocks(plan.shape, 0, plan.common_rows):
            base, models = self.load(name, rows, gens)
            yield self.finish(name, self.apply(name, base, models, own))
        if plan.common_rows is not None:
            for rows in row_blocks(plan.shape, plan.common_rows):
                yield self.finish(name, self.source.read(name, rows).to(self.compute))

    def apply(self, name: str, base, models, own) -> torch.Tensor:
        out = METHODS[self.spec.core].fn(base, models, **own)
        if self.spec.aim and name in self.importance:
            imp = self.importance[name]
            if imp.shape[-1] != out.shape[-1]:
                raise ValueError(f"AIM statistics of {name!r} have {imp.shape[-1]} channels, the tensor {out.shape[-1]}")
            out = METHODS["aim"].fn(base, out, imp, self.params["omega"])
        return out

    def whole(self, name: str) -> torch.Tensor:
        """A tensor of a method that needs it whole (LoRE, Twin: SVDs)."""
        plan = self.plans[name]
        rows = None if plan.common_rows is None else (0, plan.common_rows)
        base, models = self.load(name, rows, self.generators(name), reuse=False)
        if self.spec.core == "lore" and self.params["include_base"]:
            models = [base] + models
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
                "input_vocab_sizes": {inp: ck.config.get("vocab_size") for inp, ck in zip(self.cfg.inputs, self.inputs)}}

    def write_side_files(self, tmp: Path, vocab: dict | None, out_dtype: str) -> None:
        src = self.source.path
        for fname in COPIED_FILES:
            if (src / fname).is_file():
                shutil.copyfile(src / fname, tmp / fname)
        config = dict(self.source.config)
        if vocab:
            config["vocab_size"] = vocab["output_rows"]
        for key in ("torch_dtype", "dtype"):
            if key in config or key == "dtype":
                config[key] = out_dtype
        atomic_write_json(tmp / "config.json", config)


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
    keep_blocks_in_heap()
    m = Merger(cfg)
    hasher = ThreadPoolExecutor(1, thread_name_prefix="l2s-hash")
    try:
        with torch_threads():
            return _merge(cfg, m, hasher)
    finally:
        hasher.shutdown(wait=False, cancel_futures=True)  # on an error, do not wait to hash the rest
        m.close()


def _merge(cfg: MergeConfig, m: Merger, hasher: ThreadPoolExecutor) -> Path:
    log.info("merge %s: %d tensors, base=%s, models=%s", m.spec.name, len(m.plans), cfg.base, cfg.models)
    pending = {inp: hasher.submit(m.input_record, ck, inp) for inp, ck in zip(cfg.inputs, m.inputs)}
    records = {inp: f.result() for inp, f in pending.items()} if m.spec.needs_calibration else None
    m.prepare(records)
    vocab = m.vocab_record()
    if vocab:
        log.warning("vocabularies differ (%s rows): merging the %d common rows of %s, extra rows from %s; "
                    "vocab_size set to %d", vocab["input_vocab_sizes"], vocab["common_rows"], vocab["tensors"],
                    vocab["extra_rows_from"], vocab["output_rows"])
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
            "global_trim_thresholds": m.thresholds, "stats": {k: {"path": v, "sha256": file_sha256(v)}
                                                               for k, v in m.stats_files.items()},
            "sens": getattr(m, "sens_summary", None),
            "outputs": {name: outputs[name].result() for name in writer.shard_names},
            "config": cfg.to_dict(), "provenance": provenance(seed=cfg.seed),
        }
        atomic_write_json(tmp / "l2s_merge.json", record)
    log.info("merged checkpoint written to %s", cfg.out)
    return Path(cfg.out)
