"""Where generation time goes: the steering hooks' share, and why trial batching gains what it gains.

    python -m benchmarks.profile_generation --threads 1   # packaged smollm2-135m-instruct
    python -m benchmarks.profile_generation --quick       # tiny random model, seconds

Two profiles of mvp's ``generate`` (end-of-sequence stopping off, so every row runs
``max_new_tokens`` steps):

- steering (benchmark 3): one steered generation under cProfile; the cumulative time of mvp's
  steering hooks (the per-block hook and the position tracker, torch ops inside them included) as a
  share of the whole generation, for a 4-layer window and for every layer;
- trial batching (benchmark 4): one generation of 8 rows and one of 64 rows (8 trials x 8
  instructions) under torch.profiler: seconds per row, and the share of time in matrix multiplies,
  attention, other aten ops and outside aten ops (Python, generate's bookkeeping). On a CPU the
  matrix multiplies of 8 rows already run near the core's arithmetic rate, so 8x the rows costs
  nearly 8x the multiply time; what batching saves is the per-step overhead outside them.

Ratios are information (no goal): the hooks' share of generation time, and the per-row time at 64
rows over that at 8 rows.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import _common as c

NAME = "profile_generation"
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=1)
    p.add_argument("--model", default="smollm2-135m-instruct")
    args = p.parse_args(argv)
    c.apply_threads(args)
    meta = c.machine()

    from torch.profiler import ProfilerActivity, profile

    from mvplatform.data import load_instructions
    from mvplatform.generation import generate
    from mvplatform.models import load_model
    from mvplatform.spec import GenerationSpec, ModelSpec
    from mvplatform.steering import Steering

    tmp = tempfile.TemporaryDirectory()
    name = str(c.tiny_model_dir(Path(tmp.name) / "tiny")) if args.quick else args.model
    loaded = load_model(ModelSpec(name=name, device="auto", prompt="chat"))
    loaded.model.generation_config.eos_token_id = None
    instructions = list(load_instructions("en").search["harmful"].values())[:8]
    tokens = 4 if args.quick else 24
    hidden = loaded.model.config.get_text_config().hidden_size
    n = loaded.n_layers
    rng = np.random.default_rng(0)
    generate(loaded, instructions[:2], GenerationSpec(max_new_tokens=2, batch_size=2))  # warm-up
    model_name = "tiny random llama" if args.quick else args.model
    c.say(f"profile_generation: {model_name} ({n} layers) on {loaded.device}, {tokens} new tokens per row")

    # Steering hooks' share (16 rows: the steering benchmark's batch).
    rows16 = [t for t in instructions for _ in range(2)]
    steering_rows = []
    start_layer = max(1, n // 3)
    for label, layers in (("4-layer window", list(range(start_layer, min(n, start_layer + 3) + 1))),
                          (f"all {n} layers", list(range(1, n + 1)))):
        vectors = {k: (v / np.linalg.norm(v)).astype(np.float32) for k, v in zip(layers, rng.normal(size=(len(layers),
                                                                                                          hidden)))}
        coefficients = np.full((len(rows16), len(layers)), 2.0, dtype=np.float32)
        coefficients[::2] = 0.0
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        generate(loaded, rows16, GenerationSpec(max_new_tokens=tokens, batch_size=len(rows16)),
                 Steering(vectors), coefficients)
        profiler.disable()
        total = time.perf_counter() - start
        stats = pstats.Stats(profiler).stats  # (file, line, function) -> (cc, nc, tottime, cumtime, callers)
        hooks = sum(v[3] for k, v in stats.items() if k[0].endswith("steering.py") and k[2] in ("hook",
                                                                                                   "before_forward"))
        steering_rows.append({"steered": label, "generation_s": total, "hooks_s": hooks, "hooks_share": hooks / total})

    # Trial batching: 8 rows vs 64 rows.
    batching_rows = []
    for count in (8, 64):
        texts = [t for t in instructions for _ in range(count // len(instructions))]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            generate(loaded, texts, GenerationSpec(max_new_tokens=tokens, batch_size=count))
            total = time.perf_counter() - start
        events = prof.key_averages()
        matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL) / 1e6
        attention = sum(e.self_cpu_time_total for e in events if "attention" in e.key.lower()) / 1e6
        aten = sum(e.self_cpu_time_total for e in events if e.key.startswith("aten::")) / 1e6
        batching_rows.append({"rows": count, "generation_s": total, "s_per_row": total / count,
                              "matmul_s": matmul, "attention_s": attention, "other_aten_s": aten - matmul - attention,
                              "outside_aten_s": max(0.0, total - aten), "matmul_s_per_row": matmul / count,
                              "outside_aten_s_per_row": max(0.0, total - aten) / count})
    c.say("\nSteering hooks (cProfile, cumulative time inside the hooks)")
    c.say(c.table(steering_rows))
    c.say("\nOne generation of 8 vs 64 rows (torch.profiler, self CPU time)")
    c.say(c.table(batching_rows))
    window_share = steering_rows[0]["hooks_share"]
    all_share = steering_rows[1]["hooks_share"]
    per_row = batching_rows[1]["s_per_row"] / batching_rows[0]["s_per_row"]
    matmul_per_row = batching_rows[1]["matmul_s_per_row"] / max(batching_rows[0]["matmul_s_per_row"], 1e-12)
    ratios = {"steering_hooks_share_window": c.ratio_entry(window_share, "info", None),
              "steering_hooks_share_all_layers": c.ratio_entry(all_share, "info", None),
              "seconds_per_row_64_over_8": c.ratio_entry(per_row, "info (1/8 would be an 8x trial-batching gain)", None),
              "matmul_seconds_per_row_64_over_8": c.ratio_entry(matmul_per_row, "info", None)}
    c.report(NAME, args, meta, {
        "model": model_name, "device": str(loaded.device), "max_new_tokens": tokens, "ratios": ratios,
        "raw": {"steering": steering_rows, "batching": batching_rows}})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
