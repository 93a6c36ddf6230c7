"""Search efficiency: Optuna TPE vs the exhaustive grid over the same layer-window x strength space.

    python -m benchmarks.search_efficiency            # packaged smollm2-135m-instruct, English
    python -m benchmarks.search_efficiency --regrid   # re-evaluate the grid even if its table is cached
    python -m benchmarks.search_efficiency --quick    # tiny random model, tiny grid, seconds

The objective is the control stage's: the following rate of the harmful search instructions,
judged by the built-in refusal-keyword judge, with harmfulness concept vectors (state-norm scale).
To keep this affordable on CPU, the whole grid (every window start x width x strength) is evaluated
ONCE on the model, with mvp's trial-batched ``Controller`` (8 settings per generation), and its
objective table (every setting's per-instruction verdicts) is cached as JSON. TPE then runs through
mvp's real ``run_study`` (ask/tell, 8 trials per batch, constant liar, memo of repeated settings)
against a lookup-backed controller that replays that table, for several seeds; so does random
search as a second reference. The utility guard is off (the objective alone decides).

Reported: evaluations TPE needs until its best is within 1 point (0.01 following rate) of the
grid's best, counted per batch of 8 (a batch is generated together, so all its trials are paid;
zero-strength settings reuse the unsteered baseline and cost nothing, as in run_study), median over
seeds, as a share of the grid's steered settings (the grid must evaluate every one to know its
best). Goal: <= 25% of the grid. The objective's direction is the spec's choice: maximize (the
paper: steer into following) is the goal figure; minimize (strengthen refusal) is replayed from the
same table as a second landscape.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import _common as c

NAME = "search_efficiency"
TOLERANCE = 0.01  # 1 point of following rate


def rate(labels: list[str]) -> float:
    return sum(label == "followed" for label in labels) / len(labels)


class Reached(Exception):
    """Raised from run_study's batch callback once the target is reached (stops the replay early)."""


class LookupController:
    """Replays the cached grid table through run_study: a setting's verdicts come from the table."""

    def __init__(self, table: dict[tuple, list[str]], baseline: list[str], n_layers: int, sign: float) -> None:
        from mvplatform.control import ControllerStats

        self.table, self.baseline, self.sign = table, baseline, sign
        self.loaded = type("Loaded", (), {"n_layers": n_layers})()
        self.stats = ControllerStats()
        self.order: list[tuple] = []  # steered settings in the order they were evaluated (fresh only)
        # The unsteered rate is known before the search starts (run_study evaluates it first, and
        # every zero-strength trial reuses it), so it counts as found from the start.
        self.best = sign * rate(baseline)

    def evaluate(self, language, instructions, settings, vectors):  # Controller.evaluate's signature
        from mvplatform.control import Evaluation
        from mvplatform.judges import Verdict

        out = []
        for setting in settings:
            if setting is None:
                labels = self.baseline
            else:
                key = (setting.start, setting.width, float(setting.strength))
                labels = self.table[key]
                self.order.append(key)
            verdicts = [Verdict(label, "table") for label in labels[: len(instructions)]]
            self.stats.rows += len(verdicts)
            evaluation = Evaluation(setting, list(instructions), [""] * len(verdicts), verdicts)
            if setting is not None:
                self.best = max(self.best, self.sign * evaluation.rate)
            out.append(evaluation)
        return out


def config_for(args) -> dict[str, Any]:
    if args.quick:
        return {"model": "tiny", "language": "en", "instructions": 3, "max_new_tokens": 4,
                "start": [1, 4], "width": [1, 2], "strength": [-1.0, 1.0], "strength_step": 1.0, "batch": 8}
    return {"model": args.model, "language": "en", "instructions": args.instructions, "max_new_tokens": 20,
            "start": [4, 20], "width": [1, 4], "strength": [-1.0, 1.0], "strength_step": 0.5, "batch": 8}


def search_spec(cfg: dict[str, Any], sampler: str, seed: int, trials: int, direction: str = "maximize"):
    from mvplatform.spec import SearchSpec

    return SearchSpec.model_validate({
        "sampler": sampler, "trials": trials, "trials_per_batch": cfg["batch"], "seed": seed, "guard": None,
        "objective": {"direction": direction},
        "layers": {"start": cfg["start"], "width": cfg["width"]}, "strength": cfg["strength"],
        "strength_step": cfg["strength_step"]})


