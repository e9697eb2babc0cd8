"""A word-level tokenizer for the toy task, saved as a standard ``PreTrainedTokenizerFast``.

Every word of the task's closed vocabulary is one token (one token per number, move and state),
whitespace separates words, and the chat template is Qwen2.5's ChatML, so that transformers
``generate``, TRL and vLLM use it like any Qwen tokenizer. A hand-built word-level vocabulary
because a learned BPE would split moves like ``3<>7`` into several tokens.
"""

from __future__ import annotations

from l2s.toy import task

PAD, EOS, BOS_CHAT, UNK = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<unk>"
SPECIAL = [PAD, BOS_CHAT, EOS, UNK]

# ChatML as in Qwen2.5, without a default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Words of prompts the evaluation may send (the qwen25-math-cot system prompt), so they are not <unk>.
PROMPT_TEXT = ("system user assistant Please reason step by step, and put your final answer "
               "within \\boxed{}.")


def vocabulary() -> list[str]:
    words: list[str] = list(SPECIAL)
    texts = [task.PROBLEM_HEAD, task.PROBLEM_TAIL, task.COT_HEAD, task.DOUBLE_CHECK, task.SHORT_HEAD,
             task.ANSWER, PROMPT_TEXT, ","]
    pieces = [w for t in texts for w in t.split()]
    pieces += task.CUPS + task.MOVES + [task.PASS] + task.STATES + task.ANSWERS
    for w in pieces:
        if "{" in w and w not in task.ANSWERS and w != "\\boxed{}.":
            continue  # format placeholders such as {start}
        if w not in words:
            words.append(w)
    return words


def build_tokenizer():
    """A ``PreTrainedTokenizerFast`` over :func:`vocabulary`, with pad/eos and the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, pad_token=PAD, eos_token=EOS,
        additional_special_tokens=[BOS_CHAT], model_max_length=512, padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
