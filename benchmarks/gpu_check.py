"""GPU check: mvp's device paths proven and its speed measured on real model shapes, in one command.

    python -m benchmarks.gpu_check                          # on a GPU (estimated 4-6 min on one H200; at most 8)
    python -m benchmarks.gpu_check --quick --threads 1      # CPU rehearsal: tiny shapes, same code, seconds

Written for a borrowed GPU machine that has torch, transformers and accelerate but none of ray,
mlflow, optuna, gguf or lang2vec, no network and no model weights (benchmarks/README.md, "GPU
check", says how to run it through the device tool). So this script blocks those five modules
before importing mvp, which makes the CPU rehearsal fail exactly where the device would, and it
builds its models instead of loading them: random weights from the real configs of Gemma 3 270M,
SmolLM2-135M and a LLaMA-2-7B-shaped LLaMA, created directly on the device, with the tiny tokenizer
the tests train (speed depends on the shapes, not the weights; every generation runs a fixed
number of tokens). The models become :class:`LoadedModel` objects as ``load_model`` makes them,
so mvp's own ``last_token_states``, ``generate``, ``steer`` and ``Controller`` run on them.

Checks (PASS/FAIL each; exit 1 if one fails):

- ``bf16_extraction``: per model, mvp's extraction in bfloat16 against float32 on the same
  weights (cast), cosine of every input's state at every layer; the worst must be >= 0.99;
- ``hook_devices``: on a SmolLM2-shaped float32 model loaded by mvp's ``load_model`` with
  ``device_map: auto`` and accelerate told to keep only about half the blocks on the GPU (the rest
  offloaded to CPU memory), every steered block's output stays on that block's execution device,
  and steering one block adds exactly ``coefficient x vector`` there (checked on a GPU-resident and
  on an offloaded block);
- ``device_map_tokens``: the steered greedy tokens of that split model equal a plain load's (and
  differ from the unsteered ones, so the check has teeth).

On the CPU rehearsal there is no GPU to split over: the same code splits the blocks between CPU
memory and disk offload instead (accelerate's same hooks, every block run on the CPU), and the
output says so.

Measurements, each a ratio of two timings interleaved in the same run (``benchmarks/_common.py``):
extraction vs a bare forward with hidden states, and its peak memory; steered vs unsteered
generation tokens/s; trial batching, 8 and 16 settings in one ``Controller.evaluate`` vs one
setting per call (goal >= 3x at 8); generation tokens/s and peak GPU memory against batch size.
The JSON (``benchmarks/results/gpu/``) names the GPU.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import re
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from benchmarks import _common as c

NAME = "gpu_check"
ABSENT_ON_DEVICE = ("ray", "mlflow", "optuna", "gguf", "lang2vec")
COSINE_FLOOR = 0.99

# Real configs. gemma3-270m and smollm2-135m: the packaged GGUF files' metadata (gemma3.* keys of
# gemma-3-270m-q4_k_m.gguf, llama.* keys of SmolLM2-135M-Instruct.Q4_1.gguf); both tie the LM head to
# the embeddings (neither file has an output.weight tensor). llama2-7b-shape: meta-llama/Llama-2-7b-hf's
# config.json (hidden 4096, 32 layers, 32 heads, MLP 11008, vocabulary 32000, untied head). RoPE bases
# and the like are left at transformers' defaults: they do not change the cost.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": ("llama", {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
                               "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
                               "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}),
    "gemma3-270m": ("gemma3_text", {"hidden_size": 640, "num_hidden_layers": 18, "num_attention_heads": 4,
                                    "num_key_value_heads": 1, "head_dim": 256, "intermediate_size": 2048,
                                    "vocab_size": 262144, "sliding_window": 512, "max_position_embeddings": 32768,
                                    "rms_norm_eps": 1e-6, "tie_word_embeddings": True}),
    "llama2-7b-shape": ("llama", {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                                  "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32000,
                                  "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
                                  "tie_word_embeddings": False}),
}
# --quick: the same architectures and head layouts, shrunk to run in seconds on one CPU thread.
QUICK_SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "smollm2-135m": ("llama", {"hidden_size": 48, "num_hidden_layers": 6, "num_attention_heads": 3,
                               "num_key_value_heads": 1, "intermediate_size": 96, "vocab_size": 512,
                               "max_position_embeddings": 512, "tie_word_embeddings": True}),
    "gemma3-270m": ("gemma3_text", {"hidden_size": 64, "num_hidden_layers": 6, "num_attention_heads": 2,
                                    "num_key_value_heads": 1, "head_dim": 32, "intermediate_size": 128,
                                    "vocab_size": 512, "sliding_window": 16, "max_position_embeddings": 512,
                                    "tie_word_embeddings": True}),
    "llama2-7b-shape": ("llama", {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                                  "num_key_value_heads": 4, "intermediate_size": 172, "vocab_size": 512,
                                  "max_position_embeddings": 512, "tie_word_embeddings": False}),
}


# ---------------------------------------------------------------------------------------------
# Setup


def block_absent_modules() -> None:
    """Make ``import ray`` (and the others the device lacks) fail here as it fails there.

    A ``None`` in ``sys.modules`` makes the import raise ``ModuleNotFoundError`` and
    ``importlib.util.find_spec`` answer None, which is how transformers sees a missing package.
    """
    for name in ABSENT_ON_DEVICE:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]


def source_sha1() -> str:
    """Fingerprint of the code that ran (the device gets a copy of the tree without git)."""
    digest = hashlib.sha1()
    for path in sorted([*(c.ROOT / "mvplatform").glob("*.py"), *(c.ROOT / "benchmarks").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def build_model(name: str, quick: bool, tokenizer, device: torch.device, dtype: torch.dtype):
    """A random model of ``name``'s real shape, created on ``device`` (a 7B init takes seconds on a GPU).

    The tokenizer's vocabulary is smaller than the model's: output rows past it are zeroed so greedy
    decoding picks tokens the tokenizer can write (random logits of 400 real tokens have a positive
    maximum), while the LM head keeps its real size and cost.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    arch, shape = (QUICK_SHAPES if quick else SHAPES)[name]
    config = AutoConfig.for_model(arch, pad_token_id=0, bos_token_id=1, eos_token_id=2, **shape)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        model.get_output_embeddings().weight[len(tokenizer):] = 0
    model.generation_config.eos_token_id = None  # equal work: every row generates max_new_tokens
    return model.eval()


