"""Reading and writing safetensors checkpoints one tensor at a time.

Reading: the header of every shard is parsed and checked up front (so a corrupt or truncated shard
fails before anything is written), then each tensor is read with one positioned ``readinto`` into a
fresh buffer. Hand-written rather than ``safetensors.safe_open`` because that memory-maps whole
shards, and every page touched through the map stays in the process's resident set until the file
is closed: merging would then hold the whole model resident. Reading into a buffer keeps resident
memory at the size of the tensors in flight.

Writing: all output shapes and dtypes are known before the first tensor is merged, so each shard's
safetensors header is written first and tensors are appended as they are produced — no shard is
ever held in memory (``safetensors.save_file`` needs all of a shard's tensors at once). Every
written shard is re-opened with ``safetensors.safe_open`` as a format check.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from l2s.io import read_json

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
CODES = {v: k for k, v in DTYPES.items()}
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
MAX_HEADER = 100 * 2**20
HUB_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def resolve(path_or_id: str) -> Path:
    """A local checkpoint directory, or a hub id downloaded with ``huggingface_hub.snapshot_download``."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise ValueError(f"{p} is a file; expected a checkpoint directory")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", path_or_id) and not path_or_id.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path_or_id, allow_patterns=HUB_PATTERNS))
    raise FileNotFoundError(f"checkpoint {path_or_id} not found (neither a directory nor a hub id)")


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    nbytes: int


class SafetensorsFile:
    """One shard: header parsed and checked on open, tensors read one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise self.corrupt(f"{size} bytes, shorter than a header")
            n = int.from_bytes(head, "little")
            if n > min(size - 8, MAX_HEADER):
                raise self.corrupt(f"header length {n} does not fit the file ({size} bytes)")
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise self.corrupt(f"unreadable header ({e})") from e
        if not isinstance(header, dict):
            raise self.corrupt("header is not a JSON object")
        self.metadata = header.pop("__metadata__", None) or {}
        self.tensors: dict[str, TensorInfo] = {}
        for name, h in header.items():
            try:
                dtype, shape, (s, e) = DTYPES[h["dtype"]], tuple(int(x) for x in h["shape"]), h["data_offsets"]
            except (KeyError, TypeError, ValueError) as err:
                raise self.corrupt(f"bad header entry for tensor {name!r}: {h!r} ({err!r})") from err
            numel = 1
            for d in shape:
                numel *= d
            want = numel * torch.empty((), dtype=dtype).element_size()
            if e - s != want or s < 0 or 8 + n + e > size:
                raise self.corrupt(f"tensor {name!r}: bytes [{s}, {e}) do not hold shape {list(shape)} "
                                   f"{h['dtype']} inside the file ({size} bytes; truncated?)")
            self.tensors[name] = TensorInfo(dtype, shape, 8 + n + s, e - s)

    def corrupt(self, why: str) -> ValueError:
        return ValueError(f"{self.path}: corrupt or unreadable safetensors shard: {why}")

    def read(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        buf = torch.empty(info.nbytes, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(info.start)
            got = f.readinto(memoryview(buf.numpy())) if info.nbytes else 0
        if got != info.nbytes:
            raise self.corrupt(f"tensor {name!r}: read {got} of {info.nbytes} bytes")
        return buf.view(info.dtype).reshape(info.shape)


class Checkpoint:
    """A HF checkpoint directory: ``model.safetensors`` or shards listed by ``model.safetensors.index.json``."""

    def __init__(self, path: Path, label: str = ""):
        self.path = Path(path)
        self.label = label or str(path)
        index = self.path / INDEX
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise ValueError(f"{index}: no weight_map")
            for shard in sorted(set(weight_map.values())):
                if not (self.path / shard).is_file():
                    raise FileNotFoundError(f"{index} lists shard {shard}, which is missing from {self.path}")
        elif (self.path / SINGLE).is_file():
            weight_map = None
        else:
            raise FileNotFoundError(f"{self.path}: no {SINGLE} or {INDEX} (only safetensors checkpoints merge)")
        shards = sorted(set(weight_map.values())) if weight_map else [SINGLE]
        self.files = {s: SafetensorsFile(self.path / s) for s in shards}
        if weight_map is None:
            weight_map = {name: SINGLE for name in self.files[SINGLE].tensors}
        for name, shard in weight_map.items():
            if name not in self.files[shard].tensors:
                raise ValueError(f"{self.path / shard}: corrupt shard: tensor {name!r} listed in {index} is missing")
        self.weight_map: dict[str, str] = dict(weight_map)
        cfg = self.path / "config.json"
        self.config: dict = read_json(cfg) if cfg.is_file() else {}

    @property
    def names(self) -> list[str]:
        return sorted(self.weight_map)

    def info(self, name: str) -> TensorInfo:
        return self.files[self.weight_map[name]].tensors[name]

    def file_of(self, name: str) -> Path:
        return self.path / self.weight_map[name]

    def read(self, name: str) -> torch.Tensor:
        return self.files[self.weight_map[name]].read(name)

    def shard_paths(self) -> list[Path]:
        return [self.path / s for s in self.files]


def plan_shards(entries: list[tuple[str, torch.dtype, tuple[int, ...]]], max_bytes: int) -> list[list[str]]:
    """Split tensors, in order, into shards of at most ``max_bytes`` (a larger tensor gets its own shard)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, dtype, shape in entries:
        nbytes = _nbytes(dtype, shape)
        if shards[-1] and used + nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    numel = 1
    for d in shape:
        numel *= d
    return numel * torch.empty((), dtype=dtype).element_size()


