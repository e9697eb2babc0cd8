"""Data parallelism: N worker processes, each with its own backend on its own group of GPUs.

The requests are split into N shards by a hash of their key (so a request's shard, and with
per-request seeds its response, does not depend on the order of the other requests); worker ``i``
runs with ``CUDA_VISIBLE_DEVICES`` set to ``devices[i]`` and streams each finished batch back
through a queue, so the caller still saves results as they arrive. The orchestration knows nothing
of vLLM: ``make_backend`` is any picklable zero-argument factory. Hand-written because vLLM's own
data-parallel mode serves an API engine, not offline ``LLM.generate`` with results streamed per shard.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import queue
import traceback
from typing import Callable, Iterator

from tqdm.auto import tqdm

from l2s.eval.backends.base import Backend, Generation, Request
from l2s.eval.sampling import SamplingConfig

POLL_S = 1.0  # how often the parent checks that its workers are alive while it waits


def shard_of(key: tuple, n_shards: int) -> int:
    """``sha256(repr(key)) mod n_shards``: stable across processes and runs (unlike ``hash``)."""
    return int(hashlib.sha256(repr(tuple(key)).encode()).hexdigest()[:16], 16) % n_shards


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_groups(n_workers: int, tensor_parallel_size: int, visible: list[str] | None = None) -> list[list[str]]:
    """Consecutive groups of ``tensor_parallel_size`` GPUs, one per worker; needs n_workers × tp GPUs."""
    if n_workers < 1:
        raise ValueError(f"data_parallel_size must be >= 1, got {n_workers}")
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    visible = visible_gpus() if visible is None else list(visible)
    need = n_workers * tensor_parallel_size
    if need > len(visible):
        raise ValueError(f"data_parallel_size {n_workers} × tensor_parallel_size {tensor_parallel_size} = {need} "
                         f"GPUs needed, but only {len(visible)} visible ({','.join(visible) or 'none'})")
    return [visible[i * tensor_parallel_size:(i + 1) * tensor_parallel_size] for i in range(n_workers)]


def _worker(shard: int, make_backend: Callable[[], Backend], devices: list[str] | None,
            inbox, outbox) -> None:
    """Build a backend, report ``ready``, then serve ``(requests, sampling)`` jobs until ``None``."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        backend = make_backend()
        outbox.put(("ready", shard, backend.model_info()))
    except BaseException:
        outbox.put(("error", shard, traceback.format_exc()))
        return
    try:
        while (job := inbox.get()) is not None:
            requests, sampling = job
            try:
                for batch in backend.generate(requests, sampling, progress=False):
                    outbox.put(("batch", shard, batch))
                outbox.put(("done", shard, None))
            except BaseException:
                outbox.put(("error", shard, traceback.format_exc()))
                return
    finally:
        backend.close()


class DataParallelBackend(Backend):
    """``n_workers`` processes (spawn context), worker ``i`` seeing the GPUs ``devices[i]`` (``None``:
    the environment is left as it is). ``tokenizer``: the one the caller builds prompts with."""

    def __init__(self, make_backend: Callable[[], Backend], n_workers: int,
                 devices: list[list[str]] | None = None, tokenizer=None):
        if not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"data_parallel_size must be an integer >= 1, got {n_workers!r}")
        if devices is not None and len(devices) != n_workers:
            raise ValueError(f"{n_workers} workers need {n_workers} device groups, got {len(devices)}")
        self.n_workers, self.devices, self.tokenizer = n_workers, devices, tokenizer
        ctx = mp.get_context("spawn")  # fork would copy the parent's CUDA state into every worker
        self._outbox = ctx.Queue()
        self._inboxes = [ctx.Queue() for _ in range(n_workers)]
        self._procs = []
        self._in_flight = False  # a generate() was left before all shards finished
        try:
            for i in range(n_workers):
                group = None if devices is None else list(devices[i])
                p = ctx.Process(target=_worker, args=(i, make_backend, group, self._inboxes[i], self._outbox),
                                name=f"l2s-dp-{i}", daemon=True)
                p.start()
                self._procs.append(p)
            ready = {}
            while len(ready) < n_workers:
                kind, shard, info = self._receive()
                if kind != "ready":
                    raise RuntimeError(f"unexpected message {kind!r} from data-parallel shard {shard}")
                ready[shard] = info
            self._model_info = ready[0]
        except BaseException:
            self._in_flight = True  # do not wait for the other workers to finish loading
            self.close()
            raise

    def _where(self, shard: int) -> str:
        return f"shard {shard}/{self.n_workers}" + (
            f" (CUDA_VISIBLE_DEVICES={','.join(self.devices[shard])})" if self.devices is not None else "")

    def _receive(self) -> tuple:
        """The next message from any worker; an error report or a dead worker raises RuntimeError."""
        while True:
            try:
                kind, shard, payload = self._outbox.get(timeout=POLL_S)
            except queue.Empty:
                dead = [i for i, p in enumerate(self._procs) if not p.is_alive()]
                if dead:
                    i = dead[0]
                    raise RuntimeError(f"data-parallel worker {self._where(i)} died "
                                       f"(exit code {self._procs[i].exitcode}) without reporting")
                continue
            if kind == "error":
                raise RuntimeError(f"data-parallel worker {self._where(shard)} failed:\n{payload}")
            return kind, shard, payload

    def model_info(self) -> dict:
        return self._model_info

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        shards: list[list[Request]] = [[] for _ in range(self.n_workers)]
        for r in requests:
            shards[shard_of(r.key, self.n_workers)].append(r)
        busy = {i for i, s in enumerate(shards) if s}
        for i in busy:
            self._inboxes[i].put((shards[i], sampling))
        self._in_flight = True
        bar = tqdm(total=len(requests), desc=f"generating ({self.n_workers} workers)", unit="resp",
                   disable=not progress)
        while busy:
            kind, shard, batch = self._receive()
            if kind == "done":
                busy.discard(shard)
            elif kind == "batch":
                bar.update(len(batch))
                yield batch
            else:
                raise RuntimeError(f"unexpected message {kind!r} from data-parallel {self._where(shard)}")
        self._in_flight = False
        bar.close()

    def close(self) -> None:
        """Ask idle workers to stop; terminate them at once if a generation was cut short (an error,
        an interrupt), else after 60 s."""
        for inbox, p in zip(self._inboxes, self._procs):
            if p.is_alive() and not self._in_flight:
                inbox.put(None)
        for inbox, p in zip(self._inboxes, self._procs):
            p.join(timeout=0 if self._in_flight else 60)
            if p.is_alive():
                p.terminate()
                p.join()
            inbox.cancel_join_thread()
        self._procs = []
