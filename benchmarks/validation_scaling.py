"""Validation time grows linearly with spec and data size (issue 24: no quadratic check, no hang).

    python -m benchmarks.validation_scaling            # 1k, 10k, 100k entries
    python -m benchmarks.validation_scaling --quick    # 1k, 10k (seconds)

Three inputs of N entries each, validated as `mvp validate` would:
- a spec whose ``data.languages`` lists N codes (a duplicate check once took minutes at 100k);
- a spec of N scalar values under an unknown key (the loader's duplicate-key and size checks);
- an MVALUE data file of N pairs, read with duplicate-key and repeat checks (``read_pairs``).
Each is refused or read the way a user would see it; the time is the whole call. The ratio
time(10 N) / time(N) is 10 for linear work and 100 for quadratic: goal < 30 (measured 8-20 on a
shared 2-core machine: Python's garbage collector and the other processes add to the larger sizes).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import _common as c

NAME = "validation_scaling"


def _spec_with_languages(n: int) -> str:
    # "en" first and then repeats: the refusal names the duplicate only after a full pass over the list.
    return json.dumps({"data": {"languages": ["en"] + ["fr"] * (n - 1)}})


def _spec_with_values(n: int) -> str:
    return "name: x\nnotes:\n" + "  - x\n" * n  # short lines: 100k entries stay under the size limit


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=3)
    args = p.parse_args(argv)
    repeats = c.repeats_of(args, 3)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    meta = c.machine()

    from mvplatform.data import read_pairs
    from mvplatform.errors import MvpError
    from mvplatform.spec import MAX_SPEC_NODES, parse_spec

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)

    def refused(text: str) -> Callable[[], None]:
        def run() -> None:
            try:
                parse_spec(text)
            except MvpError:
                return
            raise AssertionError("expected a refusal")
        return run

    def data_file(n: int) -> Callable[[], None]:
        folder = root / f"pairs{n}"
        path = folder / "morality" / "morality_en.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"g": {f"{i:06d}": {"pos": f"I helped person {i}.", "neg": f"I hurt person {i}."}
                                          for i in range(n)}}))
        return lambda: read_pairs(folder, "morality", "en")

    inputs = {"languages_list": lambda n: refused(_spec_with_languages(min(n, MAX_SPEC_NODES - 10))),
              "yaml_values": lambda n: refused(_spec_with_values(min(n, MAX_SPEC_NODES - 10))),
              "data_pairs": data_file}
    rows, ratios, raw = [], {}, {}
    for kind, make in inputs.items():
        runs = {f"{kind}_{n}": make(n) for n in sizes}
        c.say(f"{kind}: sizes {sizes}, {repeats} interleaved repeats")
        times = c.interleave(runs, repeats, log=c.say)
        raw[kind] = times
        for small, large in zip(sizes, sizes[1:]):
            ratio = c.median(times[f"{kind}_{large}"]) / c.median(times[f"{kind}_{small}"])
            ratios[f"{kind}_time_{large}_over_{small}"] = c.ratio_entry(ratio, "< 30 (10 = linear, 100 = quadratic)", ratio < 30)
        rows += [{"input": kind, "entries": n, "median_s": c.median(times[f"{kind}_{n}"])} for n in sizes]
    c.say("")
    c.say(c.table(rows))
    c.report(NAME, args, meta, {"sizes": sizes, "repeats": repeats, "ratios": ratios,
                                "raw": {"times_s": raw, "table": rows}},
             note="the spec inputs stop below the loader's node limit, so every size is parsed in full")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
