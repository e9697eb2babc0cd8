"""Does the trained model's chat template render a conversational pair as it was sampled?

TRL's ``DPOTrainer`` (and ``SFTTrainer``) render a conversational pair with the model's chat template:
``prompt`` with the generation prompt, and ``prompt`` + the assistant turn; the completion is what
follows their common token prefix. That trains on the sampled text only where the template

1. renders the prompt's messages to the string the models were sampled with,
2. keeps an assistant turn's text whole, and
3. renders prompt + assistant turn as the rendered prompt followed by the response.

R1-distill's template breaks 2 and 3: its generation prompt ends in ``<think>\\n``, and it keeps only
what follows ``</think>`` of an assistant turn, so plain TRL on conversational pairs would see the final
answers without their reasoning. ``l2s dpo`` therefore never lets TRL render pairs: it tokenizes each
record's ``prompt_text`` and raw responses itself (:func:`l2s.dpo.train.tokenize_pairs`). What
:func:`template_warnings` names is for whoever trains on the pairs with another tool: the pairs'
summary records it, so that nobody trains on the rewritten text silently.
"""

from __future__ import annotations

from typing import Any

# A long-CoT response as R1-distill models write it (the generation prompt opened the <think> block).
PROBE_RESPONSE = "Let me check: 1 + 1 = 2.\n</think>\n\nThe answer is \\boxed{2}."


def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def template_warnings(tokenizer, messages: list[dict[str, str]], prompt_text: str, response: str,
                      where: str = "the chat template", probe: bool = True) -> list[str]:
    """The rules above that ``tokenizer``'s template breaks for this prompt and ``response`` (and, with
    ``probe``, for :data:`PROBE_RESPONSE`: sampled long-CoT responses close a think block), one
    sentence each; [] when none."""
    if not getattr(tokenizer, "chat_template", None):
        return [f"{where}: the tokenizer has no chat template; TRL cannot render conversational pairs"]
    out: list[str] = []
    prompt = _render(tokenizer, messages, True)
    if prompt != prompt_text:
        out.append(f"{where} renders the prompt messages as {prompt[-60:]!r}, not as the prompt the models "
                   f"were sampled with ({prompt_text[-60:]!r}): DPO would train on another context")
    for text in dict.fromkeys((response, PROBE_RESPONSE) if probe else (response,)):
        full = _render(tokenizer, messages + [{"role": "assistant", "content": text}], False)
        if text not in full:
            out.append(f"{where} rewrites the assistant turn {text[:40]!r}... (R1-distill's keeps only what "
                       "follows '</think>'): plain TRL on these conversational pairs would train on the rewritten "
                       "text (the final answers, without the sampled reasoning); l2s dpo trains on prompt_text "
                       "and the raw responses instead")
            break
    full = _render(tokenizer, messages + [{"role": "assistant", "content": response}], False)
    if not full.startswith(prompt):
        cut = next(i for i, (a, b) in enumerate(zip(prompt + "\0", full + "\1")) if a != b)
        out.append(f"{where}: the rendered prompt is not a prefix of prompt + response (they part at "
                   f"{prompt[cut:cut + 20]!r}): TRL trains on their common prefix, so the end of the "
                   "generation prompt is left out of the trained context (not so with l2s dpo, which "
                   "tokenizes prompt_text itself)")
    return out


def first_chat_record(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first conversational record (prompt is a list of messages), if any."""
    return next((r for r in records if isinstance(r.get("prompt"), list)), None)
