"""Hidden-state extraction: mvp's ``last_token_states`` vs a bare transformers forward, on the same batches.

    python -m benchmarks.extraction            # packaged gemma3-270m, 128 built-in inputs (7 concepts x en)
    python -m benchmarks.extraction --quick    # tiny random model, seconds

Measures, side by side in one run:

- time of mvp's extraction (length-sorted batches, ``base_model`` forward without the LM head, last
  real token gathered on the device) against the obvious baseline: the full CausalLM forward with
  ``output_hidden_states=True`` on the *same* batches (right padding, last real token gathered the
  same way). Goal: <= 1.10x. A second baseline, the bare ``base_model`` forward, shows mvp's own
  overhead (gathering, copying to numpy) apart from the LM head it skips;
- peak memory of each, in a fresh process (CPU: peak RSS above the level after loading the model;
  GPU: ``torch.cuda.max_memory_allocated``). Goal: no worse (<= 1.0x);
- sequences/s of mvp's extraction at batch sizes 1, 4, 16, 32;
- padding waste (padded tokens / real tokens) with and without length-sorted batching, and the
  time of the bare forward on unsorted vs sorted batches.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import _common as c

NAME = "extraction"
BATCH_SIZES = (1, 4, 16, 32)


def texts_for(quick: bool, n_inputs: int, language: str = "en") -> tuple[list[str], dict[str, list[str]]]:
    """``n_inputs`` texts sampled (seed 0) from every concept's pairs in ``language``, and per-concept texts
    in the order a submission's item sees them (pos then neg)."""
    from mvplatform.catalog import CONCEPTS
    from mvplatform.data import load_split

    per_item = {}
    for concept in CONCEPTS:
        split = load_split("builtin:values", concept, language)
        pairs = split.train + split.test
        per_item[concept] = [p.pos for p in pairs] + [p.neg for p in pairs]
    pool = [t for texts in per_item.values() for t in texts]
    sample = random.Random(0).sample(pool, min(n_inputs, len(pool)))
    return sample, per_item


def load(model: str, quick: bool, folder: Path):
    from mvplatform.models import load_model
    from mvplatform.spec import ModelSpec

    name = str(c.tiny_model_dir(folder / "tiny-llama")) if quick else model
    return load_model(ModelSpec(name=name, device="auto", prompt="plain" if quick else "auto"))


def encode(loaded, texts: list[str]) -> list[list[int]]:
    prompts = [loaded.prompter.format(t) for t in texts]
    return loaded.tokenizer(prompts, add_special_tokens=loaded.prompter.add_special_tokens)["input_ids"]


def sorted_batches(encoded: list[list[int]], batch_size: int, sort: bool = True) -> list[list[int]]:
    """Row indices per batch, as mvp forms them (longest first) or in the given order."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True) if sort else list(
        range(len(encoded)))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def padding_waste(encoded: list[list[int]], batch_size: int, sort: bool) -> float:
    padded = real = 0
    for rows in sorted_batches(encoded, batch_size, sort):
        lengths = [len(encoded[i]) for i in rows]
        real += sum(lengths)
        padded += max(lengths) * len(lengths) - sum(lengths)
    return padded / real


@torch.inference_mode()
def bare_forward(loaded, encoded: list[list[int]], batches: list[list[int]], layers: list[int],
                 full: bool) -> np.ndarray:
    """The baseline: ``model(..., output_hidden_states=True)`` per batch (right padding), last real token
    of each row gathered at every layer. ``full``: the whole CausalLM (logits too); else ``base_model``."""
    tokenizer = loaded.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    module = loaded.model if full else loaded.model.base_model
    out = np.empty((len(encoded), len(layers), loaded.model.config.get_text_config().hidden_size), dtype=np.float32)
    try:
        for rows in batches:
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]}, return_tensors="pt")
            ids, mask = batch["input_ids"].to(loaded.device), batch["attention_mask"].to(loaded.device)
            hidden = module(input_ids=ids, attention_mask=mask, output_hidden_states=True,
                            use_cache=False).hidden_states
            last = mask.sum(-1) - 1
            rows_t = torch.arange(len(rows), device=ids.device)
            out[rows] = torch.stack([hidden[layer][rows_t, last] for layer in layers], 1).float().cpu().numpy()
    finally:
        tokenizer.padding_side = side
    return out


def methods(loaded, texts: list[str], batch_size: int) -> dict[str, Any]:
    from mvplatform.activations import last_token_states

    layers = list(range(1, loaded.n_layers + 1))
    encoded = encode(loaded, texts)
    batches = sorted_batches(encoded, batch_size)
    unsorted = sorted_batches(encoded, batch_size, sort=False)
    return {
        "mvp": lambda: last_token_states(loaded, texts, layers, batch_size),
        "hf_full_causal_lm": lambda: bare_forward(loaded, encoded, batches, layers, full=True),
        "hf_base_model": lambda: bare_forward(loaded, encoded, batches, layers, full=False),
        "hf_base_model_unsorted": lambda: bare_forward(loaded, encoded, unsorted, layers, full=False),
    }


def longest(loaded, texts: list[str], count: int) -> list[str]:
    """The ``count`` longest texts: the first sorted batches, where the peak memory is reached."""
    encoded = encode(loaded, texts)
    return [texts[i] for i in sorted(range(len(texts)), key=lambda i: -len(encoded[i]))[:count]]


def memory_child(args) -> None:
    """In a fresh process: load the model, run one method once, print its peak memory (MB)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.tiny_dir) if args.tiny_dir else Path(tmp)
        loaded = load(args.model, args.quick, folder)
        texts, _ = texts_for(args.quick, args.inputs)
        texts = longest(loaded, texts, 2 * args.batch_size)
        run = methods(loaded, texts, args.batch_size)[args.memory_child]
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            extra = (torch.cuda.max_memory_allocated() - base) / 2**20
            kind = "cuda_max_memory_allocated"
        else:
            with c.PeakRSS() as peak:
                run()
            extra, kind = peak.extra_mb, "peak_rss_above_loaded"
        print(c.MARK + json.dumps({"extra_mb": extra, "kind": kind}), flush=True)


