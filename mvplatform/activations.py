"""Hidden states of the last real token at every decoder layer, in one forward pass per batch.

Inputs are sorted by length before batching so padding stays small; the state read for each row is
its last *real* token whatever the tokenizer's padding side, and position ids follow the attention
mask, so left and right padding give the same vectors.

Two read points (``extract.read``, docs/fidelity.md): ``hidden_states``, the model's
``output_hidden_states`` (the paper's and its authors' code's: the last layer's entry is *after*
the final norm), and ``block_output``, each decoder block's output (where steering writes; equal
to ``hidden_states`` at every layer but the last). Either way the norm of the block output at the
same token is kept too: steering's ``state_norm`` scale must be measured where steering writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mvplatform.batching import encode, padded_batches
from mvplatform.models import LoadedModel

Progress = Callable[[int], None]  # called with the number of inputs just processed
READ_POINTS = ("hidden_states", "block_output")


@dataclass(frozen=True)
class TokenStates:
    """What one pass over the texts reads: the states at the read point and the steering-point norms."""

    states: np.ndarray  # [texts, layers, hidden] float32 at the read point
    write_norms: np.ndarray  # [texts, layers] float32 L2 norm of the block output (steering's write point)


def last_token_states(
    loaded: LoadedModel,
    texts: list[str],
    layers: list[int],
    batch_size: int = 16,
    token: int = -1,
    progress: Progress | None = None,
    read: str = "hidden_states",
) -> np.ndarray:
    """``[len(texts), len(layers), hidden]`` float32 states; ``layers`` are 1-based decoder layers.

    ``token=-1`` reads the last real token, ``-2`` the one before it, and so on.
    """
    return last_token_reads(loaded, texts, layers, batch_size, token, progress, read).states


@torch.inference_mode()
def last_token_reads(
    loaded: LoadedModel,
    texts: list[str],
    layers: list[int],
    batch_size: int = 16,
    token: int = -1,
    progress: Progress | None = None,
    read: str = "hidden_states",
) -> TokenStates:
    """States at ``read`` and the block-output norms of the same tokens, in one forward pass per batch."""
    if read not in READ_POINTS:
        raise ValueError(f"read must be one of {READ_POINTS}; got {read!r}")
    prompts = [loaded.prompter.format(text) for text in texts]
    encoded = encode(loaded.tokenizer, prompts, loaded.prompter.add_special_tokens)
    too_short = [i for i, ids in enumerate(encoded) if len(ids) < -token]
    if too_short:
        raise ValueError(f"input {too_short[0]} has fewer than {-token} tokens; use a token closer to the end")
    # skips the LM head: hidden states only (typed Tensor | Module by nn.Module.__getattr__; a module here)
    base: torch.nn.Module = loaded.model.base_model  # type: ignore[assignment]
    # Each block's output at the read token, gathered inside its hook (so no [B, T, H] copy is kept).
    picked: dict[int, torch.Tensor] = {}
    where: dict[str, torch.Tensor] = {}
    handles = [loaded.layers[layer - 1].register_forward_hook(_gather_hook(layer, picked, where)) for layer in layers]
    states_out: np.ndarray | None = None
    norms_out = np.empty((len(prompts), len(layers)), dtype=np.float32)
    try:
        for batch in padded_batches(loaded.tokenizer, encoded, batch_size, device=loaded.device):
            rows, mask = batch.rows, batch.attention_mask  # mask [B, T], 1 = real token
            # Position of the |token|-th last real token in each row, for either padding side.
            real_after = mask.flip(-1).cumsum(-1).flip(-1)  # [B, T] real tokens at or after each position
            where["index"] = ((real_after == -token) & (mask == 1)).int().argmax(-1)  # [B]
            picked.clear()
            output = base(**batch.forward_kwargs(base.forward, use_cache=False,
                                                 output_hidden_states=read == "hidden_states"))
            blocks = torch.stack([picked[layer] for layer in layers], dim=1)  # [B, L, H] block outputs
            if read == "hidden_states":  # (n_layers + 1) x [B, T, H]; index 0 = embeddings
                hidden, index = output.hidden_states, where["index"]
                rows_t = torch.arange(len(rows), device=index.device)
                states = torch.stack([hidden[layer][rows_t.to(hidden[layer].device), index.to(hidden[layer].device)]
                                      .to(index.device) for layer in layers], dim=1)
            else:
                states = blocks
            if states_out is None:
                states_out = np.empty((len(prompts), len(layers), states.shape[-1]), dtype=np.float32)
            states_out[rows] = states.float().cpu().numpy()
            norms_out[rows] = blocks.float().norm(dim=-1).cpu().numpy()
            if progress is not None:
                progress(len(rows))
    finally:
        for handle in handles:
            handle.remove()
    assert states_out is not None, "no texts"
    return TokenStates(states_out, norms_out)


def _gather_hook(layer: int, picked: dict[int, torch.Tensor], where: dict[str, torch.Tensor]) -> Callable[..., None]:
    """A forward hook that keeps the block output of each row at ``where["index"]`` (on the first device)."""

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # [B, T, H]
        index = where["index"].to(hidden.device)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        picked[layer] = hidden[rows, index].to(where["index"].device)

    return hook