def as_loaded(name: str, model, tokenizer, device: torch.device):
    """A :class:`LoadedModel` as ``load_model`` builds one (chat prompts: the tiny tokenizer has a template)."""
    from mvplatform.models import LoadedModel, decoder_layers, make_prompter

    return LoadedModel(name, model, tokenizer, make_prompter("chat", tokenizer, name), decoder_layers(model), device)


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def free() -> None:
    """Return freed model memory to the device before the next model is built."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_extra_mb(run: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """Peak memory a call adds: GPU ``max_memory_allocated`` above the level before, or CPU peak RSS.

    The CPU figure is taken in this process, after earlier work has grown the allocator's pools, so
    it is kept for the record only (benchmarks/extraction.py measures CPU memory in fresh processes).
    """
    if device.type == "cuda":
        synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        synchronize()
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda_max_memory_allocated"
    with c.PeakRSS() as peak:
        run()
    return peak.extra_mb, "cpu_peak_rss_in_process"


def vectors_for(loaded, texts: list[str], seed: int = 0):
    """Random unit directions per layer, with the model's own mean state norms (as ``recognise`` saves),
    so a strength of 1 adds a typical state's length, as in a real search."""
    from mvplatform.activations import last_token_states
    from mvplatform.concepts import ConceptVectors

    layers = list(range(1, loaded.n_layers + 1))
    states = last_token_states(loaded, texts, layers, batch_size=16)
    norms = np.linalg.norm(states, axis=-1).mean(0)
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(len(layers), states.shape[-1]))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return ConceptVectors(layers, directions, "cluster_mean", norms)


def draw_settings(n_layers: int, count: int, seed: int = 0):
    """``count`` distinct steered settings: windows of 1-4 layers anywhere, strengths +-0.25 .. +-1.

    (benchmarks/trial_batching.py draws from mvp's search space, whose module needs Optuna, which the
    device lacks; this draws from the same kind of space.)"""
    import random

    from mvplatform.control import Setting

    rng = random.Random(seed)
    chosen: list[Setting] = []
    while len(chosen) < count:
        s = Setting(rng.randint(1, n_layers), rng.randint(1, min(4, n_layers)),
                    rng.choice([-1.0, -0.5, -0.25, 0.25, 0.5, 1.0]))
        if s not in chosen:
            chosen.append(s)
    return chosen


