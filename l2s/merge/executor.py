"""The streaming merge: one tensor at a time from the inputs' shards to the output's shards.

Peak memory is a few copies of the largest tensor (the base's, each model's, the task vectors and
the result, in the compute dtype), never the model: tensors are read one at a time, merged, cast,
appended to the output shard being written, and dropped. The output directory is built beside the
target and renamed into place only when complete (:func:`l2s.io.atomic_output_dir`).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from l2s import __version__
from l2s.io import atomic_output_dir, atomic_write_json
from l2s.merge import calibration
from l2s.merge.checkpoint import Checkpoint, ShardWriter, resolve
from l2s.merge.config import MergeConfig, parse_size
from l2s.merge.methods import METHODS
from l2s.merge.methods.activation import aim_importance, sens_coefficients, sens_cross_task_scaling, sens_task_scaling
from l2s.merge.methods.task_vector import dare
from l2s.provenance import config_hash, file_sha256, provenance

log = logging.getLogger(__name__)

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


class Merger:
    """Holds the opened inputs and per-tensor auxiliary data; :meth:`tensor` merges one tensor."""

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
        self.thresholds = None
        self.importance: dict[str, torch.Tensor] = {}
        self.sens_layers: dict[str, list[float]] = {}
        self.stats_files: dict[str, str] = {}

    # -- auxiliary statistics -------------------------------------------------------------------
    def input_record(self, ck: Checkpoint, given: str) -> dict:
        cfg = ck.path / "config.json"
        return {"input": given, "path": str(ck.path),
                "config_sha256": file_sha256(cfg) if cfg.is_file() else None,
                "shards": {p.name: file_sha256(p) for p in ck.shard_paths()}}

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
            for i, d in enumerate(self.dare_deltas(name)):
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
            for i, d in enumerate(self.dare_deltas(name)):
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

    # -- one tensor ------------------------------------------------------------------------------
    def load(self, name: str) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        rows = self.plans[name].common_rows

        def get(ck):
            t = ck.read(name)
            if t.dtype.is_floating_point and not torch.isfinite(t).all():
                raise ValueError(f"input tensor {name!r} in {ck.file_of(name)} has NaN or inf values")
            return (t[:rows] if rows is not None else t).to(self.compute)

        return (get(self.base) if self.base else None), [get(m) for m in self.models]

    def dare_deltas(self, name: str) -> list[torch.Tensor]:
        base, models = self.load(name)
        deltas = [m - base for m in models]
        if self.spec.dare:
            deltas = [dare(d, self.params["p"], dare_generator(self.cfg.seed, name, i)) for i, d in enumerate(deltas)]
        return deltas

    def tensor(self, name: str) -> torch.Tensor:
        plan = self.plans[name]
        if not plan.dtype.is_floating_point:
            return self.source.read(name)
        p, core = self.params, self.spec.core
        base, models = self.load(name)
        if self.spec.dare:
            models = [base + dare(m - base, p["p"], dare_generator(self.cfg.seed, name, i))
                      for i, m in enumerate(models)]
        own = {k: v for k, v in p.items() if k in METHODS[core].params and k != "include_base"}
        if core == "ties" and self.thresholds is not None:
            own["thresholds"] = self.thresholds
        if core == "lore" and p["include_base"]:
            models = [base] + models
        if core == "sens":
            layer = calibration.layer_of(name)
            if layer not in self.sens_layers:
                raise ValueError(f"tensor {name!r}: no Sens-Merging sensitivity for its layer {layer!r}")
            own = {"alpha": p["alpha"], "coefficients": self.sens_layers[layer]}
        out = METHODS[core].fn(base, models, **own)
        if self.spec.aim and name in self.importance:
            imp = self.importance[name]
            if imp.shape[-1] != out.shape[-1]:
                raise ValueError(f"AIM statistics of {name!r} have {imp.shape[-1]} channels, the tensor {out.shape[-1]}")
            out = METHODS["aim"].fn(base, out, imp, p["omega"])
        if plan.common_rows is not None:
            out = torch.cat([out, self.source.read(name)[plan.common_rows:].to(self.compute)])
        out = out.to(plan.dtype)
        if not torch.isfinite(out).all():
            files = ", ".join(str(ck.file_of(name)) for ck in self.inputs)
            raise ValueError(f"merged tensor {name!r} has NaN or inf values (method {self.spec.name}, "
                             f"params {p}); inputs: {files}")
        return out

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


def merge(cfg: MergeConfig) -> Path:
    """Merge the checkpoints of ``cfg`` into ``cfg.out``; returns the output directory."""
    cfg.validate()
    m = Merger(cfg)
    log.info("merge %s: %d tensors, base=%s, models=%s", m.spec.name, len(m.plans), cfg.base, cfg.models)
    records = {inp: m.input_record(ck, inp) for inp, ck in zip(cfg.inputs, m.inputs)}
    m.prepare(records)
    vocab = m.vocab_record()
    if vocab:
        log.warning("vocabularies differ (%s rows): merging the %d common rows of %s, extra rows from %s; "
                    "vocab_size set to %d", vocab["input_vocab_sizes"], vocab["common_rows"], vocab["tensors"],
                    vocab["extra_rows_from"], vocab["output_rows"])
    plans = list(m.plans.values())
    out_dtype = str(next((p.dtype for p in plans if p.dtype.is_floating_point), torch.float32)).removeprefix("torch.")
    with atomic_output_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        writer = ShardWriter(tmp, [(p.name, p.dtype, p.shape) for p in plans], parse_size(cfg.shard_size))
        try:
            for name in tqdm(writer.order, desc=f"merge {m.spec.name}", unit="tensor"):
                writer.write(name, m.tensor(name))
            writer.close()
        finally:
            writer.abort()
        m.write_side_files(tmp, vocab, out_dtype)
        record = {
            "method": m.spec.name, "params": m.params, "seed": cfg.seed, "l2s_version": __version__,
            "base": records.get(cfg.base) if cfg.base else None,
            "models": [records[x] for x in cfg.models], "tokenizer_source": cfg.tokenizer_input,
            "dtype": out_dtype, "compute_dtype": cfg.compute_dtype_name(), "vocab_mismatch": vocab,
            "global_trim_thresholds": m.thresholds, "stats": {k: {"path": v, "sha256": file_sha256(v)}
                                                               for k, v in m.stats_files.items()},
            "sens": getattr(m, "sens_summary", None),
            "outputs": {name: file_sha256(tmp / name) for name in writer.shard_names},
            "config": cfg.to_dict(), "provenance": provenance(seed=cfg.seed),
        }
        atomic_write_json(tmp / "l2s_merge.json", record)
    log.info("merged checkpoint written to %s", cfg.out)
    return Path(cfg.out)
