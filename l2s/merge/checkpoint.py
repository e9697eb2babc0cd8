"""Reading and writing safetensors checkpoints one tensor — or one block of rows — at a time.

Reading: the header of every shard is parsed and checked up front (so a corrupt or truncated shard
fails before anything is written), then a tensor, or a range of its rows (rows are contiguous in
the file), is read with positioned reads (``os.preadv``) into a fresh buffer. Hand-written rather
than ``safetensors.safe_open`` because that memory-maps whole shards, and every page touched
through the map stays in the process's resident set until the file is closed: merging would then
hold the whole model resident. Reading into a buffer keeps resident memory at the size of the
blocks in flight.

Writing: all output shapes and dtypes are known before the first tensor is merged, so each shard's
safetensors header is written first and tensors are appended as they are produced, block by block —
no shard, and no whole tensor, is ever held in memory (``safetensors.save_file`` needs all of a
shard's tensors at once). The file operations run on a background thread, overlapping the
merge's arithmetic; each shard is fsynced once, when complete, and handed to an optional callback
(the executor hashes it in the background); every written shard is re-opened with
``safetensors.safe_open`` as a format check.

Tied embeddings: a checkpoint whose config ties the output embedding to the input embedding
(``tie_word_embeddings``, e.g. Qwen2.5-Math-1.5B) stores no ``lm_head.weight``. :meth:`Checkpoint.alias`
lets it serve that name from ``model.embed_tokens.weight``, through the same reads (whole or by rows),
so it can be merged with an untied fine-tune (see :func:`l2s.merge.executor.tie_embeddings`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import queue
import re
import threading
from collections.abc import Callable, Iterable
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
# (output embedding, the input embedding a tied checkpoint uses for it): mergekit's ``tied_names`` of
# lm_head.weight in its Qwen2/Llama/Mistral architecture definitions.
TIED_EMBEDDINGS = ("lm_head.weight", "model.embed_tokens.weight")


def resolve(path_or_id: str) -> Path:
    """A local checkpoint directory, or a hub id downloaded with ``huggingface_hub.snapshot_download``."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise ValueError(f"{p} is a file; expected a checkpoint directory")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", path_or_id) and not path_or_id.startswith((".", "/")):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(path_or_id, allow_patterns=HUB_PATTERNS))
        except Exception as e:  # noqa: BLE001  (offline, no such repo, gated: all mean "not found here")
            raise FileNotFoundError(f"model directory {path_or_id} not found, and the hub gave no repo "
                                    f"{path_or_id} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                                    "check the path, or the network for a hub id") from e
    raise FileNotFoundError(f"model directory {path_or_id} not found (neither a directory nor a hub id)")


def check_safetensors(path: str | Path) -> None:
    """Check the ``*.safetensors`` files of a local checkpoint before a model is loaded (cheap: headers
    only): each header parses and the file holds all the bytes it lists, and every shard of the index
    exists; a corrupt or truncated file is an error naming it. Any dtype passes (this is no merge);
    a hub id, or a directory without safetensors, is left to the loader."""
    path = Path(path)
    if not path.is_dir():
        return
    if (path / INDEX).is_file():
        listed = read_json(path / INDEX).get("weight_map")
        for shard in sorted(set(listed.values()) if isinstance(listed, dict) else ()):
            if not (path / shard).is_file():
                raise FileNotFoundError(f"{path / INDEX} lists shard {shard}, which is missing from {path}; "
                                        "re-download or rebuild the checkpoint")
    for shard in sorted(path.glob("*.safetensors")):
        size = shard.stat().st_size
        corrupt = functools.partial(corrupt_shard, shard)
        with open(shard, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or n > min(size - 8, MAX_HEADER):
                raise corrupt(f"{size} bytes, no valid header (truncated?)")
            try:
                header = json.loads(f.read(n))
                end = max((int(h["data_offsets"][1]) for k, h in header.items() if k != "__metadata__"), default=0)
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError, ValueError,
                    IndexError) as e:
                raise corrupt(f"unreadable header ({e!r})") from e
        if 8 + n + end > size:
            raise corrupt(f"its tensors need {8 + n + end} bytes, the file has {size} (truncated?)")


def corrupt_shard(path: Path, why: str) -> ValueError:
    return ValueError(f"{path}: corrupt or unreadable safetensors shard: {why}; re-download or rebuild the checkpoint")


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
        self.fd: int | None = None  # opened on the first read, kept for the following ones

    def corrupt(self, why: str) -> ValueError:
        return corrupt_shard(self.path, why)

    def read(self, name: str, rows: tuple[int, int] | None = None, into: torch.Tensor | None = None) -> torch.Tensor:
        """The tensor ``name``, or only its rows ``[start, stop)`` along the first dimension.

        ``into``: a uint8 buffer of at least the bytes read, which the result is a view of.
        """
        info = self.tensors[name]
        start, shape, nbytes = info.start, info.shape, info.nbytes
        if rows is not None:
            r0, r1 = rows
            if not shape or not 0 <= r0 <= r1 <= shape[0]:
                raise ValueError(f"{self.path}: tensor {name!r} of shape {list(shape)} has no rows [{r0}, {r1})")
            row = nbytes // shape[0] if shape[0] else 0
            start, shape, nbytes = start + r0 * row, (r1 - r0, *shape[1:]), (r1 - r0) * row
        buf = torch.empty(nbytes, dtype=torch.uint8) if into is None else into[:nbytes]
        view, got = memoryview(buf.numpy()), 0
        while got < nbytes:
            n = os.preadv(self._fd(), [view[got:]], start + got)
            if n == 0:
                raise self.corrupt(f"tensor {name!r}: read {got} of {nbytes} bytes")
            got += n
        return buf.view(info.dtype).reshape(shape)

    def _fd(self) -> int:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        return self.fd

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close


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
        self.aliases: dict[str, str] = {}  # tensor name -> the stored tensor it is read as
        cfg = self.path / "config.json"
        self.config: dict = read_json(cfg) if cfg.is_file() else {}
        self._buffer = torch.empty(0, dtype=torch.uint8)

    @property
    def names(self) -> list[str]:
        return sorted(self.weight_map)

    def alias(self, name: str, stored: str) -> None:
        """Serve tensor ``name`` from the stored tensor ``stored`` (a tied weight): its info and its
        reads, whole or by rows, are those of ``stored``."""
        self.weight_map[name] = self.weight_map[stored]
        self.aliases[name] = self.aliases.get(stored, stored)

    def ties_embeddings(self) -> bool:
        """Whether the config ties the output embedding to the input embedding. When the config has
        no ``tie_word_embeddings``, the default of transformers' config class for its ``model_type``
        (False for qwen2 and llama in transformers 5.23); for a model type transformers does not know,
        whether ``lm_head.weight`` is missing (the checkpoint then relies on the tie)."""
        if "tie_word_embeddings" in self.config:
            return bool(self.config["tie_word_embeddings"])
        try:
            from transformers import AutoConfig

            default = AutoConfig.for_model(self.config["model_type"]).tie_word_embeddings
        except (ImportError, KeyError, ValueError, AttributeError):
            default = None
        return bool(default) if default is not None else TIED_EMBEDDINGS[0] not in self.weight_map

    def info(self, name: str) -> TensorInfo:
        return self.files[self.weight_map[name]].tensors[self.aliases.get(name, name)]

    def file_of(self, name: str) -> Path:
        return self.path / self.weight_map[name]

    def read(self, name: str, rows: tuple[int, int] | None = None, reuse: bool = False) -> torch.Tensor:
        """Tensor ``name`` (or its ``rows``). ``reuse``: read into this checkpoint's one buffer — no
        fresh memory to fault in on every block, but the result is only valid until the next reuse read."""
        shard, stored = self.files[self.weight_map[name]], self.aliases.get(name, name)
        if not reuse:
            return shard.read(stored, rows)
        info = self.info(name)
        nbytes = info.nbytes if rows is None else (rows[1] - rows[0]) * (info.nbytes // max(1, info.shape[0]))
        if self._buffer.numel() < nbytes:
            self._buffer = torch.empty(nbytes, dtype=torch.uint8)
        return shard.read(stored, rows, into=self._buffer)

    def shard_paths(self) -> list[Path]:
        return [self.path / s for s in self.files]

    def close(self) -> None:
        for f in self.files.values():
            f.close()


SAMPLE_WINDOWS, SAMPLE_WINDOW = 64, 1 << 16


def hub_blob_sha256(path: Path) -> str | None:
    """For a file of the Hugging Face hub cache, the name of its blob, which is the SHA-256 of its
    content (the LFS object id) — so downloaded checkpoints need not be re-read."""
    target = Path(path).resolve()
    if Path(path).is_symlink() and target.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", target.name):
        return target.name
    return None


def shard_sha256(path: Path) -> str:
    """SHA-256 of a file (of a hub cache file: its blob name)."""
    if blob := hub_blob_sha256(path):
        return blob
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def shard_fingerprint(path: Path, mode: str = "sampled") -> tuple[str, str]:
    """(digest, what it is) of an input shard: its full SHA-256 (``mode="full"``, or a hub file), or
    the SHA-256 of its size, its safetensors header and 64 windows of 64 KiB evenly spread over the
    rest (``"sampled"``: reads ≤ 4 MiB; any fine-tune changes nearly every weight, so different
    weights give different digests, though a change confined to unsampled bytes would not show)."""
    if mode == "full" or hub_blob_sha256(path):
        return shard_sha256(path), "sha256"
    size = Path(path).stat().st_size
    h = hashlib.sha256(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        head = f.read(8)
        h.update(head + f.read(int.from_bytes(head, "little") if len(head) == 8 else 0))
        start = f.tell()
        span = size - start
        if span <= SAMPLE_WINDOWS * SAMPLE_WINDOW:
            h.update(f.read())
        else:
            for i in range(SAMPLE_WINDOWS):
                f.seek(start + i * (span - SAMPLE_WINDOW) // (SAMPLE_WINDOWS - 1))
                h.update(f.read(SAMPLE_WINDOW))
    return h.hexdigest(), f"sha256 of size, header and {SAMPLE_WINDOWS} windows of {SAMPLE_WINDOW} bytes"


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
    """Writes planned shards: header first, then each tensor's bytes as it arrives, in plan order.

    The file operations run on a background thread fed by a bounded queue (at most ``queue_blocks``
    blocks in flight), so the merge computes the next blocks while the kernel copies, throttles and
    syncs the previous ones. Errors of that thread are raised by the next :meth:`write` or :meth:`close`.
    """

    def __init__(self, out: Path, entries: list[tuple[str, torch.dtype, tuple[int, ...]]], max_bytes: int,
                 on_finish: Callable[[Path], None] | None = None, queue_blocks: int = 8):
        self.out = Path(out)
        self.on_finish = on_finish  # called (on the writer thread) with each shard's path once it is on disk
        self.layout = {name: (dtype, tuple(shape)) for name, dtype, shape in entries}
        groups = plan_shards(entries, max_bytes)
        n = len(groups)
        self.shard_names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.order = [name for g in groups for name in g]
        self.shard_of = {name: self.shard_names[i] for i, g in enumerate(groups) for name in g}
        self.groups = dict(zip(self.shard_names, groups, strict=True))
        self._next = 0
        self._open_shard = None  # the shard being written, as seen by the caller
        self._file = None  # owned by the writer thread
        self._error: BaseException | None = None
        self._aborted = False
        self._queue: queue.Queue = queue.Queue(maxsize=queue_blocks)
        self._thread = threading.Thread(target=self._run, name="l2s-shard-writer", daemon=True)
        self._thread.start()

    # -- the writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None and not self._aborted:
                try:
                    job()
                except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
                    self._error = e

    def _submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._queue.put(job)

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"writing {self.out}: {self._error}") from self._error

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

    def _finish(self, shard: str) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        if self.on_finish:
            self.on_finish(self.out / shard)

    # -- the caller's side -------------------------------------------------------------------------
    def write(self, name: str, tensor: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """Append tensor ``name``: a whole tensor, or its blocks of rows in order (an iterable). The
        blocks must not be modified afterwards (they are written later, from the queue)."""
        expected = self.order[self._next]
        if name != expected:
            raise RuntimeError(f"tensor {name!r} written out of plan order (expected {expected!r})")
        dtype, shape = self.layout[name]
        shard = self.shard_of[name]
        if shard != self._open_shard:
            if self._open_shard is not None:
                self._submit(functools.partial(self._finish, self._open_shard))
            self._submit(functools.partial(self._start, shard))
            self._open_shard = shard
        blocks = [tensor] if isinstance(tensor, torch.Tensor) else tensor
        written, want = 0, _nbytes(dtype, shape)
        for block in blocks:
            if block.dtype != dtype or tuple(block.shape[1:]) != shape[1:] or block.dim() != len(shape):
                raise RuntimeError(f"tensor {name!r}: got a block {block.dtype} {list(block.shape)}, planned "
                                   f"{dtype} {list(shape)}")
            if block.numel():
                data = memoryview(block.contiguous().reshape(-1).view(torch.uint8).numpy())
                written += data.nbytes
                if written > want:
                    break
                self._submit(lambda data=data: self._file.write(data))
        if written != want:
            raise RuntimeError(f"tensor {name!r}: got {written} bytes, planned {dtype} {list(shape)} ({want} bytes)")
        self._next += 1

    def close(self) -> dict[str, str]:
        """Finish the last shard, write the index (several shards), check the format; returns weight_map."""
        if self._next != len(self.order):
            raise RuntimeError(f"only {self._next} of {len(self.order)} tensors were written")
        if self._open_shard is not None:
            self._submit(functools.partial(self._finish, self._open_shard))
        self._stop()
        self._raise()
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

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def abort(self) -> None:
        """Drop what is queued, stop the thread, close the open file (no-op after :meth:`close`)."""
        self._aborted = True
        self._stop()
        if self._file is not None:
            self._file.close()
            self._file = None