class ShardWriter:
    """Writes planned shards: header first, then each tensor's bytes as it arrives, in plan order."""

    def __init__(self, out: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], max_bytes: int):
        self.out = Path(out)
        self.layout = {name: (dtype, tuple(shape)) for name, dtype, shape in entries}
        groups = plan_shards(entries, max_bytes)
        n = len(groups)
        self.shard_names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.order = [name for g in groups for name in g]
        self.shard_of = {name: self.shard_names[i] for i, g in enumerate(groups) for name in g}
        self.groups = dict(zip(self.shard_names, groups))
        self._next = 0
        self._file = None
        self._open_shard = None

    def _start(self, shard: str) -> None:
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in self.groups[shard]:
            dtype, shape = self.layout[name]
            nbytes = _nbytes(dtype, shape)
            header[name] = {"dtype": CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._file = open(self.out / shard, "wb")
        self._file.write(len(blob).to_bytes(8, "little") + blob)
        self._open_shard = shard

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.order[self._next]
        if name != expected:
            raise RuntimeError(f"tensor {name!r} written out of plan order (expected {expected!r})")
        dtype, shape = self.layout[name]
        if tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(f"tensor {name!r}: got {tensor.dtype} {list(tensor.shape)}, planned {dtype} {list(shape)}")
        shard = self.shard_of[name]
        if shard != self._open_shard:
            self._finish()
            self._start(shard)
        if tensor.numel():
            self._file.write(memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy()))
        self._next += 1

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def close(self) -> dict[str, str]:
        """Finish the last shard, write the index (several shards), check the format; returns weight_map."""
        if self._next != len(self.order):
            raise RuntimeError(f"only {self._next} of {len(self.order)} tensors were written")
        self._finish()
        if len(self.shard_names) > 1:
            total = sum(_nbytes(*self.layout[n]) for n in self.order)
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(self.shard_of.items()))}
            (self.out / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        from safetensors import safe_open

        for shard in self.shard_names:
            with safe_open(self.out / shard, framework="pt") as f:
                if sorted(f.keys()) != sorted(self.groups[shard]):
                    raise RuntimeError(f"{self.out / shard}: written shard does not hold its planned tensors")
        return dict(self.shard_of)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