# ---------------------------------------------------------------------------------------------
# Checks


def check_bf16_extraction(loaded, texts: list[str]) -> dict[str, Any]:
    """mvp's extraction in bf16 vs float32 on the same weights: cosine per input and layer.

    Casts ``loaded.model``'s weights to bfloat16 in place (what the measurements then use). Only the
    parameters: buffers such as the rotary frequencies stay float32, as ``from_pretrained(dtype=bfloat16)``
    leaves them (``model.to(bfloat16)`` would round them too and overstate the error)."""
    from mvplatform.activations import last_token_states

    layers = list(range(1, loaded.n_layers + 1))
    reference = last_token_states(loaded, texts, layers, batch_size=16)
    with torch.no_grad():
        for parameter in loaded.model.parameters():  # tied weights are one parameter: cast once
            parameter.data = parameter.data.to(torch.bfloat16)
    low = last_token_states(loaded, texts, layers, batch_size=16)
    cosine = (reference * low).sum(-1) / (np.linalg.norm(reference, axis=-1) * np.linalg.norm(low, axis=-1))
    per_layer = cosine.min(0)  # worst input at each layer
    relative = np.linalg.norm(low - reference, axis=-1) / np.linalg.norm(reference, axis=-1)
    worst = float(per_layer.min())
    return {"passed": bool(worst >= COSINE_FLOOR), "worst_cosine": worst,
            "worst_layer": int(layers[int(per_layer.argmin())]), "min_cosine_per_layer": per_layer.tolist(),
            "median_relative_error": float(np.median(relative)), "floor": COSINE_FLOOR, "inputs": len(texts)}


def split_memory(model) -> int:
    """GPU bytes for accelerate so that about half the decoder blocks stay on the GPU.

    It reserves room on GPU 0 for the largest offloaded piece and the embeddings sit there too, so the
    budget is the embeddings, half the blocks, one block more and the buffers (rotary tables).
    """
    from mvplatform.models import decoder_layers

    def size(module) -> int:
        return sum(p.numel() * p.element_size() for p in module.parameters())

    blocks = decoder_layers(model)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # accelerate keeps them there too
    return size(model.get_input_embeddings()) + size(blocks) // 2 + size(blocks[0]) + 2 * buffers + 4096


