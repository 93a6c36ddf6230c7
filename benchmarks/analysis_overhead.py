"""The analysis stage of a cached analysis.yaml re-submit with folds, intervals and baselines on vs off.

    python -m benchmarks.analysis_overhead            # analysis.yaml: 7 concepts x 16 languages, gemma3-270m shapes
    python -m benchmarks.analysis_overhead --quick    # 2 concepts x 3 languages, tiny shapes

A cached re-submit runs no model: its analysis stage is recognition (vectors, per-layer accuracy)
per concept x language, then the cross-lingual analyses per concept. This times exactly that, in
this process, on hidden states shaped like the spec's model (gemma3-270m: 18 decoder layers,
hidden 640; random states with a planted concept direction, as the result store would hand them
over) and on the built-in data's real pairs (their texts feed the surface baselines):

- off: ``extract.folds: 1, intervals: false`` (the paper's numbers only);
- on: ``extract.folds: 5, intervals: true`` (5-fold recognition, Wilson bands, best-layer bootstrap,
  200 label permutations per fold, surface baselines per fold, consistency and transfer bootstraps).

Figures: on / off time of the stage, median over interleaved repeats (goal: the "on" stage within
about a minute on 2 cores, so the ratio is information and the absolute "on" time is checked), in
wall seconds and in this process's CPU seconds (with ``--threads 1`` the CPU time is the wall time
the stage takes on a core of its own; on a shared, loaded machine the wall time is several times
more); and the forward passes either run (``compute_states`` and ``last_token_states`` calls; goal 0).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import _common as c

NAME = "analysis_overhead"


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=3)
    p.add_argument("--layers", type=int, default=18, help="decoder layers of the states (gemma3-270m: 18)")
    p.add_argument("--hidden", type=int, default=640, help="hidden size of the states (gemma3-270m: 640)")
    args = p.parse_args(argv)
    c.apply_threads(args)
    meta = c.machine()

    import mvplatform.extraction as extraction
    from mvplatform.crosslingual import analyse_concept
    from mvplatform.data import load_split
    from mvplatform.extraction import PairStates, recognise
    from mvplatform.spec import load_spec

    spec = load_spec(c.ROOT / "experiments" / "analysis.yaml")
    concepts, languages = spec.data.concepts, spec.data.languages
    layers, hidden = args.layers, args.hidden
    if args.quick:
        concepts, languages, layers, hidden = concepts[:2], languages[:3], 4, 16
    repeats = c.repeats_of(args, 3)
    cross = spec.cross_lingual

    forward_calls = {"compute_states": 0, "last_token_states": 0}
    for name in forward_calls:  # count (and refuse) any forward pass: the stage must run none
        def refuse(*_a, _name=name, **_k):  # noqa: ANN002, ANN003
            forward_calls[_name] += 1
            raise RuntimeError(f"{_name} called: the analysis stage ran the model")
        setattr(extraction, name, refuse)

    rng = np.random.default_rng(0)
    cells = []
    for concept in concepts:
        direction = rng.normal(size=(layers, hidden)).astype(np.float32)
        for language in languages:
            split = load_split(spec.data.dataset, concept, language, spec.data.test_fraction, spec.data.seed)
            n = len(split.train) + len(split.test)
            pos = rng.normal(size=(n, layers, hidden)).astype(np.float32)
            neg = pos - 0.15 * direction[None] - rng.normal(size=(n, layers, hidden)).astype(np.float32)
            cells.append((concept, language, split, PairStates(pos, neg, len(split.train), list(range(1, layers + 1)))))
    pairs = sum(len(s.train) + len(s.test) for _, _, s, _ in cells)
    c.say(f"analysis_overhead: {len(concepts)} concepts x {len(languages)} languages ({pairs} pairs), states "
          f"[pairs, {layers}, {hidden}], {repeats} repeat(s) interleaved")

    variants = {"off": spec.extract.model_copy(update={"folds": 1, "intervals": False}),
                "on": spec.extract.model_copy(update={"folds": 5, "intervals": True})}
    parts: dict[str, list[dict[str, float]]] = {name: [] for name in variants}

    def stage(name: str) -> float:
        extract = variants[name]
        start, cpu_start = time.perf_counter(), time.process_time()
        by_concept: dict[str, list] = {}
        for concept, language, split, states in cells:
            result = recognise(states, "bench", concept, language, extract, spec.data.seed, True, split)
            by_concept.setdefault(concept, []).append(result)
        recognised, cpu_recognised = time.perf_counter(), time.process_time()
        for results in by_concept.values():
            analyse_concept(results, cross, spec.analysis)
        end, cpu_end = time.perf_counter(), time.process_time()
        parts[name].append({"recognition_s": recognised - start, "cross_lingual_s": end - recognised,
                            "cpu_s": cpu_end - cpu_start, "recognition_cpu_s": cpu_recognised - cpu_start,
                            "cross_lingual_cpu_s": cpu_end - cpu_recognised})
        return end - start

    times = c.interleave({name: (lambda name=name: stage(name)) for name in variants}, repeats, log=c.say)
    ratio = c.median_ratio(times["on"], times["off"])
    on_seconds = c.median(times["on"])
    timed = {name: parts[name][1:] or parts[name] for name in variants}  # the warm-up run is untimed
    cpu = {name: [p["cpu_s"] for p in timed[name]] for name in variants}
    rows = [{"variant": name, "stage_s": c.median(times[name]), "stage_cpu_s": c.median(cpu[name]),
             "recognition_s": c.median([p["recognition_s"] for p in timed[name]]),
             "cross_lingual_s": c.median([p["cross_lingual_s"] for p in timed[name]])}
            for name in variants]
    c.say("")
    c.say(c.table(rows))
    forward = float(sum(forward_calls.values()))
    cpu_on = c.median(cpu["on"])
    ratios = {
        "stage_time_on_over_off": c.ratio_entry(ratio, "info (what folds, intervals and baselines cost)", None),
        "stage_cpu_time_on_over_off": c.ratio_entry(c.median_ratio(cpu["on"], cpu["off"]),
                                                    "info (the same in CPU seconds: less sensitive to other load)",
                                                    None),
        "stage_seconds_on": c.ratio_entry(on_seconds, "<= 60 on 2 cores (full size; wall time, other load included)",
                                          None if args.quick else on_seconds <= 60),
        # one thread: CPU seconds are the wall time the stage takes when it has a core to itself
        "stage_cpu_seconds_on": c.ratio_entry(cpu_on, "<= 60 (full size, CPU seconds of this process)",
                                              None if args.quick else cpu_on <= 60),
        "forward_passes": c.ratio_entry(forward, "== 0", forward == 0),
    }
    c.report(NAME, args, meta, {
        "concepts": concepts, "languages": languages, "pairs": pairs, "layers": layers, "hidden": hidden,
        "repeats": repeats, "variants": {k: v.model_dump() for k, v in variants.items()}, "ratios": ratios,
        "raw": {"times": times, "parts": parts}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
