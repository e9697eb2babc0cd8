"""Data parallelism: N worker processes, each with its own backend on its own group of GPUs.

The requests are split into N shards by a hash of their key (so a request's shard, and with
per-request seeds its response, does not depend on the order of the other requests); worker ``i``
runs with ``CUDA_VISIBLE_DEVICES`` set to ``devices[i]`` and streams each finished batch back
through a queue, so the caller still saves results as they arrive. The orchestration knows nothing
of vLLM: ``make_backend`` is any picklable zero-argument factory. Hand-written because vLLM's own
data-parallel mode serves an API engine, not offline ``LLM.generate`` with results streamed per shard.

The workers are not daemonic, because vLLM's ``LLM()`` starts an EngineCore child process and daemonic
processes may not have children. They still never outlive the parent: on Linux each asks the kernel
for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``, so even a SIGKILLed parent leaves no worker
behind), an idle worker also exits when it finds its parent gone, SIGTERM makes a worker close its
backend (and so its engine) and exit, and the parent stops them in ``close()``, when the backend is
garbage collected, and at interpreter exit (a multiprocessing finalizer, which runs before
multiprocessing joins the non-daemonic children, so exit never hangs).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import multiprocessing as mp
import multiprocessing.util
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

from l2s.eval.backends.base import Backend, Generation, Request
from l2s.eval.sampling import SamplingConfig

POLL_S = 1.0  # how often the parent checks that its workers are alive while it waits
STOP_GRACE_S = 60.0  # close(): how long idle workers may take to close their backends and exit
TERM_GRACE_S = 30.0  # after SIGTERM, how long a worker may take to close its backend before SIGKILL
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def gpu_groups(n_workers: int, tensor_parallel_size: int, visible: list[str] | None = None,
               platform: str | None = "cuda") -> list[list[str]] | None:
    """Consecutive groups of ``tensor_parallel_size`` GPUs, one per worker; needs n_workers × tp GPUs.
    ``platform`` ``"cpu"`` (vLLM's CPU build, see :func:`l2s.eval.backends.vllm_platform`): there are no
    GPUs to split, so None: the workers share the CPU and the environment is left as it is."""
    if n_workers < 1:
        raise ValueError(f"data_parallel_size must be >= 1, got {n_workers}")
    if tensor_parallel_size < 1:
        raise ValueError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    if platform == "cpu":
        return None
    visible = visible_gpus() if visible is None else list(visible)
    need = n_workers * tensor_parallel_size
    if need > len(visible):
        raise ValueError(f"data_parallel_size {n_workers} × tensor_parallel_size {tensor_parallel_size} = {need} "
                         f"GPUs needed, but only {len(visible)} visible ({','.join(visible) or 'none'}); "
                         f"lower data_parallel_size or tensor_parallel_size, or set CUDA_VISIBLE_DEVICES")
    return [visible[i * tensor_parallel_size:(i + 1) * tensor_parallel_size] for i in range(n_workers)]


def die_with_parent(parent_pid: int) -> None:
    """Linux: have the kernel send this process SIGTERM when its parent dies (data-parallel workers,
    grading workers). The parent here is the thread that started the worker, so the worker's owner
    must live in a thread that outlives it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _exit_on_sigterm(outbox, signum, frame) -> None:
    """SIGTERM (``close()`` of a busy backend, or the parent's death): unwind, so the ``finally`` in
    :func:`_worker` closes the backend, without waiting at exit for the parent to read the outbox."""
    outbox.cancel_join_thread()
    raise SystemExit(128 + signum)


def _next_job(inbox, outbox, parent_pid: int):
    """The next job from the parent, polling rather than blocking: the kernel may hand SIGTERM to
    another thread of this process, whose C handler only flags it for the main thread, and a main
    thread blocked in a read would never run the Python handler. Exits when the parent is gone, also
    where PR_SET_PDEATHSIG does not exist."""
    while True:
        try:
            return inbox.get(timeout=POLL_S)
        except queue.Empty:
            if os.getppid() != parent_pid:
                outbox.cancel_join_thread()
                raise SystemExit(1) from None


def _worker(shard: int, make_backend: Callable[[], Backend], devices: list[str] | None, parent_pid: int,
            inbox, outbox) -> None:
    """Build a backend, report ``ready``, then serve ``(requests, sampling)`` jobs until ``None``."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGTERM, functools.partial(_exit_on_sigterm, outbox))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent stops us
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    try:
        backend = make_backend()
        outbox.put(("ready", shard, backend.model_info()))
    except Exception:
        outbox.put(("error", shard, traceback.format_exc()))
        return
    try:
        while (job := _next_job(inbox, outbox, parent_pid)) is not None:
            requests, sampling = job
            try:
                for batch in backend.generate(requests, sampling, progress=False):
                    outbox.put(("batch", shard, batch))
                outbox.put(("done", shard, None))
            except Exception:
                outbox.put(("error", shard, traceback.format_exc()))
                return
    finally:
        backend.close()


class _Workers:
    """The worker processes and their inboxes, kept apart from the backend so that a finalizer can
    stop them without holding the backend alive."""

    def __init__(self):
        self.procs: list = []
        self.inboxes: list = []
        self.in_flight = False  # a generate() was left before all shards finished

    def stop(self) -> None:
        """Ask idle workers to stop and give them ``STOP_GRACE_S``; SIGTERM them at once if a
        generation was cut short (an error, an interrupt), and SIGKILL any that outlast ``TERM_GRACE_S``."""
        for inbox, p in zip(self.inboxes, self.procs, strict=True):
            if p.is_alive() and not self.in_flight:
                inbox.put(None)
        deadline = time.monotonic() + (0 if self.in_flight else STOP_GRACE_S)
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
        deadline = time.monotonic() + TERM_GRACE_S
        for p in self.procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
        for inbox in self.inboxes:
            inbox.cancel_join_thread()


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
        self._workers = _Workers()
        # exitpriority >= 0: runs at interpreter exit before multiprocessing joins the (non-daemonic) workers
        self._finalizer = multiprocessing.util.Finalize(self, self._workers.stop, exitpriority=10)
        try:
            for i in range(n_workers):
                group = None if devices is None else list(devices[i])
                inbox = ctx.Queue()
                p = ctx.Process(target=_worker, args=(i, make_backend, group, os.getpid(), inbox, self._outbox),
                                name=f"l2s-dp-{i}", daemon=False)
                p.start()
                self._workers.inboxes.append(inbox)
                self._workers.procs.append(p)
            ready = {}
            while len(ready) < n_workers:
                kind, shard, info = self._receive()
                if kind != "ready":
                    raise RuntimeError(f"unexpected message {kind!r} from data-parallel shard {shard}")
                ready[shard] = info
            self._model_info = ready[0]
        except BaseException:
            self._workers.in_flight = True  # do not wait for the other workers to finish loading
            self.close()
            raise

    @property
    def _procs(self) -> list:
        return self._workers.procs

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
                                       f"(exit code {self._procs[i].exitcode}) without reporting") from None
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
            self._workers.inboxes[i].put((shards[i], sampling))
        self._workers.in_flight = True
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
        self._workers.in_flight = False
        bar.close()

    def close(self) -> None:
        """Stop the workers (see :meth:`_Workers.stop`); later calls do nothing."""
        self._finalizer()
