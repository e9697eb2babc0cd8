"""vLLM generation (``LLM.generate``), imported only when used: CUDA GPUs, tensor parallelism.

Every request carries its own seed (from the run seed and its key), so sampled responses do not
depend on batching; ``finish_reason == "length"`` marks a truncated response.
"""

from __future__ import annotations

from typing import Iterator

from tqdm.auto import tqdm

from l2s.eval.backends.base import Backend, Generation, Request
from l2s.eval.sampling import SamplingConfig, request_seed


class VLLMBackend(Backend):
    def __init__(self, model: str, tokenizer: str | None = None, tensor_parallel_size: int = 1,
                 dtype: str = "auto", gpu_memory_utilization: float = 0.9, chunk_size: int = 1024):
        from vllm import LLM

        self.llm = LLM(model=model, tokenizer=tokenizer or model, tensor_parallel_size=tensor_parallel_size,
                       dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=0)
        self.tokenizer = self.llm.get_tokenizer()
        self.chunk_size = chunk_size  # requests per LLM.generate call: results are saved per chunk

    def model_info(self) -> dict:
        return {"config": self.llm.llm_engine.model_config.hf_config.to_dict()}

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        from vllm import SamplingParams

        bar = tqdm(total=len(requests), desc="generating (vllm)", unit="resp", disable=not progress)
        for start in range(0, len(requests), self.chunk_size):
            batch = requests[start:start + self.chunk_size]
            params = [SamplingParams(n=1, temperature=sampling.temperature, top_p=sampling.top_p,
                                     top_k=sampling.top_k, max_tokens=sampling.max_new_tokens,
                                     stop=list(sampling.stop) or None,
                                     seed=request_seed(sampling.seed, *r.key)) for r in batch]
            outs = self.llm.generate([r.prompt for r in batch], params, use_tqdm=False)
            results = []
            for r, out in zip(batch, outs):
                o = out.outputs[0]
                finished = o.finish_reason == "stop"
                ids = list(o.token_ids)
                if finished and ids and ids[-1] == self.tokenizer.eos_token_id:
                    ids = ids[:-1]  # as the hf backend: n_tokens excludes the final eos
                results.append((r, Generation(token_ids=ids, text=o.text, finished=finished,
                                              truncated=o.finish_reason == "length")))
            bar.update(len(batch))
            yield results
        bar.close()

    def close(self) -> None:
        del self.llm
