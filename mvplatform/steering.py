"""Steering: add ``coefficient * vector`` to the output of chosen decoder blocks (PAPER.md section 5).

A :class:`Steering` names the vectors (one per 1-based decoder layer) and how they are applied; the
coefficients come per *row* of the batch and per layer, so one batched forward pass can evaluate
many settings at once (trial batching): row ``b`` is steered at layer ``k`` with
``coefficients[b, k]``, and a zero coefficient leaves that row untouched at that layer.

Only real tokens are steered (padding never), optionally only the prompt or only the generated
tokens. Hooks live inside the :func:`steer` context manager and are removed on exit, exceptions
included. torch is imported inside the functions that run it, so that naming an operator (the
spec's validation, ``mvp list operators``) does not load torch.

>>> import torch
>>> h = torch.tensor([[[1.0, -2.0]]]); v = torch.tensor([1.0, 0.0]); c = torch.tensor([[[2.0]]])
>>> linear_comb(h, v, c).tolist(), piecewise_linear(-h, v, c).tolist()
([[[3.0, -2.0]]], [[[-3.0, 2.0]]])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mvplatform.registry import OPERATORS

if TYPE_CHECKING:
    import torch

    from mvplatform.models import LoadedModel

    # (hidden [B, T, H], vector [H], coefficient [B, T, 1]) -> steered hidden [B, T, H]
    Operator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

POSITIONS = ("all", "prompt", "generated")


@OPERATORS.register("linear_comb", help="h + c v")
def linear_comb(hidden: torch.Tensor, vector: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """h + c v (repe's linear_comb)."""
    return hidden + coefficient * vector


@OPERATORS.register("piecewise_linear", help="h + sign(<h, v>) c v")
def piecewise_linear(hidden: torch.Tensor, vector: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """h + sign(<h, v>) c v: pushes each state further along the side of the direction it is on."""
    sign = (hidden * vector).sum(-1, keepdim=True).sign()
    return hidden + sign * coefficient * vector


@dataclass(frozen=True)
class Steering:
    """What to add where: ``vectors[layer]`` is the ``[H]`` vector added at a 1-based decoder layer."""

    vectors: dict[int, np.ndarray]
    operator: str = "linear_comb"
    normalize: bool = False  # rescale each steered state to its original L2 norm
    positions: str = "all"  # all | prompt | generated

    def __post_init__(self) -> None:
        OPERATORS.get(self.operator)  # unknown names fail here, not inside a hook
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}; got {self.positions!r}")
        if not self.vectors:
            raise ValueError("no steering vectors")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)


class _Positions:
    """Tracks which positions of the current forward pass are real prompt or generated tokens.

    A pre-hook on the whole model sees each call's attention mask (prompt + everything generated
    so far) and the number of new positions, so it knows, for the prefill and every decoding step,
    which positions are padding and which belong to the prompt (index < ``prompt_length``).
    """

    def __init__(self, prompt_length: int | None, positions: str) -> None:
        self.prompt_length, self.positions = prompt_length, positions
        self.offset = 0
        self.active: torch.Tensor | None = None  # [B, T, 1] 1.0 where steering applies

    def before_forward(self, _module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        ids = kwargs.get("input_ids", args[0] if args else None)
        inputs = ids if ids is not None else kwargs.get("inputs_embeds")  # [B, T] ids or [B, T, H] embeddings
        if inputs is None:
            raise ValueError("steering needs the forward pass's input_ids or inputs_embeds; it got neither")
        batch, length = inputs.shape[:2]
        device = inputs.device
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            real = mask[:, -length:].to(device=device, dtype=torch.float32)
            start = mask.shape[1] - length
        else:
            real = torch.ones(batch, length, device=device)
            start = self.offset
        index = torch.arange(start, start + length, device=device)
        prompt_length = self.prompt_length if self.prompt_length is not None else start + length
        if self.positions == "prompt":
            real = real * (index < prompt_length).float()
        elif self.positions == "generated":
            real = real * (index >= prompt_length).float()
        self.offset = start + length
        self.active = real[:, :, None]


@contextmanager
def steer(loaded: LoadedModel, steering: Steering, coefficients: np.ndarray | torch.Tensor,
          prompt_length: int | None = None) -> Iterator[None]:
    """Steer every forward pass of ``loaded.model`` inside the block.

    ``coefficients``: ``[B, len(steering.layers)]``, one row per batch row, columns in
    ``steering.layers`` order. ``prompt_length`` is the (padded) prompt length of a generation,
    needed for ``positions`` prompt/generated; without it every position counts as prompt.
    """
    import torch

    layers = steering.layers
    bad = [layer for layer in layers if not 1 <= layer <= loaded.n_layers]
    if bad:
        raise ValueError(f"steering layers {bad} outside the model's 1..{loaded.n_layers}")
    coefficients = torch.as_tensor(np.asarray(coefficients, dtype=np.float32))
    if coefficients.ndim != 2 or coefficients.shape[1] != len(layers):
        raise ValueError(f"coefficients must be [rows, {len(layers)}]; got {tuple(coefficients.shape)}")
    operator = OPERATORS.get(steering.operator)
    tracker = _Positions(prompt_length, steering.positions)
    dtype = next(loaded.model.parameters()).dtype
    handles = [loaded.model.register_forward_pre_hook(tracker.before_forward, with_kwargs=True)]
    try:
        for column, layer in enumerate(layers):
            vector = torch.as_tensor(steering.vectors[layer], dtype=dtype, device=loaded.device)
            coefficient = coefficients[:, column].to(device=loaded.device, dtype=dtype)
            hook = _block_hook(operator, vector, coefficient, tracker, steering.normalize)
            handles.append(loaded.layers[layer - 1].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _block_hook(operator: Operator, vector: torch.Tensor, coefficient: torch.Tensor, tracker: _Positions,
                normalize: bool) -> Callable[..., Any]:
    import torch

    def hook(_module: torch.nn.Module, _inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output  # [B, T, H]
        if tracker.active is None or tracker.active.shape[0] != hidden.shape[0]:
            raise RuntimeError(f"steering expected {coefficient.shape[0]} rows; the model ran "
                               f"{hidden.shape[0]} (beam search and num_return_sequences are not supported)")
        # With device_map="auto" a block may sit on another GPU than the embeddings.
        here = vector if vector.device == hidden.device else vector.to(hidden.device)
        rows = coefficient if coefficient.device == hidden.device else coefficient.to(hidden.device)
        scale = rows[:, None, None] * tracker.active.to(device=hidden.device, dtype=hidden.dtype)  # [B, T, 1]
        steered = operator(hidden, here, scale)
        if normalize:
            norm = hidden.norm(dim=-1, keepdim=True)
            steered = steered * (norm / steered.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        # Rows, layers and positions with a zero coefficient keep their exact values.
        steered = torch.where(scale != 0, steered, hidden)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook
