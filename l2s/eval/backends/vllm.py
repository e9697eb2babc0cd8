"""vLLM generation (``LLM.generate``), imported only when used: CUDA GPUs, tensor parallelism.

Every request carries its own seed (from the run seed and its key), so sampled responses do not
depend on batching; ``finish_reason == "length"`` marks a truncated response. A checkpoint whose
tokenizer ``AutoTokenizer`` cannot load as saved (the toy world's word-level one, see
:mod:`l2s.tokenizers`) runs with ``skip_tokenizer_init``: l2s encodes the prompts and decodes the
outputs itself and vLLM sees only token ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from l2s.eval.backends.base import Backend, Generation, Request, cut_at_stop
from l2s.eval.sampling import SamplingConfig, request_seed


class VLLMBackend(Backend):
    def __init__(self, model: str, tokenizer: str | None = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.9, chunk_size: int = 1024):
        from vllm import LLM

        from l2s.tokenizers import load_tokenizer, saved_tokenizer_model

        source = tokenizer or model
        kind = saved_tokenizer_model(source) if Path(source).is_dir() else None
        self.ids_only = kind not in (None, "BPE")
        self.llm = LLM(model=model, tokenizer=source, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, seed=0, skip_tokenizer_init=self.ids_only)
        self.tokenizer = load_tokenizer(source) if self.ids_only else self.llm.get_tokenizer()
        self.chunk_size = chunk_size  # requests per LLM.generate call: results are saved per chunk

    def model_info(self) -> dict:
        return {"config": self.llm.llm_engine.model_config.hf_config.to_dict()}

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        from vllm import SamplingParams

        bar = tqdm(total=len(requests), desc="generating (vllm)", unit="resp", disable=not progress)
        for start in range(0, len(requests), self.chunk_size):
            batch = requests[start:start + self.chunk_size]
            extra = ({"stop_token_ids": [self.tokenizer.eos_token_id], "detokenize": False} if self.ids_only
                     else {"stop": list(sampling.stop) or None})
            params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                     top_k=sampling.top_k, max_tokens=sampling.max_new_tokens,
                                     seed=request_seed(sampling.seed, *r.key), **extra) for r in batch]
            prompts = ([{"prompt_token_ids": self.tokenizer(r.prompt, add_special_tokens=False).input_ids}
                        for r in batch] if self.ids_only else [r.prompt for r in batch])
            outs = self.llm.generate(prompts, params, use_tqdm=False)
            results = []
            for r, out in zip(batch, outs):
                o = out.outputs[0]
                finished = o.finish_reason == "stop"
                ids = list(o.token_ids)
                if finished and ids and ids[-1] == self.tokenizer.eos_token_id:
                    ids = ids[:-1]  # as the hf backend: n_tokens excludes the final eos
                text = o.text
                if self.ids_only:
                    text, stopped = cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), sampling.stop)
                    finished = finished or stopped
                results.append((r, Generation(token_ids=ids, text=text, finished=finished,
                                              truncated=o.finish_reason == "length")))
            bar.update(len(batch))
            yield results
        bar.close()

    def close(self) -> None:
        del self.llm