def block_execution_device(block) -> torch.device:
    """Where a block computes: accelerate's hook names it for offloaded blocks; else its weights' device."""
    hook = getattr(block, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else next(block.parameters()).device


def check_device_map(quick: bool, tokenizer, texts: list[str], instructions: list[str], folder: Path) -> dict[str, Any]:
    """``device_map: auto`` with about half the blocks offloaded vs a plain load, both through ``load_model``."""
    from transformers import AutoModelForCausalLM

    from mvplatform.generation import generate
    from mvplatform.models import load_model
    from mvplatform.spec import GenerationSpec, ModelSpec
    from mvplatform.steering import Steering, steer

    model = build_model("smollm2-135m", quick, tokenizer, torch.device("cpu"), torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    gpu = torch.cuda.is_available()
    # On a GPU: half the blocks in GPU memory, the rest in CPU memory (run on the GPU). On the CPU
    # rehearsal: half in CPU memory, the rest offloaded to disk (run on the CPU), through the same hooks.
    budget = split_memory(model)
    max_memory: dict[Any, int] = {0: budget, "cpu": 64 * 2**30} if gpu else {"cpu": budget}
    offload = {} if gpu else {"offload_folder": str(folder.parent / "offload")}
    del model
    free()

    plain = load_model(ModelSpec(name=str(folder), device="auto", dtype="float32", prompt="chat"))
    # mvp's load_model with device_map auto; accelerate also told how little GPU memory to use, so that
    # the blocks split (load_model passes no max_memory: on a real 7B+ model the GPU's size splits it).
    original = AutoModelForCausalLM.from_pretrained
    capped = lambda *a, **k: original(*a, max_memory=max_memory, **offload, **k)  # noqa: E731
    with mock.patch.object(AutoModelForCausalLM, "from_pretrained", capped):
        split = load_model(ModelSpec(name=str(folder), device="auto", dtype="float32", prompt="chat",
                                     device_map="auto"))
    for loaded in (plain, split):
        loaded.model.generation_config.eos_token_id = None
    placement = dict(getattr(split.model, "hf_device_map", {}) or {})
    where = [block_execution_device(b) for b in split.layers]
    offloaded = [i + 1 for i, key in enumerate(f"model.layers.{i}" for i in range(split.n_layers))
                 if placement.get(key) in (("cpu", "disk") if gpu else ("disk",))]
    resident = [k for k in range(1, split.n_layers + 1) if k not in offloaded]
    is_split = bool(offloaded) and bool(resident)

    # Hooks: steer every layer; an observer after mvp's hook records each block's output device.
    vectors = vectors_for(plain, texts[:16])
    hidden = split.model.config.hidden_size
    every = Steering({k: vectors.directions[k - 1].astype(np.float32) * float(vectors.norms[k - 1])
                      for k in range(1, split.n_layers + 1)})
    batch = tokenizer.pad({"input_ids": tokenizer([split.prompter.format(t) for t in instructions[:4]],
                                                   add_special_tokens=False)["input_ids"]}, return_tensors="pt")
    ids, mask = batch["input_ids"].to(split.device), batch["attention_mask"].to(split.device)
    seen: dict[int, torch.Tensor] = {}

    def observe(k: int):
        def hook(_module, _inputs, output):
            seen[k] = (output[0] if isinstance(output, tuple) else output).detach()
        return hook

    def forward(loaded, steering=None, coefficients=None) -> dict[int, torch.Tensor]:
        seen.clear()
        context = steer(loaded, steering, coefficients) if steering is not None else nullcontext()
        with torch.inference_mode(), context:
            handles = [b.register_forward_hook(observe(k)) for k, b in enumerate(loaded.layers, 1)]
            try:
                loaded.model(input_ids=ids, attention_mask=mask)
            finally:
                for h in handles:
                    h.remove()
        return dict(seen)

    outputs = forward(split, every, np.full((len(ids), split.n_layers), 0.5, dtype=np.float32))
    device_mismatch = [k for k, out in outputs.items() if out.device != where[k - 1]]
    probes = sorted({resident[0] if resident else 1, offloaded[0] if offloaded else split.n_layers})
    unsteered = forward(split)
    deltas = {}
    for k in probes:
        coefficient = 0.75
        one = Steering({k: every.vectors[k]})
        steered = forward(split, one, np.full((len(ids), 1), coefficient, dtype=np.float32))[k]
        expected = coefficient * torch.as_tensor(every.vectors[k], device=steered.device)
        real = mask.to(steered.device).bool()
        added = (steered - unsteered[k])[real]
        error = float((added - expected).abs().max() / expected.abs().max())
        untouched = float((steered - unsteered[k])[~real].abs().max() / expected.abs().max()) if (~real).any() else 0.0
        deltas[k] = {"device": str(steered.device), "max_relative_error": error, "padding_change": untouched,
                     "offloaded": k in offloaded}
    hooks_ok = not device_mismatch and all(d["max_relative_error"] < 1e-4 and d["padding_change"] < 1e-4
                                           for d in deltas.values())

    # Tokens: steered greedy generation, split vs plain; and steered vs unsteered (the check has teeth).
    rows = instructions[:8]
    settings = GenerationSpec(max_new_tokens=8 if quick else 16, batch_size=len(rows))
    window = list(range(max(1, split.n_layers // 3), max(1, split.n_layers // 3) + 4))
    steering = Steering({k: every.vectors[k] for k in window})
    # Strength 8 (8 state norms per layer): a random model's greedy tokens barely move at 1 (seen on the
    # real SmolLM2 shape), and the check needs steering that visibly acts. Odd rows steered, even rows not.
    coefficients = np.full((len(rows), len(window)), 8.0, dtype=np.float32)
    coefficients[::2] = 0.0
    tokens = {"plain": generate(plain, rows, settings, steering, coefficients).texts,
              "split": generate(split, rows, settings, steering, coefficients).texts,
              "unsteered": generate(plain, rows, settings).texts}
    same = tokens["plain"] == tokens["split"]
    steered_rows = range(1, len(rows), 2)
    changed = sum(tokens["plain"][i] != tokens["unsteered"][i] for i in steered_rows)
    unchanged = all(tokens["plain"][i] == tokens["unsteered"][i] for i in range(0, len(rows), 2))
    del plain, split
    free()
    note = None if gpu else ("CPU rehearsal: no GPU, so the split is between CPU memory and disk offload, every "
                             "block run on the CPU; the code path (load_model with device_map auto, accelerate's "
                             "offload hooks, steering, generation) is the one the GPU run takes")
    return {
        "hook_devices": {"passed": bool(hooks_ok and is_split), "split": is_split, "blocks_offloaded": offloaded,
                         "blocks_resident": resident, "device_mismatches": device_mismatch,
                         "probes": deltas, "max_memory_gpu_bytes": max_memory.get(0), "note": note,
                         "hidden_size": hidden},
        "device_map_tokens": {"passed": bool(same and changed > 0 and unchanged and is_split),
                              "identical_split_vs_plain": same, "steered_rows_changed": changed,
                              "steered_rows": len(steered_rows), "unsteered_rows_unchanged": unchanged,
                              "window": window, "note": note},
        "placement": {k: str(v) for k, v in placement.items()},
    }


# ---------------------------------------------------------------------------------------------
# Measurements (one model)


def measure_extraction(loaded, texts: list[str], repeats: int, log) -> dict[str, Any]:
    """mvp's extraction vs the full CausalLM forward with hidden states (and the bare base model)."""
    from benchmarks.extraction import longest, methods

    run = methods(loaded, texts, 16)
    names = ("mvp", "hf_full_causal_lm", "hf_base_model")
    times = c.interleave({m: run[m] for m in names}, repeats, log=log)
    heavy = longest(loaded, texts, 32)
    heavy_run = methods(loaded, heavy, 16)
    memory = {m: peak_extra_mb(heavy_run[m], loaded.device) for m in ("mvp", "hf_full_causal_lm")}
    return {"times_s": times, "inputs": len(texts), "batch_size": 16,
            "time_mvp_over_full": c.median_ratio(times["mvp"], times["hf_full_causal_lm"]),
            "time_mvp_over_base": c.median_ratio(times["mvp"], times["hf_base_model"]),
            "sequences_per_s_mvp": len(texts) / c.median(times["mvp"]),
            "peak_extra_mb": {m: v[0] for m, v in memory.items()}, "memory_kind": memory["mvp"][1],
            "memory_mvp_over_full": memory["mvp"][0] / max(memory["hf_full_causal_lm"][0], 1e-9)}


def measure_steering(loaded, instructions: list[str], vectors, rows: int, new_tokens: int, repeats: int,
                     log) -> dict[str, Any]:
    """Steered (4-layer window; every layer) vs unsteered tokens/s, half the rows steered (benchmarks/steering.py)."""
    from mvplatform.control import steering_vectors
    from mvplatform.generation import generate
    from mvplatform.spec import GenerationSpec
    from mvplatform.steering import Steering

    settings = GenerationSpec(max_new_tokens=new_tokens, batch_size=rows)
    prompts = (instructions * (rows // len(instructions) + 1))[:rows]
    by_layer = steering_vectors(vectors, "state_norm")
    n = loaded.n_layers
    window = list(range(max(1, n // 3), min(n, max(1, n // 3) + 3) + 1))

    def steering_on(layers: list[int]):
        coefficients = np.full((rows, len(layers)), 0.5, dtype=np.float32)
        coefficients[::2] = 0.0
        return Steering({k: by_layer[k] for k in layers}), coefficients

    windowed, every = steering_on(window), steering_on(list(range(1, n + 1)))
    runs = {"unsteered": lambda: generate(loaded, prompts, settings).seconds,
            "steered_window": lambda: generate(loaded, prompts, settings, *windowed).seconds,
            "steered_all_layers": lambda: generate(loaded, prompts, settings, *every).seconds}
    times = c.interleave(runs, repeats, log=log)
    tokens = rows * new_tokens
    return {"times_s": times, "rows": rows, "max_new_tokens": new_tokens, "window": window,
            "tokens_per_s": {k: tokens / c.median(v) for k, v in times.items()},
            "steered_window_over_unsteered": c.median_ratio(times["unsteered"], times["steered_window"]),
            "steered_all_over_unsteered": c.median_ratio(times["unsteered"], times["steered_all_layers"])}


def measure_trial_batching(loaded, instructions: list[str], vectors, new_tokens: int, repeats: int,
                           log) -> dict[str, Any]:
    """8 and 16 settings in one ``Controller.evaluate`` vs one setting per call (benchmarks/trial_batching.py).

    The one-per-call side runs all 16 settings one by one and times each call, so the 8-trial figure
    uses the first 8 calls' time: each repetition times batched-8, batched-16 and the 16 single calls,
    in alternating order.
    """
    from mvplatform.control import Controller
    from mvplatform.data import load_lexicon
    from mvplatform.judges import KeywordJudge
    from mvplatform.spec import ControlSpec

    settings = draw_settings(loaded.n_layers, 16)
    rows_16 = 16 * len(instructions)
    controller = Controller(loaded, KeywordJudge(load_lexicon("refusal")),
                            ControlSpec(generation={"max_new_tokens": new_tokens, "batch_size": rows_16}))
    seen: dict[str, list] = {"batched_8": [], "batched_16": [], "single": []}
    single_times: list[list[float]] = []

    def batched(k: int) -> Callable[[], None]:
        return lambda: seen[f"batched_{k}"].append(controller.evaluate("en", instructions, settings[:k], vectors))

    def singles() -> float:
        calls, results = [], []
        for s in settings:
            start = time.perf_counter()
            results.append(controller.evaluate("en", instructions, [s], vectors)[0])
            calls.append(time.perf_counter() - start)
        single_times.append(calls)
        seen["single"].append(results)
        return sum(calls)

    log("  warm-up: one batched call and one single call")
    controller.evaluate("en", instructions, settings[:8], vectors)
    controller.evaluate("en", instructions, settings[:1], vectors)
    times = c.interleave({"batched_8": batched(8), "batched_16": batched(16), "single_16": singles}, repeats,
                         warmup=False, log=log)
    times["single_first_8"] = [sum(calls[:8]) for calls in single_times]
    alone = [[e.responses for e in run] for run in seen["single"]]
    together = [[e.responses for e in run] for run in seen["batched_16"]]
    identical = sum(a == b for a, b in zip(alone[0], together[0]))
    rates_equal = all([e.rate for e in run] == [e.rate for e in seen["single"][0]]
                      for run in seen["batched_16"] + seen["single"])
    return {"times_s": times, "instructions": len(instructions), "max_new_tokens": new_tokens,
            "generation_batch_size": rows_16,
            "settings": [[s.start, s.width, s.strength] for s in settings],
            "trials_per_min": {"batched_8": 60 * 8 / c.median(times["batched_8"]),
                               "batched_16": 60 * 16 / c.median(times["batched_16"]),
                               "one_per_generation": 60 * 16 / c.median(times["single_16"])},
            "ratio_8": c.median_ratio(times["single_first_8"], times["batched_8"]),
            "ratio_16": c.median_ratio(times["single_16"], times["batched_16"]),
            "settings_with_identical_responses": identical, "following_rates_identical": rates_equal}


def measure_batch_sizes(loaded, instructions: list[str], sizes: list[int], new_tokens: int, log) -> dict[str, Any]:
    """Unsteered generation tokens/s and peak memory at each batch size (one call of ``rows`` rows)."""
    from mvplatform.generation import generate
    from mvplatform.spec import GenerationSpec

    out = {}
    for rows in sizes:
        prompts = (instructions * (rows // len(instructions) + 1))[:rows]
        settings = GenerationSpec(max_new_tokens=new_tokens, batch_size=rows)
        generate(loaded, prompts, settings)  # warm-up at this shape
        holder: dict[str, float] = {}
        extra, kind = peak_extra_mb(lambda: holder.update(s=generate(loaded, prompts, settings).seconds),
                                    loaded.device)
        out[rows] = {"seconds": holder["s"], "tokens_per_s": rows * new_tokens / holder["s"], "peak_extra_mb": extra,
                     "memory_kind": kind}
        log(f"  batch {rows}: {out[rows]['tokens_per_s']:.0f} tokens/s, +{extra:.0f} MB")
    return out


# ---------------------------------------------------------------------------------------------
# Main


def summarise(per_model: dict[str, dict[str, Any]], checks: dict[str, dict[str, Any]], sizes: list[int],
              gpu: bool) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The table rows and the ratios (with goals) of what has been measured so far."""
    rows = []
    ratios: dict[str, dict[str, Any]] = {}
    for name, entry in per_model.items():
        ex, st, tb = entry.get("extraction"), entry.get("steering"), entry.get("trial_batching")
        bs = entry.get("batch_sizes", {})
        rows.append({"model": name, "params_M": entry["parameters"] / 1e6,
                     "extract/full": ex and ex["time_mvp_over_full"],
                     "mem extract/full": ex and ex["memory_mvp_over_full"],
                     "steered/unsteered tok/s": st and st["steered_window_over_unsteered"],
                     "trials 8/1": tb and tb["ratio_8"], "trials 16/1": tb and tb["ratio_16"],
                     "tok/s b1": bs.get(1, {}).get("tokens_per_s"),
                     f"tok/s b{sizes[-1]}": bs.get(sizes[-1], {}).get("tokens_per_s"),
                     f"peak MB b{sizes[-1]}": bs.get(sizes[-1], {}).get("peak_extra_mb")})
        if ex:
            ratios[f"extraction_time_mvp_over_full_forward[{name}]"] = c.ratio_entry(
                ex["time_mvp_over_full"], "<= 1.10", ex["time_mvp_over_full"] <= 1.10)
            ratios[f"extraction_memory_mvp_over_full_forward[{name}]"] = c.ratio_entry(
                ex["memory_mvp_over_full"], "<= 1.0" if gpu else "info (CPU in-process RSS)",
                ex["memory_mvp_over_full"] <= 1.0 if gpu else None)
        if st:
            ratios[f"throughput_steered_window_over_unsteered[{name}]"] = c.ratio_entry(
                st["steered_window_over_unsteered"], ">= 0.90", st["steered_window_over_unsteered"] >= 0.90)
        if tb:
            ratios[f"trials_per_min_8_over_1[{name}]"] = c.ratio_entry(tb["ratio_8"], ">= 3 at 8 trials per batch",
                                                                       tb["ratio_8"] >= 3.0)
            ratios[f"trials_per_min_16_over_1[{name}]"] = c.ratio_entry(tb["ratio_16"], "info", None)
        if bs:
            top = bs[sizes[-1]]["tokens_per_s"] / bs[1]["tokens_per_s"]
            ratios[f"tokens_per_s_batch_{sizes[-1]}_over_1[{name}]"] = c.ratio_entry(top, "info", None)
    for key, check in checks.items():
        ratios[f"check:{key}"] = c.ratio_entry(float(check["passed"]), "== 1 (PASS)", check["passed"])

    return rows, ratios



def result_path(args: argparse.Namespace, gpu: str) -> Path:
    if args.out is not None or args.quick:
        return c.result_path(NAME, args)
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return c.RESULTS / "gpu" / f"{NAME}_{slug}.json"


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--models", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--budget-s", type=float, default=360.0,
                   help="measurements still to start are skipped past this many seconds (checks always run)")
    args = p.parse_args(argv)
    block_absent_modules()
    c.apply_threads(args)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the device returns only the output's last 12,000 characters
    started = time.perf_counter()
    gpu = torch.cuda.is_available()
    if not gpu and not args.quick:
        print("gpu_check: no CUDA GPU here; for the CPU rehearsal run: python -m benchmarks.gpu_check --quick",
              file=sys.stderr)
        return 2
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in SHAPES]
    if unknown:
        print(f"gpu_check: --models: unknown {unknown}; choose from {', '.join(SHAPES)}", file=sys.stderr)
        return 2
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    device = torch.device("cuda" if gpu else "cpu")
    meta = c.machine()
    meta["source_sha1"] = source_sha1()
    if gpu:
        props = torch.cuda.get_device_properties(0)
        meta["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        meta["gpu_capability"] = f"{props.major}.{props.minor}"
    args.out = result_path(args, meta["gpu"])

    def log(message: str) -> None:
        c.say(f"[{time.perf_counter() - started:6.1f} s] {message}")

    from benchmarks.extraction import texts_for
    from mvplatform.data import load_instructions

    tokenizer = c.tiny_tokenizer()
    texts, _ = texts_for(args.quick, 24 if args.quick else 128)
    harmful = list(load_instructions("en").search["harmful"].values())
    sizes = [1, 4, 16] if args.quick else [1, 8, 32, 64, 128, 256]
    search_instructions = harmful[: 2 if args.quick else 8]
    new_tokens = {"steering": 4 if args.quick else 32, "trials": 4 if args.quick else 24,
                  "batch": 4 if args.quick else 24}
    log(f"gpu_check on {meta['gpu'] if gpu else 'CPU (rehearsal, --quick)'}: models {', '.join(models)}; torch "
        f"{meta['torch']}, transformers {meta['transformers']}; {repeats} interleaved repeat(s)")

    checks: dict[str, dict[str, Any]] = {}
    log(f"check: device_map auto, split over {'GPU and CPU memory' if gpu else 'CPU memory and disk (rehearsal)'}, "
        "vs a plain load (SmolLM2 shape, float32)")
    with tempfile.TemporaryDirectory() as tmp:
        placed = check_device_map(args.quick, tokenizer, texts, harmful, Path(tmp) / "smollm2-shape")
    checks["hook_devices"] = placed["hook_devices"]
    checks["device_map_tokens"] = placed["device_map_tokens"]
    for key in ("hook_devices", "device_map_tokens"):
        log(f"  {key}: {'PASS' if checks[key]['passed'] else 'FAIL'}")

    per_model: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    finished: list[str] = []  # models whose every step ran or was skipped

    def payload() -> dict[str, Any]:
        return {"device": str(device), "models": models, "complete": finished == models, "repeats": repeats,
                "seconds": time.perf_counter() - started, "checks": checks, "placement": placed["placement"],
                "skipped": skipped, "raw": per_model}

    for name in models:
        log(f"{name}: building random {SHAPES[name][0]} of the real shape on {device} (float32)")
        model = build_model(name, args.quick, tokenizer, device, torch.float32)
        loaded = as_loaded(name, model, tokenizer, device)
        params = sum(p.numel() for p in model.parameters())
        entry: dict[str, Any] = {"parameters": params, "layers": loaded.n_layers, "config": (QUICK_SHAPES if args.quick
                                                                                             else SHAPES)[name][1]}
        check = check_bf16_extraction(loaded, texts)
        checks[f"bf16_extraction[{name}]"] = check
        log(f"  bf16 vs float32 extraction: worst cosine {check['worst_cosine']:.5f} (layer {check['worst_layer']}): "
            f"{'PASS' if check['passed'] else 'FAIL'}")
        if gpu:
            entry["weights_mb_bf16"] = torch.cuda.memory_allocated() / 2**20
        vectors = vectors_for(loaded, texts[:32])
        # Most wanted first: past the time budget the later steps are the ones skipped.
        steps = [("trial_batching", lambda: measure_trial_batching(loaded, search_instructions, vectors,
                                                                   new_tokens["trials"], repeats, log)),
                 ("steering", lambda: measure_steering(loaded, harmful, vectors, 4 if args.quick else 16,
                                                       new_tokens["steering"], repeats, log)),
                 ("extraction", lambda: measure_extraction(loaded, texts, repeats, log)),
                 ("batch_sizes", lambda: measure_batch_sizes(loaded, harmful, sizes, new_tokens["batch"], log))]
        for step, run in steps:
            if time.perf_counter() - started > args.budget_s:
                skipped.append(f"{name}:{step}")
                log(f"  {step}: skipped (past --budget-s {args.budget_s:.0f})")
                continue
            log(f"  {step} (bf16)")
            entry[step] = run()
            per_model[name] = entry
            # What is measured so far, in case the run is stopped at the device call's time limit.
            c.write_result(NAME, args, meta, {**payload(), "ratios": summarise(per_model, checks, sizes, gpu)[1]})
        per_model[name] = entry
        finished.append(name)
        del loaded, model, vectors
        free()

    rows, ratios = summarise(per_model, checks, sizes, gpu)
    c.say("")
    c.say(c.table(rows))
    failed = [k for k, v in checks.items() if not v["passed"]]
    c.say("")
    for key, check in checks.items():
        detail = {k: v for k, v in check.items() if k in ("worst_cosine", "worst_layer", "split", "blocks_offloaded",
                                                          "device_mismatches", "identical_split_vs_plain",
                                                          "steered_rows_changed", "note") and v is not None}
        c.say(f"CHECK {key}: {'PASS' if check['passed'] else 'FAIL'}  {detail}")
    if skipped:
        c.say(f"skipped past the time budget: {', '.join(skipped)}")
    note = f"checks: {len(checks) - len(failed)} PASS, {len(failed)} FAIL" + (f": {', '.join(failed)}" if failed else "")
    c.report(NAME, args, meta, {**payload(), "ratios": ratios}, note=note)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
