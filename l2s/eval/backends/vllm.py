"""vLLM generation, imported only when used: CUDA GPUs (tensor parallelism), or vLLM's CPU build.

The engine is fed continuously: every request goes into the engine at once, and finished responses
come back in batches as they finish (``yield_every`` of them, or whatever finished within
``yield_seconds``), so the caller saves them as they arrive and the engine never idles waiting for the
longest response of a chunk. Every request carries its own seed (from the run seed and its key), so
sampled responses do not depend on batching, and its own token budget (:meth:`Request.budget`);
``finish_reason == "length"`` marks a truncated response. Prompts go in as token ids encoded without
special tokens, as the hf backend encodes them: a chat prompt that already starts with BOS gets no
second one. A checkpoint whose tokenizer ``AutoTokenizer`` cannot load as saved (the toy world's
word-level one, see :mod:`l2s.tokenizers`) runs with ``skip_tokenizer_init``: l2s also decodes the
outputs itself and vLLM sees only token ids.
"""

from __future__ import annotations

import gc
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from l2s.eval.backends.base import Backend, Generation, Request, cut_at_stop
from l2s.eval.sampling import SamplingConfig, request_seed

CPU_KVCACHE_GIB = "1"  # vLLM-CPU's KV cache when VLLM_CPU_KVCACHE_SPACE is unset (else: 90 % of the RAM)


def _tokens_input(ids: list[int], prompt: str):
    """The engine input for a tokenized prompt (vLLM >= 0.32 wants it rendered; older ones take the dict)."""
    try:
        from vllm.inputs import tokens_input
    except ImportError:
        return {"prompt_token_ids": ids}
    return tokens_input(ids, prompt=prompt)


class VLLMBackend(Backend):
    """``max_model_len`` None: the model's own context length. ``gpu_memory_utilization`` is the share
    of GPU memory vLLM may take; on the CPU build the KV cache is ``VLLM_CPU_KVCACHE_SPACE`` GiB
    instead, 1 GiB if unset (each data-parallel worker sets up its own)."""

    def __init__(self, model: str, tokenizer: str | None = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 enforce_eager: bool = False, yield_every: int = 64, yield_seconds: float = 5.0):
        from vllm import LLM

        from l2s.eval.backends import vllm_platform
        from l2s.tokenizers import load_tokenizer, saved_tokenizer_model

        if max_model_len is not None and max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1 or None (the model's own), got {max_model_len}")
        if yield_every < 1:
            raise ValueError(f"yield_every must be >= 1, got {yield_every}")
        if vllm_platform() == "cpu" and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = CPU_KVCACHE_GIB
        source = tokenizer or model
        kind = saved_tokenizer_model(source) if Path(source).is_dir() else None
        self.ids_only = kind not in (None, "BPE")
        self.llm = LLM(model=model, tokenizer=source, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, seed=0, skip_tokenizer_init=self.ids_only)
        self.tokenizer = load_tokenizer(source) if self.ids_only else self.llm.get_tokenizer()
        self.yield_every, self.yield_seconds = yield_every, yield_seconds
        self._request_ids = itertools.count()  # unique engine request ids across generate() calls

    def model_info(self) -> dict:
        return {"config": self.llm.llm_engine.model_config.hf_config.to_dict()}

    def _params(self, request: Request, sampling: SamplingConfig):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        extra = ({"stop_token_ids": [self.tokenizer.eos_token_id], "detokenize": False} if self.ids_only
                 else {"stop": list(sampling.stop) or None})
        return SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k,
                              max_tokens=request.budget(sampling), seed=request_seed(sampling.seed, *request.key),
                              output_kind=RequestOutputKind.FINAL_ONLY, **extra)

    def _generation(self, out, sampling: SamplingConfig) -> Generation:
        finished = out.finish_reason == "stop"
        ids = list(out.token_ids)
        if finished and ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]  # as the hf backend: n_tokens excludes the final eos
        text = out.text
        if self.ids_only:
            text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
            finished = finished or stopped
        return Generation(token_ids=ids, text=text, finished=finished, truncated=out.finish_reason == "length")

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        engine = self.llm.llm_engine
        pending: dict[str, Request] = {}
        bar = tqdm(total=len(requests), desc="generating (vllm)", unit="resp", disable=not progress)
        try:
            for r in requests:
                request_id = f"l2s-{next(self._request_ids)}"
                prompt = _tokens_input(self.tokenizer.encode(r.prompt, add_special_tokens=False), r.prompt)
                engine.add_request(request_id, prompt, self._params(r, sampling))
                pending[request_id] = r
            done, since = [], time.monotonic()
            while pending and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished and out.request_id in pending:
                        done.append((pending.pop(out.request_id), self._generation(out.outputs[0], sampling)))
                if done and (len(done) >= self.yield_every or not pending
                             or time.monotonic() - since >= self.yield_seconds):
                    bar.update(len(done))
                    yield done
                    done, since = [], time.monotonic()
            if pending:
                raise RuntimeError(f"vLLM stopped with {len(pending)} requests unanswered, "
                                   f"e.g. {next(iter(pending.values())).key}")
        finally:
            if pending:  # left early (an error, or the caller stopped reading): free the engine for the next call
                engine.abort_request(list(pending))
            bar.close()

    def close(self) -> None:
        """Shut the engine (its EngineCore process, and with it the GPU memory) down now rather than
        whenever it is garbage collected, so another engine can start in this process."""
        llm = self.__dict__.pop("llm", None)
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        if engine_core is not None:
            engine_core.shutdown()
        del llm
        gc.collect()
