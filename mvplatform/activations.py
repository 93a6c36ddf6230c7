"""Hidden states of the last real token at every decoder layer, in one forward pass per batch.

Inputs are sorted by length before batching so padding stays small; the state read for each row is
its last *real* token whatever the tokenizer's padding side, and position ids follow the attention
mask, so left and right padding give the same vectors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from mvplatform.models import LoadedModel

Progress = Callable[[int], None]  # called with the number of inputs just processed


@torch.inference_mode()
def last_token_states(
    loaded: LoadedModel,
    texts: list[str],
    layers: list[int],
    batch_size: int = 16,
    token: int = -1,
    progress: Progress | None = None,
) -> np.ndarray:
    """``[len(texts), len(layers), hidden]`` float32 states; ``layers`` are 1-based decoder layers.

    ``token=-1`` reads the last real token, ``-2`` the one before it, and so on.
    """
    tokenizer = loaded.tokenizer
    prompts = [loaded.prompter.format(text) for text in texts]
    encoded = tokenizer(prompts, add_special_tokens=loaded.prompter.add_special_tokens)["input_ids"]
    too_short = [i for i, ids in enumerate(encoded) if len(ids) < -token]
    if too_short:
        raise ValueError(f"input {too_short[0]} has fewer than {-token} tokens; use a token closer to the end")
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]), reverse=True)
    base = loaded.model.base_model  # skips the LM head: hidden states only
    takes_positions = "position_ids" in inspect.signature(base.forward).parameters
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
        input_ids = batch["input_ids"].to(loaded.device)  # [B, T]
        mask = batch["attention_mask"].to(loaded.device)  # [B, T], 1 = real token
        kwargs = {"input_ids": input_ids, "attention_mask": mask, "output_hidden_states": True, "use_cache": False}
        if takes_positions:
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = base(**kwargs).hidden_states  # (n_layers + 1) x [B, T, H]; index 0 = embeddings
        # Position of the |token|-th last real token in each row, for either padding side.
        real_after = mask.flip(-1).cumsum(-1).flip(-1)  # [B, T] real tokens at or after each position
        index = ((real_after == -token) & (mask == 1)).int().argmax(-1)  # [B]
        rows_t = torch.arange(len(rows), device=input_ids.device)
        states = torch.stack([hidden[layer][rows_t, index] for layer in layers], dim=1)  # [B, L, H]
        if out is None:
            out = np.empty((len(prompts), len(layers), states.shape[-1]), dtype=np.float32)
        out[rows] = states.float().cpu().numpy()
        if progress is not None:
            progress(len(rows))
    assert out is not None, "no texts"
    return out
