"""The prompt actually sent to the model for a problem.

- ``qwen25-math-cot``: the model's chat template with the Qwen2.5-Math system prompt "Please reason
  step by step, and put your final answer within \\boxed{}." (slow-thinking and merged models, Wu et
  al. 2025). For an R1-distill model this renders R1's own template
  (``<｜begin▁of▁sentence｜>{system}<｜User｜>{q}<｜Assistant｜><think>\\n``);
- ``qwen25-math-cot-literal``: the Qwen2.5-Math evaluation toolkit's ``qwen25-math-cot`` template as the
  toolkit writes it (``evaluation/utils.py``, ``PROMPT_TEMPLATES``): a literal ChatML string, the same
  text for every model whatever its own chat template. Wu et al. evaluate with that toolkit and do not
  say that they changed its template, so this is the closest to their Tables 1-4; the model's own
  template (above) is what the model was trained to see. Every run records which one it used
  (``config.json`` ``prompt``, and each row's ``prompt``);
- ``chat``: the chat template applied to a single user message, no system message (toy models);
- ``cot``: few-shot "Question: / Answer:" exemplars (quick-thinking base models) from a JSON list of
  ``{question, answer}``; the package ships its own small set (``cot_exemplars.json``);
- ``raw``: the problem text as is.
"""

from __future__ import annotations

import json
from pathlib import Path

from l2s import io

PROMPTS = ("qwen25-math-cot", "qwen25-math-cot-literal", "chat", "cot", "raw")
QWEN25_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
# The toolkit's PROMPT_TEMPLATES["qwen25-math-cot"][0], with its "{input}" slot.
QWEN25_MATH_COT_LITERAL = ("<|im_start|>system\n" + QWEN25_MATH_SYSTEM + "<|im_end|>\n"
                           "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n")
DEFAULT_EXEMPLARS = Path(__file__).with_name("cot_exemplars.json")
COT_STOP = ("\n\nQuestion:",)  # a few-shot base model goes on to invent the next question
# The toolkit's stop words for its ChatML prompts (math_eval.py): a base model may write them as text.
LITERAL_STOP = ("<|im_end|>", "<|endoftext|>")
DEFAULT_STOP = {"cot": COT_STOP, "qwen25-math-cot-literal": LITERAL_STOP}


def load_exemplars(path: str | Path | None = None) -> list[dict]:
    path = Path(path) if path else DEFAULT_EXEMPLARS
    if not path.is_file():
        raise FileNotFoundError(f"cot exemplar file {path} not found")
    text = io.read_text(path)
    try:
        rows = (json.loads(text) if path.suffix == ".json"
                else [json.loads(line) for line in text.splitlines() if line.strip()])
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


def chat_messages(name: str, problem: str) -> list[dict] | None:
    """The chat a chat prompt renders through the model's template, or None for a text prompt.

    ``qwen25-math-cot``: the Qwen2.5-Math system prompt, then the problem as the user turn; ``chat``:
    the problem as the one user turn. The text prompts (``qwen25-math-cot-literal``, ``cot``, ``raw``)
    are sent as the string itself, whatever the model's template: the row's ``prompt`` is then the
    whole, exact prompt. Every generations.jsonl row stores this as ``messages``, so that preference
    pairs (:mod:`l2s.prefs`) take the chat from the row and never parse a rendered prompt.
    """
    if name == "qwen25-math-cot":
        return [{"role": "system", "content": QWEN25_MATH_SYSTEM}, {"role": "user", "content": problem}]
    if name == "chat":
        return [{"role": "user", "content": problem}]
    if name in PROMPTS:
        return None
    raise ValueError(f"unknown prompt {name!r}; expected one of {', '.join(PROMPTS)}")


def build_prompt(name: str, problem: str, tokenizer=None, exemplars: list[dict] | None = None,
                 n_shots: int = 4) -> str:
    messages = chat_messages(name, problem)
    if messages is not None:
        return _chat(tokenizer, messages)
    if name == "qwen25-math-cot-literal":
        return QWEN25_MATH_COT_LITERAL.replace("{input}", problem)
    if name == "cot":
        shots = (exemplars if exemplars is not None else load_exemplars())[:n_shots]
        head = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in shots)
        return f"{head}Question: {problem}\nAnswer:"
    if name == "raw":
        return problem
    raise ValueError(f"unknown prompt {name!r}; expected one of {', '.join(PROMPTS)}")
