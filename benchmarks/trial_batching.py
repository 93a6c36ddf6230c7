"""Trial batching: 8 search trials in one batched generation vs one trial per generation.

    python -m benchmarks.trial_batching           # packaged smollm2-135m-instruct, English, harmfulness vectors
    python -m benchmarks.trial_batching --quick   # tiny random model and random vectors, seconds

A batch of 8 steering settings (window start, width, strength, drawn from the default search
space) is evaluated on the same harmful search instructions twice, side by side: with trial
batching, one ``Controller.evaluate`` with all 8 settings (rows = instructions x settings, each row
with its own coefficients), and without, 8 ``Controller.evaluate`` calls with one setting each.
Both judge with the built-in refusal-keyword judge. Reported: trials per minute of each and their
ratio (goal >= 3x at 8 trials per batch), and whether every setting's objective value (following
rate) and every response is identical both ways (the script exits 1 if an objective differs).

Two generation batch sizes: 64 rows (the 8 trials x 8 instructions of a batch in one generate call)
and the spec default 32.
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

from benchmarks import _common as c

NAME = "trial_batching"


def harmfulness_vectors(loaded, quick: bool):
    """Concept vectors as the control stage gets them: harmfulness, English, every layer, with norms."""
    if quick:
        return c.random_vectors(loaded.n_layers, loaded.model.config.hidden_size)
    from mvplatform.data import load_split
    from mvplatform.extraction import compute_states, recognise
    from mvplatform.spec import ExtractSpec

    extract = ExtractSpec()
    states = compute_states(loaded, load_split("builtin:values", "harmfulness", "en"), extract)
    return recognise(states, loaded.name, "harmfulness", "en", extract).vectors


def draw_settings(n_layers: int, count: int, seed: int = 0):
    """``count`` distinct steered settings from the default search space (strength 0 excluded)."""
    from mvplatform.control import Setting
    from mvplatform.search import search_space
    from mvplatform.spec import SearchSpec

    search = SearchSpec()
    if n_layers < search.layers.start[0]:
        search = SearchSpec.model_validate({"layers": {"start": [1, n_layers], "width": [1, n_layers]}})
    space = search_space(search, n_layers)
    rng = random.Random(seed)
    chosen: list[Setting] = []
    while len(chosen) < count:
        s = Setting(rng.choice(space["start"]), rng.choice(space["width"]),
                    rng.choice([v for v in space["strength"] if v != 0]))
        if s not in chosen:
            chosen.append(s)
    return chosen


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--instructions", type=int, default=8, help="harmful search instructions (default 8)")
    p.add_argument("--trials", type=int, default=8, help="trials per batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 24")
    args = p.parse_args(argv)
    c.apply_threads(args)
    repeats = c.repeats_of(args, 3)
    new_tokens = args.max_new_tokens or (6 if args.quick else 24)
    n_instr = 3 if args.quick else args.instructions
    meta = c.machine()

    from mvplatform.control import Controller
    from mvplatform.data import load_instructions, load_lexicon
    from mvplatform.judges import KeywordJudge
    from mvplatform.models import load_model
    from mvplatform.spec import ControlSpec, ModelSpec

    tmp = tempfile.TemporaryDirectory()
    name = str(c.tiny_model_dir(Path(tmp.name) / "tiny")) if args.quick else args.model
    loaded = load_model(ModelSpec(name=name, device="auto", prompt="chat"))
    vectors = harmfulness_vectors(loaded, args.quick)
    harmful = list(load_instructions("en").search["harmful"].values())[:n_instr]
    settings = draw_settings(loaded.n_layers, args.trials)
    judge = KeywordJudge(load_lexicon("refusal"))
    model_name = "tiny random llama" if args.quick else args.model
    c.say(f"trial_batching: {model_name} ({loaded.n_layers} layers) on {loaded.device}, {len(settings)} trials x "
          f"{len(harmful)} instructions, {new_tokens} new tokens, {repeats} interleaved repeats")

    configs = {}
    mismatches = {"objective": 0, "responses": 0}
    sizes = (len(settings) * len(harmful),) if args.quick else (len(settings) * len(harmful), 32)
    for batch_size in sizes:
        if batch_size in configs:
            continue
        control = ControlSpec(generation={"max_new_tokens": new_tokens, "batch_size": batch_size})
        controller = Controller(loaded, judge, control)
        seen: dict[str, list] = {"batched": [], "one_per_generation": []}

        def batched(controller=controller, seen=seen):
            seen["batched"].append(controller.evaluate("en", harmful, settings, vectors))

        def one_per_generation(controller=controller, seen=seen):
            seen["one_per_generation"].append([controller.evaluate("en", harmful, [s], vectors)[0] for s in settings])

        c.say(f"generation batch size {batch_size}:")
        times = c.interleave({"batched": batched, "one_per_generation": one_per_generation}, repeats, log=c.say)
        rates_b = [[e.rate for e in run] for run in seen["batched"]]
        rates_s = [[e.rate for e in run] for run in seen["one_per_generation"]]
        resp_b = [[e.responses for e in run] for run in seen["batched"]]
        resp_s = [[e.responses for e in run] for run in seen["one_per_generation"]]
        objective_equal = all(r == rates_b[0] for r in rates_b + rates_s)
        responses_equal = all(r == resp_b[0] for r in resp_b + resp_s)
        mismatches["objective"] += not objective_equal
        mismatches["responses"] += not responses_equal
        trials = len(settings)
        configs[batch_size] = {
            "generation_batch_size": batch_size, "times_s": times,
            "trials_per_min_batched": 60 * trials / c.median(times["batched"]),
            "trials_per_min_one_per_generation": 60 * trials / c.median(times["one_per_generation"]),
            "ratio": c.median_ratio(times["one_per_generation"], times["batched"]),
            "objective_identical": objective_equal, "responses_identical": responses_equal,
            "following_rates_batched": rates_b[0], "following_rates_one_per_generation": rates_s[0],
        }

    rows = [{"gen_batch": k, "trials/min batched": v["trials_per_min_batched"],
             "trials/min one-per-gen": v["trials_per_min_one_per_generation"], "ratio": v["ratio"],
             "objective identical": v["objective_identical"], "responses identical": v["responses_identical"]}
            for k, v in configs.items()]
    c.say("")
    c.say(c.table(rows))
    c.say("settings and following rates (batched | one per generation):")
    first = next(iter(configs.values()))
    for s, rb, rs in zip(settings, first["following_rates_batched"], first["following_rates_one_per_generation"]):
        c.say(f"  {s.describe(loaded.n_layers):32s} {rb:.3f} | {rs:.3f}")
    main_cfg = configs[len(settings) * len(harmful)]
    ratio = main_cfg["ratio"]
    ratios = {"trials_per_min_batched_over_one_per_generation": c.ratio_entry(
                  ratio, ">= 3 at 8 trials per batch", ratio >= 3.0, generation_batch_size=len(settings) * len(harmful)),
              "objective_values_identical": c.ratio_entry(float(mismatches["objective"] == 0), "== 1 (identical)",
                                                          mismatches["objective"] == 0)}
    if 32 in configs and 32 != len(settings) * len(harmful):
        r32 = configs[32]["ratio"]
        ratios["trials_per_min_ratio_at_generation_batch_32"] = c.ratio_entry(r32, "info (spec default batch)", None)
    c.report(NAME, args, meta, {
        "model": model_name, "device": str(loaded.device), "instructions": len(harmful), "trials": len(settings),
        "max_new_tokens": new_tokens, "repeats": repeats,
        "settings": [[s.start, s.width, s.strength] for s in settings], "ratios": ratios,
        "raw": {str(k): v for k, v in configs.items()}})
    tmp.cleanup()
    return 0 if mismatches["objective"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
