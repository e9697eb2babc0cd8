"""The toy tokenizer: a byte-level BPE built as transformers' own ``Qwen2Tokenizer``.

It is a Qwen2.5 tokenizer in everything but its vocabulary: the same pre-tokenizer (Qwen2's split regex,
then byte-level), NFC normalizer, byte-level decoder, special tokens and ChatML chat template. So
``AutoTokenizer.from_pretrained(<toy checkpoint>)``, vLLM (text prompts), TRL, lm-eval or mergekit load it
exactly as l2s does, and any text round-trips (the 256 byte symbols are in the vocabulary).

The vocabulary is the 256 byte symbols plus a merge chain per *word* of the task's texts (a word being
a piece of Qwen2's pre-tokenizer split, such as ``" CF"``, ``"→F"`` or ``"{F"``): written by hand, not
learned, because a BPE learned from the task's texts would depend on word frequencies and might leave a
rare move in two pieces; with one chain per word every cup, move and position is one token. Cups are
letters because Qwen2's regex splits every digit into its own piece (``" 3"`` is two tokens).
"""

from __future__ import annotations

from functools import lru_cache

from l2s.toy import task

PAD, EOS, BOS_CHAT = "<|endoftext|>", "<|im_end|>", "<|im_start|>"

# ChatML as in Qwen2.5, without a default system message.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text of prompts the evaluation may send (the qwen25-math-cot system prompt, role names): whole tokens too.
PROMPT_TEXT = ("system\nuser\nassistant\nPlease reason step by step, and put your final answer within "
               "\\boxed{}.\n")


def corpus() -> list[str]:
    """Every text whose words get a token: the task's fixed phrases and every cup, move and position."""
    texts = [task.PROBLEM.format(start=c, moves=" ".join(task.MOVES)) for c in task.CUPS]
    phrases = [task.COT_HEAD, *task.DOUBLE_CHECKS, task.SHORT_HEAD, task.ANSWER.format(answer="A")]
    texts += phrases + [" " + t for t in phrases] + [PROMPT_TEXT]  # at the start of a response, and inside
    texts += [" " + " ".join([f"start→{c}"] + [f"{m}→{c}" for m in task.MOVES]) for c in task.CUPS]
    texts += [" " + task.ANSWER.format(answer=c) for c in task.CUPS]
    return texts


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one word: merge the best-ranked adjacent pair until none applies."""
    while len(pieces) > 1:
        pairs = [(ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(pieces, pieces[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    return pieces


@lru_cache(maxsize=1)
def vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges): the byte symbols, then for every word of :func:`corpus` in order of appearance
    the merges that join what BPE makes of it so far, left to right, into one token."""
    import regex
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    symbols = bytes_to_unicode()  # GPT-2's byte-to-symbol map, the one ByteLevel uses
    vocab = {symbols[b]: b for b in range(256)}
    ranks: dict[tuple[str, str], int] = {}
    split = regex.compile(PRETOKENIZE_REGEX)
    for text in corpus():
        for word in split.findall(text):
            pieces = _bpe([symbols[b] for b in word.encode("utf-8")], ranks)
            prefix = pieces[0]
            for piece in pieces[1:]:
                ranks[prefix, piece] = len(ranks)
                prefix += piece
                vocab.setdefault(prefix, len(vocab))
    return vocab, list(ranks)


def build_tokenizer():
    """The toy ``Qwen2Tokenizer``: pad ``<|endoftext|>``, eos ``<|im_end|>``, ChatML template, left padding."""
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    vocab, merges = vocabulary()
    tok = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), unk_token=None, eos_token=EOS, pad_token=PAD,
                         additional_special_tokens=[BOS_CHAT], model_max_length=512, padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok
