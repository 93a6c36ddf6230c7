"""Padded batches of tokenized prompts: the one way the model-running modules batch text.

Prompts are sorted longest first (stable, so equal prompts stay adjacent and pad alike, and each
batch holds prompts of similar length), cut into batches and padded on the side asked: ``left``
puts every row's last real token in the last column (what generation and next-token logits
need); ``None`` keeps the tokenizer's own side (a reader that finds tokens through the mask works
with either). Position ids count real tokens only, so a padded row sees the positions it sees alone.

>>> from transformers import PreTrainedTokenizerFast
>>> from tokenizers import Tokenizer, models
>>> tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "a": 1}, "<pad>")),
...                               pad_token="<pad>")
>>> [(b.rows, b.input_ids.tolist(), b.position_ids.tolist()) for b in padded_batches(tok, [[1], [1, 1, 1]], 2, "left")]
[([1, 0], [[1, 1, 1], [0, 0, 1]], [[0, 1, 2], [0, 0, 0]])]
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class PaddedBatch:
    rows: list[int]  # each row's index in the input list
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T], 1 = real token

    @property
    def position_ids(self) -> torch.Tensor:
        """``[B, T]`` positions counting real tokens only (padding at 0), for either padding side."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def forward_kwargs(self, forward: Callable[..., Any], **extra: Any) -> dict[str, Any]:
        """``input_ids``, ``attention_mask`` and, when ``forward`` takes them, position ids; plus ``extra``."""
        kwargs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, **extra}
        if "position_ids" in inspect.signature(forward).parameters:
            kwargs["position_ids"] = self.position_ids
        return kwargs


def encode(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:
    """Token ids of every prompt, unpadded."""
    ids: list[list[int]] = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    return ids


def padded_batches(tokenizer: PreTrainedTokenizerBase, encoded: Sequence[list[int]], batch_size: int,
                   side: Literal["left", "right"] | None = None,
                   device: torch.device | str = "cpu") -> Iterator[PaddedBatch]:
    """Batches of ``encoded`` (longest first), padded on ``side`` (None: the tokenizer's), on ``device``.

    The tokenizer's own padding side is restored after each batch, so it is never left changed.
    """
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        previous = tokenizer.padding_side
        try:
            if side is not None:
                tokenizer.padding_side = side
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
        finally:
            tokenizer.padding_side = previous
        yield PaddedBatch(rows, batch["input_ids"].to(device), batch["attention_mask"].to(device))
