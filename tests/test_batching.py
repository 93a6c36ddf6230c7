"""The one padded-batching helper: order, padding side, position ids, and the tokenizer left as found."""

import pytest
import torch

from mvplatform.batching import PaddedBatch, padded_batches


def test_batches_go_longest_first_and_keep_equal_lengths_in_input_order(tiny_tokenizer):
    encoded = [[5], [5, 6, 7], [5, 6], [8, 9, 10], [7]]
    batches = list(padded_batches(tiny_tokenizer, encoded, 2, "left"))
    assert [b.rows for b in batches] == [[1, 3], [2, 0], [4]]  # lengths 3, 3 | 2, 1 | 1 (stable on ties)
    assert [tuple(b.input_ids.shape) for b in batches] == [(2, 3), (2, 2), (1, 1)]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_and_position_ids_count_real_tokens(tiny_tokenizer, side):
    pad = tiny_tokenizer.pad_token_id
    before = tiny_tokenizer.padding_side
    (batch,) = padded_batches(tiny_tokenizer, [[5, 6, 7], [8]], 2, side)
    if side == "left":
        assert batch.input_ids.tolist() == [[5, 6, 7], [pad, pad, 8]]
        assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
        assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    else:
        assert batch.input_ids.tolist() == [[5, 6, 7], [8, pad, pad]]
        assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
        assert batch.position_ids.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert tiny_tokenizer.padding_side == before  # restored after each batch


def test_no_side_keeps_the_tokenizers_own(tiny_tokenizer):
    before = tiny_tokenizer.padding_side
    try:
        tiny_tokenizer.padding_side = "right"
        (batch,) = padded_batches(tiny_tokenizer, [[5, 6], [8]], 4)
        assert batch.attention_mask.tolist() == [[1, 1], [1, 0]]
    finally:
        tiny_tokenizer.padding_side = before


def test_forward_kwargs_add_position_ids_only_where_the_forward_takes_them():
    batch = PaddedBatch([0], torch.tensor([[0, 5]]), torch.tensor([[0, 1]]))

    def with_positions(input_ids, attention_mask, position_ids=None, use_cache=True): ...

    def without(input_ids, attention_mask, use_cache=True): ...

    kwargs = batch.forward_kwargs(with_positions, use_cache=False)
    assert kwargs["position_ids"].tolist() == [[0, 0]] and kwargs["use_cache"] is False
    assert "position_ids" not in batch.forward_kwargs(without)
