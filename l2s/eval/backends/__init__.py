"""Generation backends: vLLM on CUDA GPUs, transformers everywhere. ``make_backend`` picks one."""

from __future__ import annotations

import functools
import importlib.util

from l2s.eval.backends.base import Backend, Generation, Request

BACKENDS = ("auto", "vllm", "hf")


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU exists."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        return "vllm" if vllm_usable() else "hf"
    if name == "vllm" and not vllm_usable():
        raise ValueError("backend 'vllm' needs vLLM installed and a CUDA GPU; use --backend hf")
    return name


def make_backend(name: str, model: str, tokenizer: str | None = None, data_parallel_size: int = 1,
                 **kwargs) -> Backend:
    """``kwargs``: batch_size, dtype, device (hf); tensor_parallel_size, dtype, gpu_memory_utilization (vllm).
    ``data_parallel_size`` N > 1 (vllm only): N worker processes, each a VLLMBackend on its own
    ``tensor_parallel_size`` GPUs (:class:`~l2s.eval.backends.parallel.DataParallelBackend`)."""
    name = resolve_backend(name)
    if data_parallel_size != 1:
        from l2s.eval.backends.parallel import DataParallelBackend, gpu_groups
        from l2s.tokenizers import load_tokenizer

        if name != "vllm":
            raise ValueError(f"data_parallel_size {data_parallel_size} needs the vllm backend, got {name!r}")
        devices = gpu_groups(data_parallel_size, kwargs.get("tensor_parallel_size", 1))
        factory = functools.partial(make_backend, "vllm", model, tokenizer, **kwargs)
        return DataParallelBackend(factory, data_parallel_size, devices, tokenizer=load_tokenizer(tokenizer or model))
    if name == "vllm":
        from l2s.eval.backends.vllm import VLLMBackend

        return VLLMBackend(model, tokenizer, **{k: v for k, v in kwargs.items()
                                                if k in ("tensor_parallel_size", "dtype",
                                                         "gpu_memory_utilization", "chunk_size")})
    from l2s.eval.backends.hf import HFBackend

    return HFBackend(model, tokenizer, **{k: v for k, v in kwargs.items()
                                          if k in ("batch_size", "dtype", "device")})


__all__ = ["BACKENDS", "Backend", "Generation", "Request", "make_backend", "resolve_backend", "vllm_usable"]
