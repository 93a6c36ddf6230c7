"""Packaged model cold load: mvp's cached safetensors copy vs loading the GGUF through transformers.

    python -m benchmarks.cold_load             # packaged gemma3-270m (each GGUF load: ~100 s, ~2.7 GB)
    python -m benchmarks.cold_load --quick     # a tiny float32 GGUF written on the spot, seconds

Each load runs in a fresh Python process (imports done before the clock starts), so every load is
cold for the process; the files themselves sit in the OS page cache (one untimed warm-up load
first). Measured: ``load_model`` of the packaged alias, which reads the converted float32
safetensors copy (weights + tokenizer), against ``AutoModelForCausalLM.from_pretrained(gguf.parent,
gguf_file=...)`` + the GGUF tokenizer, what every load would cost without the copy. Goal: <= 0.15x.
Peak RSS of each process is kept too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common as c

NAME = "cold_load"
TINY_ALIAS = "bench-tiny-gguf"


def register_tiny(folder: Path) -> None:
    """A packaged entry for a tiny GGUF, so the quick run goes through mvp's own conversion and load."""
    from mvplatform.models import PACKAGED, PackagedModel

    gguf = c.write_tiny_gguf(folder / "gguf" / "tiny.gguf")
    PACKAGED[TINY_ALIAS] = PackagedModel(TINY_ALIAS, "none", "none", "tiny benchmark GGUF", lambda _cache: gguf,
                                         "benchmarks", c.TINY["num_hidden_layers"])


def child(args: argparse.Namespace) -> None:
    import resource

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # imported before the clock

    from mvplatform.models import PACKAGED, default_cache_dir, load_model
    from mvplatform.spec import ModelSpec

    cache = Path(args.cache_dir) if args.cache_dir else None
    if args.alias == TINY_ALIAS:
        register_tiny(cache)
    if args.child == "safetensors":
        start = time.perf_counter()
        loaded = load_model(ModelSpec(name=args.alias, device="cpu"), cache)
        seconds = time.perf_counter() - start
        n_params = sum(p.numel() for p in loaded.model.parameters())
    else:
        gguf = PACKAGED[args.alias].gguf_path(cache or default_cache_dir())
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        seconds = time.perf_counter() - start
        n_params = sum(p.numel() for p in model.parameters())
    print(c.MARK + json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                               / 1024, "parameters": n_params}), flush=True)


def load_once(kind: str, alias: str, cache_dir: Path | None, threads: list[str]) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.cold_load", "--child", kind, "--alias", alias, *threads]
    if cache_dir:
        cmd += ["--cache-dir", str(cache_dir)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=c.ROOT, capture_output=True, text=True, timeout=1800, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(c.MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} load failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len(c.MARK):])
    out["process_seconds"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--model", default="gemma3-270m", help="packaged alias")
    p.add_argument("--child", choices=["safetensors", "gguf"], help=argparse.SUPPRESS)
    p.add_argument("--alias", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    c.apply_threads(args)
    if args.child:
        child(args)
        return 0
    repeats = args.repeats or (1 if args.quick else 2)
    meta = c.machine()
    tmp = tempfile.TemporaryDirectory()
    from mvplatform.models import CONVERTED_MARKER, converted_dir, ensure_converted

    if args.quick:
        alias, cache = TINY_ALIAS, Path(tmp.name)
        register_tiny(cache)
    else:
        alias, cache = args.model, None
    existed = (converted_dir(alias, cache) / CONVERTED_MARKER).is_file()
    start = time.perf_counter()
    ensure_converted(alias, cache)  # the one-off conversion (already done on a machine that ran mvp)
    conversion_s = None if existed else time.perf_counter() - start
    c.say(f"cold_load: {alias}, {repeats} GGUF load(s) interleaved with safetensors loads, a fresh process each"
          + ("" if existed else f" (converted now in {conversion_s:.1f} s)"))
    if not args.quick:
        load_once("safetensors", alias, cache, c.thread_args(args))  # warm-up: page cache
    runs: dict[str, list[dict]] = {"safetensors": [], "gguf": []}
    for r in range(repeats):
        for kind in (("safetensors", "gguf") if r % 2 == 0 else ("gguf", "safetensors")):
            out = load_once(kind, alias, cache, c.thread_args(args))
            runs[kind].append(out)
            c.say(f"  repeat {r + 1}/{repeats} {kind}: {out['seconds']:.2f} s, peak RSS {out['max_rss_mb']:.0f} MB")
    st = [r["seconds"] for r in runs["safetensors"]]
    gg = [r["seconds"] for r in runs["gguf"]]
    ratio = c.median_ratio(st, gg)
    rss_ratio = c.median_ratio([r["max_rss_mb"] for r in runs["safetensors"]], [r["max_rss_mb"] for r in runs["gguf"]])
    c.say("")
    c.say(c.table([{"load": k, "median_s": c.median([r["seconds"] for r in v]),
                    "median_process_s": c.median([r["process_seconds"] for r in v]),
                    "peak_rss_mb": c.median([r["max_rss_mb"] for r in v])} for k, v in runs.items()]))
    ratios = {"load_time_safetensors_over_gguf": c.ratio_entry(ratio, "<= 0.15", ratio <= 0.15),
              "peak_rss_safetensors_over_gguf": c.ratio_entry(rss_ratio, "info", None)}
    c.report(NAME, args, meta, {
        "model": "tiny random llama GGUF (float32)" if args.quick else alias, "repeats": repeats,
        "conversion_seconds_this_run": conversion_s, "ratios": ratios, "raw": runs})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
