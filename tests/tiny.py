"""Tiny byte-level BPE tokenizers trained on the spot: no network, no downloads.

Shared by the test fixtures (``tests/conftest.py``) and the benchmarks' ``--quick`` models
(``benchmarks/_common.py``), each with its own corpus.
"""

from __future__ import annotations

from collections.abc import Sequence

CHAT_TEMPLATE = "{% for m in messages %}<s>[INST] {{ m['content'] }} [/INST] {% endfor %}"


def train_tokenizer(corpus: Sequence[str], vocab_size: int = 400):
    """A fast tokenizer with <pad>=0, <s>=1, </s>=2, <unk>=3 and a one-line chat template."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(list(corpus) * 20, vocab_size=vocab_size, min_frequency=1,
                                special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
