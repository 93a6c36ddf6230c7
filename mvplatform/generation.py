"""Batched (optionally steered) generation with the model's chat template.

Rows are generated in batches of ``batch_size`` with left padding; each row may carry its own
steering coefficients (:mod:`mvplatform.steering`), which is how many search trials share one
generation. Rows are grouped by prompt length, so rows of the same instruction (one per trial)
sit together and pad identically: a trial evaluated in a batch of trials gives the tokens it gives
alone.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from mvplatform.batching import encode, padded_batches
from mvplatform.models import LoadedModel
from mvplatform.spec import GenerationSpec
from mvplatform.steering import Steering, steer


@dataclass
class Generations:
    texts: list[str]
    new_tokens: int = 0  # tokens generated over all rows (up to each row's end of sequence)
    seconds: float = 0.0
    forward_batches: int = 0
    per_row_tokens: list[int] = field(default_factory=list)


@torch.inference_mode()
def generate(loaded: LoadedModel, instructions: list[str], settings: GenerationSpec,
             steering: Steering | None = None, coefficients: np.ndarray | None = None) -> Generations:
    """One response per instruction; ``coefficients[i]`` steers row ``i`` (``[rows, layers]``)."""
    if steering is not None and (coefficients is None or len(coefficients) != len(instructions)):
        raise ValueError("steered generation needs one coefficient row per instruction")
    start = time.perf_counter()
    tokenizer = loaded.tokenizer
    prompts = [loaded.prompter.format(text) for text in instructions]
    encoded = encode(tokenizer, prompts, loaded.prompter.add_special_tokens)
    texts: list[str] = [""] * len(prompts)
    per_row = [0] * len(prompts)
    eos = _eos_ids(loaded)
    out = Generations(texts, per_row_tokens=per_row)
    # Longest first, stable: equal prompts (one per trial) stay adjacent and pad alike.
    batches = padded_batches(tokenizer, encoded, settings.batch_size, "left", loaded.device)
    for index, batch in enumerate(batches):
        rows, input_ids = batch.rows, batch.input_ids  # [B, T], left-padded
        context = (steer(loaded, steering, coefficients[rows], prompt_length=input_ids.shape[1])
                   if steering is not None else nullcontext())
        sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
            if settings.do_sample else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if settings.do_sample:
            torch.manual_seed(settings.seed + index * settings.batch_size)  # the batch's first row
        with context:
            output = loaded.model.generate(input_ids=input_ids, attention_mask=batch.attention_mask,
                                           max_new_tokens=settings.max_new_tokens,
                                           pad_token_id=tokenizer.pad_token_id, **sampling)
        new = output[:, input_ids.shape[1]:].cpu()
        for row, tokens in zip(rows, new.tolist()):
            length = next((j + 1 for j, token in enumerate(tokens) if token in eos), len(tokens))
            per_row[row] = length
            texts[row] = tokenizer.decode(tokens[:length], skip_special_tokens=True).strip()
        out.forward_batches += 1
    out.new_tokens = sum(per_row)
    out.seconds = time.perf_counter() - start
    return out


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids = loaded.model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids]
    ids = [i for i in ids if i is not None]
    if loaded.tokenizer.eos_token_id is not None:
        ids.append(loaded.tokenizer.eos_token_id)
    return set(ids)
