"""The prompt actually sent to the model for a problem.

- ``qwen25-math-cot``: the model's chat template with the Qwen2.5-Math system prompt "Please reason
  step by step, and put your final answer within \\boxed{}." (slow-thinking and merged models, Wu et
  al. 2025);
- ``chat``: the chat template applied to a single user message, no system message (toy models);
- ``cot``: few-shot "Question: / Answer:" exemplars (quick-thinking base models) from a JSON list of
  ``{question, answer}``; the package ships its own small set (``cot_exemplars.json``);
- ``raw``: the problem text as is.
"""

from __future__ import annotations

import json
from pathlib import Path

PROMPTS = ("qwen25-math-cot", "chat", "cot", "raw")
QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
DEFAULT_EXEMPLARS = Path(__file__).with_name("cot_exemplars.json")
COT_STOP = ("\n\nQuestion:",)  # a few-shot base model goes on to invent the next question


def load_exemplars(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path else DEFAULT_EXEMPLARS
    if not path.is_file():
        raise FileNotFoundError(f"cot exemplar file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(l) for l in text.splitlines() if l.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt exemplar file ({e})") from e
    for i, r in enumerate(rows):
        for field in ("question", "answer"):
            if not isinstance(r, dict) or not isinstance(r.get(field), str):
                raise ValueError(f"{path}: exemplar {i} lacks string field {field!r}")
    return rows


def _chat(tokenizer, messages: list[dict]) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("this prompt needs a tokenizer with a chat template; the model's tokenizer has none "
                         "(use --prompt cot or raw)")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def build_prompt(name: str, problem: str, tokenizer=None, exemplars: list[dict] | None = None,
                 n_shots: int = 4) -> str:
    if name == "qwen25-math-cot":
        return _chat(tokenizer, [{"role": "system", "content": QWEN25_MATH_SYSTEM},
                                 {"role": "user", "content": problem}])
    if name == "chat":
        return _chat(tokenizer, [{"role": "user", "content": problem}])
    if name == "cot":
        shots = (exemplars if exemplars is not None else load_exemplars())[:n_shots]
        head = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in shots)
        return f"{head}Question: {problem}\nAnswer:"
    if name == "raw":
        return problem
    raise ValueError(f"unknown prompt {name!r}; expected one of {', '.join(PROMPTS)}")
