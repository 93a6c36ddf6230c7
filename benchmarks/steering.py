"""Steered vs unsteered generation throughput (new tokens/s) at equal batch size.

    python -m benchmarks.steering              # packaged smollm2-135m-instruct, 16 English instructions
    python -m benchmarks.steering --quick      # tiny random model, seconds

Both sides run mvp's ``generate`` on the same instructions, batch size and greedy decoding; the
steered side adds mvp's steering hooks (per-row coefficients, padding/position masks) on a window of
4 decoder layers, the size a search typically picks, and on every layer (the worst case). For equal
work, stopping at end-of-sequence is switched off, so every row generates ``max_new_tokens``
tokens on both sides and tokens/s = rows x max_new_tokens / seconds. Goal: steered >= 0.90x the
unsteered tokens/s.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import _common as c

NAME = "steering"


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=7)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--rows", type=int, default=None, help="instructions = batch size (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 32")
    args = p.parse_args(argv)
    c.apply_threads(args)
    repeats = c.repeats_of(args, 7)
    rows = args.rows or (4 if args.quick else 16)
    new_tokens = args.max_new_tokens or (8 if args.quick else 32)
    meta = c.machine()

    from mvplatform.data import load_instructions
    from mvplatform.generation import generate
    from mvplatform.models import load_model
    from mvplatform.spec import GenerationSpec, ModelSpec
    from mvplatform.steering import Steering

    tmp = tempfile.TemporaryDirectory()
    name = str(c.tiny_model_dir(Path(tmp.name) / "tiny")) if args.quick else args.model
    loaded = load_model(ModelSpec(name=name, device="auto", prompt="chat"))
    loaded.model.generation_config.eos_token_id = None  # equal work: every row runs max_new_tokens steps
    instructions = list(load_instructions("en").search["harmful"].values())[:rows]
    settings = GenerationSpec(max_new_tokens=new_tokens, batch_size=rows)
    hidden = loaded.model.config.get_text_config().hidden_size
    rng = np.random.default_rng(0)
    n = loaded.n_layers
    window = list(range(max(1, n // 3), max(1, n // 3) + min(4, n)))

    def steering_on(layers: list[int]) -> tuple[Steering, np.ndarray]:
        vectors = {layer: (v / np.linalg.norm(v)).astype(np.float32)
                   for layer, v in zip(layers, rng.normal(size=(len(layers), hidden)))}
        coefficients = np.full((rows, len(layers)), 2.0, dtype=np.float32)
        coefficients[::2] = 0.0  # half the rows unsteered, as in a trial batch with the unsteered point
        return Steering(vectors), coefficients

    windowed, all_layers = steering_on(window), steering_on(list(range(1, n + 1)))
    runs = {
        "unsteered": lambda: generate(loaded, instructions, settings).seconds,
        f"steered_{len(window)}_layers": lambda: generate(loaded, instructions, settings, *windowed).seconds,
        f"steered_all_{n}_layers": lambda: generate(loaded, instructions, settings, *all_layers).seconds,
    }
    model_name = "tiny random llama" if args.quick else args.model
    c.say(f"steering: {model_name} ({n} layers) on {loaded.device}, {rows} rows x {new_tokens} new tokens, "
          f"window {window[0]}-{window[-1]}, {repeats} interleaved repeats")
    times = c.interleave(runs, repeats, log=c.say)
    tokens = rows * new_tokens
    out_rows = [{"generation": k, "median_s": c.median(v), "tokens_per_s": tokens / c.median(v),
                 "throughput_vs_unsteered": c.median_ratio(times["unsteered"], v)} for k, v in times.items()]
    c.say("")
    c.say(c.table(out_rows))
    keys = list(times)
    r_window = c.median_ratio(times["unsteered"], times[keys[1]])
    r_all = c.median_ratio(times["unsteered"], times[keys[2]])
    ratios = {"throughput_steered_window_over_unsteered": c.ratio_entry(r_window, ">= 0.90", r_window >= 0.90,
                                                                        layers=window),
              "throughput_steered_all_layers_over_unsteered": c.ratio_entry(r_all, "info (worst case)", None)}
    c.report(NAME, args, meta, {
        "model": model_name, "device": str(loaded.device), "rows": rows, "max_new_tokens": new_tokens,
        "tokens_per_generation": tokens, "repeats": repeats, "ratios": ratios,
        "raw": {"times_s": times, "table": out_rows}})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