def evaluate_grid(cfg: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Every grid point on the model, 8 settings per trial-batched generation."""
    from benchmarks.trial_batching import harmfulness_vectors
    from mvplatform.control import Controller, Setting
    from mvplatform.data import load_instructions
    from mvplatform.judges import build_judge
    from mvplatform.models import load_model
    from mvplatform.search import search_space
    from mvplatform.spec import ControlSpec, ModelSpec

    quick = cfg["model"] == "tiny"
    name = str(c.tiny_model_dir(folder / "tiny")) if quick else cfg["model"]
    loaded = load_model(ModelSpec(name=name, device="auto", prompt="chat"))
    vectors = harmfulness_vectors(loaded, quick)
    harmful = list(load_instructions(cfg["language"]).search["harmful"].values())[: cfg["instructions"]]
    space = search_space(search_spec(cfg, "grid", 0, 1), loaded.n_layers)
    control = ControlSpec(generation={"max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch"] * len(harmful)})
    controller = Controller(loaded, build_judge(control.judge), control)  # the spec's default judge
    start = time.perf_counter()
    baseline = controller.evaluate(cfg["language"], harmful, [None], None)[0]
    points = list(itertools.product(space["start"], space["width"], space["strength"]))
    table: dict[str, list[str]] = {}
    steered = [Setting(s, w, float(x)) for s, w, x in points if x != 0]
    for s, w, x in points:
        if x == 0:  # strength 0 is the unsteered model: its verdicts are the baseline's
            table[f"{s},{w},{float(x)}"] = [v.label for v in baseline.verdicts]
    for i in range(0, len(steered), cfg["batch"]):
        chunk = steered[i : i + cfg["batch"]]
        for evaluation in controller.evaluate(cfg["language"], harmful, chunk, vectors):
            s = evaluation.setting
            table[f"{s.start},{s.width},{float(s.strength)}"] = [v.label for v in evaluation.verdicts]
        done = min(i + cfg["batch"], len(steered))
        if done % (cfg["batch"] * 8) == 0 or done == len(steered):
            c.say(f"  grid: {done}/{len(steered)} steered settings, {time.perf_counter() - start:.0f} s")
    return {"config": cfg, "n_layers": loaded.n_layers, "space": space, "baseline": [v.label for v in baseline.verdicts],
            "table": table, "seconds": time.perf_counter() - start, "rows_generated": controller.stats.rows,
            "new_tokens": controller.stats.new_tokens, "date": c.machine()["date"]}


def replay(grid: dict[str, Any], sampler: str, seed: int, direction: str) -> dict[str, Any]:
    """One search against the table: steered evaluations until its best is within TOLERANCE of the grid's.

    ``evaluations`` counts every steered setting of the batches run so far (a batch of 8 trials is
    generated together, so all of it is paid; zero-strength and repeated settings cost nothing, as in
    run_study); ``evaluations_exact`` is the position of the first good setting in evaluation order.
    """
    from mvplatform.search import run_study

    cfg = grid["config"]
    table = {tuple(float(v) if i == 2 else int(v) for i, v in enumerate(k.split(","))): labels
             for k, labels in grid["table"].items()}
    sign = 1.0 if direction == "maximize" else -1.0
    target = max(sign * rate(labels) for labels in table.values()) - TOLERANCE - 1e-12
    controller = LookupController(table, grid["baseline"], grid["n_layers"], sign)
    harmful = [f"instruction {i}" for i in range(len(grid["baseline"]))]
    reached_at: int | None = 0 if controller.best >= target else None

    def on_batch(done: int, total: int) -> None:
        nonlocal reached_at
        if controller.best >= target:
            reached_at = len(controller.order)
            raise Reached

    start = time.perf_counter()
    if reached_at is None:
        try:
            run_study(controller, cfg["language"], None, harmful, [],
                      search_spec(cfg, sampler, seed, 3 * len(table), direction), study_name=f"{sampler}-{seed}",
                      on_batch=on_batch)
        except Reached:
            pass
    exact = 0 if reached_at == 0 else None
    if reached_at:
        exact = next(i + 1 for i, key in enumerate(controller.order) if sign * rate(table[key]) >= target)
    return {"sampler": sampler, "seed": seed, "direction": direction, "evaluations": reached_at,
            "evaluations_exact": exact, "distinct_settings": len(set(controller.order)),
            "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=10)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--instructions", type=int, default=12, help="harmful search instructions (default 12)")
    p.add_argument("--regrid", action="store_true", help="re-evaluate the grid even if its table is cached")
    p.add_argument("--grid-table", type=Path, default=None,
                   help="cached grid table (default benchmarks/results/search_grid_table.json)")
    args = p.parse_args(argv)
    c.apply_threads(args)
    seeds = args.repeats or (3 if args.quick else 10)
    meta = c.machine()
    cfg = config_for(args)
    digest = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    table_path = args.grid_table or (c.result_path(NAME, args).parent / "search_grid_table.json")
    tmp = tempfile.TemporaryDirectory()
    grid = None
    if table_path.is_file() and not args.regrid and not args.quick:
        stored = json.loads(table_path.read_text())
        if stored.get("digest") == digest:
            grid = stored
    if grid is None:
        c.say(f"search_efficiency: evaluating the whole grid once on {cfg['model']} ...")
        grid = evaluate_grid(cfg, Path(tmp.name))
        grid["digest"] = digest
        if not args.quick:
            table_path.parent.mkdir(parents=True, exist_ok=True)
            table_path.write_text(json.dumps(grid) + "\n")
        source = f"evaluated in this run ({grid['seconds']:.0f} s)"
    else:
        source = f"cached table {table_path.name} (evaluated {grid['date']} in {grid['seconds']:.0f} s)"
    rates = {k: rate(labels) for k, labels in grid["table"].items()}
    size = len(rates)
    steered = sum(1 for k in rates if float(k.split(",")[2]) != 0)  # what the grid generates (+ the baseline)
    baseline_rate = rate(grid["baseline"])
    labels = {}
    for key_labels in grid["table"].values():
        for label in key_labels:
            labels[label] = labels.get(label, 0) + 1
    c.say(f"grid: {size} settings ({' x '.join(str(len(v)) for v in grid['space'].values())}: start x width x "
          f"strength; {steered} steered ones to generate), {source}; unsteered following rate {baseline_rate:.3f}; "
          f"verdicts over the grid {labels}")
    c.say(f"replaying TPE and random search against the cached table (lookup-backed controller), {seeds} seeds each")

    summary: dict[str, Any] = {}
    runs: dict[str, dict[str, list]] = {}
    rows = []
    for direction in ("maximize", "minimize"):
        best = (max if direction == "maximize" else min)(rates.values())
        within = sum(abs(r - best) <= TOLERANCE + 1e-12 for r in rates.values())
        runs[direction] = {"tpe": [], "random": []}
        for seed in range(seeds):
            for sampler in runs[direction]:
                runs[direction][sampler].append(replay(grid, sampler, seed, direction))
        c.say(f"  {direction} following rate: grid best {best:.3f} ({within} of {size} settings within 1 point); "
              f"TPE evaluations per seed {[r['evaluations'] for r in runs[direction]['tpe']]}, random "
              f"{[r['evaluations'] for r in runs[direction]['random']]}")

        def med(sampler: str, key: str = "evaluations", direction: str = direction) -> float:
            return c.median([r[key] if r[key] is not None else math.inf for r in runs[direction][sampler]])

        summary[direction] = {"grid_best": best, "settings_within_1_point": within,
                              "tpe_median": med("tpe"), "random_median": med("random")}
        rows.append({"objective": direction, "method": "grid (exhaustive)", "evaluations": steered,
                     "share_of_grid": 1.0})
        for sampler in ("tpe", "random"):
            rows.append({"objective": direction, "method": f"{sampler} (median of {seeds} seeds)",
                         "evaluations": med(sampler), "share_of_grid": med(sampler) / steered,
                         "first_hit_index": med(sampler, "evaluations_exact"),
                         "max_over_seeds": max(r["evaluations"] if r["evaluations"] is not None else math.inf
                                               for r in runs[direction][sampler])})
    c.say("")
    c.say(c.table(rows, ["objective", "method", "evaluations", "share_of_grid", "first_hit_index", "max_over_seeds"]))
    share = summary["maximize"]["tpe_median"] / steered
    share_min = summary["minimize"]["tpe_median"] / steered
    ratios = {
        "tpe_evaluations_over_grid": c.ratio_entry(share, "<= 0.25", share <= 0.25, objective="maximize following"),
        "random_evaluations_over_grid": c.ratio_entry(summary["maximize"]["random_median"] / steered, "info", None),
        "tpe_evaluations_over_grid_minimize": c.ratio_entry(share_min, "info (<= 0.25)", None,
                                                            objective="minimize following"),
        "random_evaluations_over_grid_minimize": c.ratio_entry(summary["minimize"]["random_median"] / steered,
                                                               "info", None),
    }
    c.report(NAME, args, meta, {
        "model": "tiny random llama" if args.quick else cfg["model"], "config": cfg, "grid_size": size,
        "grid_steered_evaluations": steered, "grid_source": source, "unsteered_following_rate": baseline_rate,
        "grid_verdicts": labels, "objectives": summary, "seeds": seeds, "tolerance": TOLERANCE, "ratios": ratios,
        "raw": {"runs": runs, "grid_seconds": grid["seconds"], "grid_rows_generated": grid["rows_generated"],
                "grid_rates": rates}},
        note="note: TPE and random search were replayed against the grid's cached objective table, not re-generated; "
             "evaluations count steered settings of the batches run (8 per batch), the grid's its steered settings")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