def measure_memory(args, method: str, tiny_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.extraction", "--memory-child", method, "--model", args.model,
           "--inputs", str(args.inputs), "--batch-size", str(args.batch_size), "--tiny-dir", str(tiny_dir),
           *c.thread_args(args)]
    if args.quick:
        cmd.append("--quick")
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True, timeout=1800, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(c.MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory child {method} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(c.MARK):])


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=5)
    p.add_argument("--model", default="gemma3-270m", help="packaged alias, local directory or hub id")
    p.add_argument("--inputs", type=int, default=None, help="inputs sampled from 7 concepts x en (default 128)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of the main comparison (spec default 16)")
    p.add_argument("--memory-child", default=None, help=__import__("argparse").SUPPRESS)
    p.add_argument("--tiny-dir", default=None, help=__import__("argparse").SUPPRESS)
    args = p.parse_args(argv)
    c.apply_threads(args)
    args.inputs = args.inputs or (24 if args.quick else 128)
    if args.memory_child:
        memory_child(args)
        return 0
    repeats = c.repeats_of(args, 5)
    meta = c.machine()
    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name)
    loaded = load(args.model, args.quick, folder)
    texts, per_item = texts_for(args.quick, args.inputs)
    model_name = "tiny random llama" if args.quick else args.model
    c.say(f"extraction: {model_name} ({loaded.n_layers} layers) on {loaded.device}, {len(texts)} inputs, "
          f"batch {args.batch_size}, {repeats} interleaved repeats")

    # 1. Time: mvp vs the bare forward on the same batches. Warm-up: each method on one batch.
    run = methods(loaded, texts, args.batch_size)
    main_methods = ("mvp", "hf_full_causal_lm", "hf_base_model")
    warm = methods(loaded, texts[: args.batch_size], args.batch_size)
    states = {m: warm[m]() for m in main_methods}
    scale = float(np.abs(states["hf_full_causal_lm"]).max())
    max_diff = float(np.abs(states["mvp"] - states["hf_full_causal_lm"]).max())
    times = c.interleave({m: run[m] for m in main_methods}, repeats, warmup=False, log=c.say)
    # Length-sorted vs unsorted batches, bare base-model forward, side by side.
    sort_times = c.interleave({"hf_base_model": run["hf_base_model"],
                               "hf_base_model_unsorted": run["hf_base_model_unsorted"]},
                              repeats, warmup=False, log=c.say)

    # 2. Peak memory, each method in a fresh process.
    memory_methods = ("mvp", "hf_full_causal_lm", "hf_base_model")
    if args.quick:  # in this process (RSS already grown by the runs above): exercises the code, not a figure
        memory = {}
        for m in memory_methods:
            with c.PeakRSS() as peak:
                run[m]()
            memory[m] = {"extra_mb": peak.extra_mb, "kind": "peak_rss_in_process (quick)"}
    else:
        c.say("peak memory (a fresh process per method) ...")
        memory = {m: measure_memory(args, m, folder) for m in memory_methods}

    # 3. Sequences/s vs batch size (mvp), the batch sizes interleaved, on a sample of max(batch sizes) inputs.
    from mvplatform.activations import last_token_states

    layers = list(range(1, loaded.n_layers + 1))
    sweep_texts = random.Random(1).sample(texts, min(len(texts), max(BATCH_SIZES)))
    sweep = {f"batch {b}": (lambda b=b: last_token_states(loaded, sweep_texts, layers, b)) for b in BATCH_SIZES}
    sweep_times = c.interleave(sweep, repeats, warmup=False, log=c.say)

    # 4. Padding waste, sorted vs unsorted.
    encoded = encode(loaded, texts)
    waste_rows = []
    for b in BATCH_SIZES[1:]:
        item_sorted = np.mean([padding_waste(encode(loaded, t), b, True) for t in per_item.values()])
        item_unsorted = np.mean([padding_waste(encode(loaded, t), b, False) for t in per_item.values()])
        waste_rows.append({"batch": b, "sample_sorted": padding_waste(encoded, b, True),
                           "sample_unsorted": padding_waste(encoded, b, False),
                           "per_item_sorted": float(item_sorted), "per_item_unsorted": float(item_unsorted)})

    # Ratios (median over repeats of per-repeat ratios).
    r_full = c.median_ratio(times["mvp"], times["hf_full_causal_lm"])
    r_base = c.median_ratio(times["mvp"], times["hf_base_model"])
    r_sort = c.median_ratio(sort_times["hf_base_model_unsorted"], sort_times["hf_base_model"])
    r_mem = memory["mvp"]["extra_mb"] / max(memory["hf_full_causal_lm"]["extra_mb"], 1e-9)
    r_mem_base = memory["mvp"]["extra_mb"] / max(memory["hf_base_model"]["extra_mb"], 1e-9)
    seq_rows = [{"batch": b, "median_s": c.median(sweep_times[f"batch {b}"]),
                 "seq_per_s": len(sweep_texts) / c.median(sweep_times[f"batch {b}"]),
                 "speedup_vs_batch_1": c.median_ratio(sweep_times["batch 1"], sweep_times[f"batch {b}"])}
                for b in BATCH_SIZES]

    c.say("\nTime per pass over the inputs (same batches; median of interleaved repeats)")
    c.say(c.table([{"method": m, "median_s": c.median(t), "seq_per_s": len(texts) / c.median(t),
                    "ratio_mvp_over_this": c.median_ratio(times["mvp"], t)} for m, t in times.items()]))
    c.say(c.table([{"batches": m.removeprefix("hf_base_model").strip("_") or "length-sorted", "median_s": c.median(t)}
                   for m, t in sort_times.items()]))
    c.say(f"states equal (first batch): max |mvp - full forward| = {max_diff:.2e} (largest state magnitude {scale:.3g})")
    c.say(f"\nPeak memory above the loaded model over the {2 * args.batch_size} longest inputs (fresh process each)")
    c.say(c.table([{"method": m, "extra_mb": v["extra_mb"], "kind": v["kind"]} for m, v in memory.items()]))
    c.say(f"\nmvp sequences/s vs batch size ({len(sweep_texts)} inputs)")
    c.say(c.table(seq_rows))
    c.say(f"\nPadding waste (padded tokens / real tokens): the {len(texts)}-input sample, and the mean over the 7 "
          "per-item input sets a submission batches")
    c.say(c.table(waste_rows))

    ratios = {
        "time_mvp_over_full_forward": c.ratio_entry(r_full, "<= 1.10", r_full <= 1.10),
        "memory_mvp_over_full_forward": c.ratio_entry(r_mem, "<= 1.00", r_mem <= 1.0),
        "time_mvp_over_base_model_forward": c.ratio_entry(r_base, "info (mvp's own overhead)", None),
        "memory_mvp_over_base_model_forward": c.ratio_entry(r_mem_base, "info", None),
        "time_unsorted_over_sorted_batches": c.ratio_entry(r_sort, "info (> 1: sorting helps)", None),
    }
    c.report(NAME, args, meta, {
        "model": model_name, "device": str(loaded.device), "inputs": len(texts), "batch_size": args.batch_size,
        "layers": loaded.n_layers, "repeats": repeats, "ratios": ratios,
        "raw": {"times_s": times, "sorted_vs_unsorted_s": sort_times, "memory": memory, "batch_sweep_s": sweep_times, "sequences_per_s": seq_rows,
                "padding_waste": waste_rows, "max_abs_state_difference": max_diff, "state_scale": scale,
                "input_tokens": [len(e) for e in encoded]},
    })
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
