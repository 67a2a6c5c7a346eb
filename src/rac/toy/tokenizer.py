"""A real Hugging Face tokenizer for the embedded model, built with the `tokenizers` library.

It is a byte-level BPE in exactly the format of Qwen2's tokenizer (NFC, Qwen2's pre-tokenizer
regex, byte-level pre-tokenizer and decoder), so ``AutoTokenizer`` loads it as ``Qwen2Tokenizer``
and gets the same ids: the embedded model goes through the same code path as a real
DeepSeek-R1-Distill-Qwen checkpoint, in ``transformers``, llm-compressor or vLLM.

Merges are learned on the corpus's *words* only, so every English word is one token (with its
leading space), numbers are digit by digit (Qwen2's regex splits digits) and symbols stay single
characters: prompts, chains of thought and generic text share one vocabulary.
The chat template follows DeepSeek-R1: the assistant turn opens with ``<think>\\n``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rac.calibrate import generic
from rac.tasks import arith

# Qwen2's pre-tokenizer pattern (transformers' Qwen2Tokenizer rebuilds exactly this).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
EOS, PAD, USER, ASSISTANT = "<|end|>", "<|pad|>", "<|User|>", "<|Assistant|>"
THINK, END_THINK = "<think>", "</think>"
SPECIAL = [EOS, PAD, USER, ASSISTANT]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}" + ASSISTANT + "{{ message['content'] }}" + EOS +
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + THINK + "\n{% endif %}"
)
WORD = re.compile(r" ?\\?[A-Za-z]+")


def _words(seed: int = 0) -> Iterator[str]:
    """Every word of the task and of the generic corpus, as a BPE training 'text'."""
    rng = random.Random(seed)
    for _ in range(5000):
        p = arith.sample_problem(rng)
        yield " ".join(WORD.findall(p.problem + " " + arith.completion_text(p)))
    for doc in generic.corpus(2000, seed):
        yield " ".join(WORD.findall(doc))


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, min_frequency=1, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_words(), trainer)
    # As in R1's tokenizer, the think tags are added tokens but not special: decoding with
    # skip_special_tokens keeps them, and graders find '</think>'.
    tok.add_tokens([AddedToken(THINK, special=False), AddedToken(END_THINK, special=False)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS, pad_token=PAD, unk_token=None,
        additional_special_tokens=[USER, ASSISTANT], chat_template=CHAT_TEMPLATE,
        padding_side="left", model_max_length=1024,
    )
