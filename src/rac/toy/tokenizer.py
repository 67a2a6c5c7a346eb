"""A real Hugging Face tokenizer for the embedded model, built with the `tokenizers` library.

Word-level for English (a word carries its leading space, as in GPT-style tokenizers), digit by
digit for numbers everywhere, so prompts, chains of thought and generic text share one vocabulary.
The chat template follows DeepSeek-R1: the assistant turn opens with ``<think>\\n``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rac.toy import arith, generic

PAD, EOS, UNK, USER, ASSISTANT = "<|pad|>", "<|end|>", "<|unk|>", "<|User|>", "<|Assistant|>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL = [PAD, EOS, UNK, USER, ASSISTANT]
# A word with its optional leading space and backslash (\boxed), one digit, a newline, a lone
# space, or one symbol.
PIECE = r" ?\\?[A-Za-z']+|[0-9]|\n| |[^\sA-Za-z0-9]"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "{{ message['content'] }}" + EOS +
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + THINK + "\n{% endif %}"
)


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(PIECE), behavior="isolated")


def _vocabulary_sample(seed: int = 0) -> Iterable[str]:
    rng = random.Random(seed)
    for _ in range(20000):
        p = arith.sample_problem(rng)
        yield p.problem
        yield arith.completion_text(p)
    yield from generic.corpus(3000, seed)


def build_tokenizer() -> PreTrainedTokenizerFast:
    pre = _pre_tokenizer()
    pieces: set[str] = set("0123456789")
    for text in _vocabulary_sample():
        pieces.update(piece for piece, _ in pre.pre_tokenize_str(text))
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for piece in sorted(pieces):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(SPECIAL)
    tok.add_tokens([THINK, END_THINK])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
        chat_template=CHAT_TEMPLATE, padding_side="left", model_max_length=1024,
    )
