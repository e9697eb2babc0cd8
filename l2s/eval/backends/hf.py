"""transformers generation: batched, left-padded, KV-cached, prompts sorted by length.

Requests are sorted by prompt length (longest first, so an out-of-memory error shows at once and
padding is small) and generated ``batch_size`` at a time with ``model.generate``. A batch generates
up to the largest token budget among its requests (:meth:`Request.budget`) and cuts each row to its
own, which leaves greedy rows as they would be alone. Greedy responses do not depend on the seed.

Sampled decoding draws every token of a request from that request's own generator, seeded by
:func:`~l2s.eval.sampling.request_seed` (run seed and request key), as vLLM's per-request seeds do:
a response does not depend on the other requests of its batch, so a resumed run (other batches)
gives the bytes of an uninterrupted one. ``model.generate`` draws a whole batch from one global
generator, so :class:`RequestSampler` samples instead: it applies temperature, top-k and top-p (the
warpers ``generate`` would apply), then picks each row's token by inverse CDF from one uniform of
the row's generator, and hands ``generate`` (in greedy mode) a distribution that is one-hot on it.
"""

from __future__ import annotations

from collections.abc import Iterator

from tqdm.auto import tqdm
from transformers import LogitsProcessor

from l2s.eval.backends.base import Backend, Generation, Request, cut_at_stop
from l2s.eval.sampling import SamplingConfig, request_seed


class RequestSampler(LogitsProcessor):
    """A ``LogitsProcessor`` that samples each row from its own ``torch.Generator`` (CPU: the same
    draws on any device) and returns scores that are 0 at the drawn token and -inf elsewhere."""

    def __init__(self, seeds: list[int], sampling: SamplingConfig):
        import torch
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        self.warpers = [TemperatureLogitsWarper(sampling.temperature)] if sampling.temperature != 1.0 else []
        if sampling.top_k > 0:
            self.warpers.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(sampling.top_p))

    def __call__(self, input_ids, scores):
        import torch

        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.double(), dim=-1)
        cdf = probs.cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(probs.device)
        token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
        last = probs.shape[-1] - 1 - (probs > 0).flip(-1).int().argmax(-1)  # the last token with mass
        token = torch.minimum(token, last)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token.unsqueeze(1), 0.0)


class HFBackend(Backend):
    def __init__(self, model: str, tokenizer: str | None = None, batch_size: int = 16,
                 dtype: str = "auto", device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM

        from l2s.merge.checkpoint import check_safetensors
        from l2s.paths import model_location
        from l2s.tokenizers import load_tokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model = model_location(model)
        check_safetensors(model)
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(tokenizer or model)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device).eval()

    @classmethod
    def from_objects(cls, model, tokenizer, batch_size: int = 16) -> HFBackend:
        """Wrap an already loaded model and tokenizer (tests, notebooks)."""
        self = cls.__new__(cls)
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        self.tokenizer.padding_side = "left"
        self.device = next(model.parameters()).device
        return self

    def model_info(self) -> dict:
        return {"config": self.model.config.to_dict()}

    def _eos_ids(self) -> set[int]:
        eos = self.model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    def generate(self, requests: list[Request], sampling: SamplingConfig,
                 progress: bool = True) -> Iterator[list[tuple[Request, Generation]]]:
        import torch
        from transformers import LogitsProcessorList

        tok = self.tokenizer
        lengths = [len(ids) for ids in tok([r.prompt for r in requests], add_special_tokens=False)["input_ids"]]
        order = sorted(range(len(requests)), key=lambda i: (-lengths[i], i))
        eos_ids = self._eos_ids()
        # generate() runs greedy; sampled tokens come from RequestSampler (see the module docstring)
        kwargs = dict(pad_token_id=tok.pad_token_id, eos_token_id=sorted(eos_ids), do_sample=False,
                      temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=tok)
        bar = tqdm(total=len(requests), desc="generating (hf)", unit="resp", disable=not progress)
        for start in range(0, len(order), self.batch_size):
            batch = [requests[i] for i in order[start:start + self.batch_size]]
            enc = tok([r.prompt for r in batch], return_tensors="pt", padding=True,
                      add_special_tokens=False).to(self.device)
            processors = LogitsProcessorList()
            if not sampling.greedy:
                processors.append(RequestSampler([request_seed(sampling.seed, *r.key) for r in batch], sampling))
            budgets = [r.budget(sampling) for r in batch]
            with torch.inference_mode():
                out = self.model.generate(**enc, **kwargs, logits_processor=processors, max_new_tokens=max(budgets))
            new = out[:, enc["input_ids"].shape[1]:].tolist()
            results = [(r, self._to_generation(ids[:b], eos_ids, sampling, b))
                       for r, ids, b in zip(batch, new, budgets, strict=True)]
            bar.update(len(batch))
            yield results
        bar.close()

    def _to_generation(self, ids: list[int], eos_ids: set[int], sampling: SamplingConfig, budget: int) -> Generation:
        cut = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        ended_by_eos = cut is not None
        ids = ids[:cut] if ended_by_eos else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, sampling.stop)
        finished = ended_by_eos or stopped
        return Generation(token_ids=ids, text=text, finished=finished,
                          truncated=not finished and len(ids) >= budget)
