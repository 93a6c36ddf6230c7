"""Shared helpers of the benchmarks: machine facts, side-by-side timing, tables, JSON results, tiny models.

Every figure a benchmark reports is a ratio of two measurements taken in the same run, on the same
model and inputs, with the repetitions of baseline and candidate interleaved (ABBA order), and the
median over repetitions of the per-repetition ratio. The machines these run on are shared and
noisy, so no absolute time is a target; absolute times are kept in the JSON for reference.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------
# Command line and results


def parser(description: str, repeats: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny random model and tiny sizes (seconds; what tests/test_benchmarks.py runs)")
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved repetitions of each measurement (default {repeats}; --quick: 2)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file to write (default benchmarks/results/NAME.json; --quick: results/quick/NAME.json)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's, one per core). On a shared, busy machine use 1: "
                        "with 2 threads on 2 cores that other processes also use, every parallel op waits for a "
                        "descheduled thread and CPU runs get 10x slower and erratic")
    return p


def apply_threads(args: argparse.Namespace) -> None:
    """Set torch's thread count from ``--threads`` (and export it for child processes and Ray workers)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        os.environ["MKL_NUM_THREADS"] = str(args.threads)


def thread_args(args: argparse.Namespace) -> list[str]:
    """The ``--threads`` option to hand on to a child benchmark process."""
    return ["--threads", str(args.threads)] if args.threads else []


def repeats_of(args: argparse.Namespace, default: int) -> int:
    return args.repeats if args.repeats is not None else (2 if args.quick else default)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True, check=False).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    try:
        import transformers

        transformers_version = transformers.__version__
    except ImportError:  # pragma: no cover
        transformers_version = "none"
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": dirty,  # tracked files differed from the commit (other work in the tree)
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers_version,
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def result_path(name: str, args: argparse.Namespace) -> Path:
    if args.out is not None:
        return Path(args.out)
    return (RESULTS / "quick" if args.quick else RESULTS) / f"{name}.json"


def write_result(name: str, args: argparse.Namespace, meta: dict[str, Any], payload: dict[str, Any]) -> Path:
    """``{benchmark, quick, machine, ..., ratios, raw}`` as JSON; returns the path."""
    path = result_path(name, args)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(meta)
    meta["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    document = {"benchmark": name, "quick": bool(args.quick), "command": f"python -m benchmarks.{name}"
                + (" --quick" if args.quick else ""), "machine": meta, **payload}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, default=_jsonable) + "\n")
    tmp.replace(path)
    return path


def _jsonable(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Timing


def interleave(candidates: dict[str, Callable[[], Any]], repeats: int, warmup: bool = True,
               log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Time each candidate ``repeats`` times, alternating their order (A B, B A, A B, ...).

    A candidate may return its own measured seconds (a float), e.g. from inside a subprocess;
    otherwise the wall time of the call counts. ``warmup`` runs each once first, untimed.
    """
    names = list(candidates)
    if warmup:
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            value = candidates[name]()
            elapsed = time.perf_counter() - start
            seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else elapsed
            times[name].append(seconds)
            if log:
                log(f"  repeat {r + 1}/{repeats} {name}: {seconds:.3f} s")
    return times


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over repetitions of numerator[i] / denominator[i] (both measured side by side)."""
    return float(statistics.median(a / b for a, b in zip(numerator, denominator)))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


class PeakRSS:
    """Peak resident memory of this process above its level at entry, sampled every ``interval`` s.

    torch's CPU allocations bypass tracemalloc, so the process RSS is the honest measure on CPU; on
    CUDA use ``torch.cuda.max_memory_allocated`` instead.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self.before = 0
        self._stop = threading.Event()

    def __enter__(self) -> Self:
        import psutil

        self._process = psutil.Process()
        self.before = self._process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.before) / 2**20


# ---------------------------------------------------------------------------------------------
# Output


def table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A plain fixed-width text table."""
    if not rows:
        return "(no rows)"
    columns = columns or list(rows[0])
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join([line, rule, *body])


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def report(name: str, args: argparse.Namespace, meta: dict[str, Any], payload: dict[str, Any],
           note: str | None = None) -> Path:
    """Write the result JSON, then print where it went, an optional note and the ratios (always last)."""
    path = write_result(name, args, meta, payload)
    say(f"\nwrote {path}")
    if note:
        say(note)
    for key, entry in payload.get("ratios", {}).items():
        say(ratio_line(key, entry["value"], entry["goal"], entry["met"]))
    return path


def ratio_line(name: str, value: float, goal: str, met: bool | None) -> str:
    verdict = "n/a" if met is None else ("MET" if met else "MISSED")
    return f"RATIO {name} = {value:.4g}  (goal {goal}: {verdict})"


def ratio_entry(value: float, goal: str, met: bool | None, **extra: Any) -> dict[str, Any]:
    return {"value": value, "goal": goal, "met": met, **extra}


def say(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------
# Tiny random models for --quick (as tests/conftest.py builds them: no network, no weights)

CORPUS = [
    "I helped my neighbour carry her shopping.", "I kept the wallet I found.", "Question: Answer:",
    "J'ai aidé mon voisin.", "Ich habe geholfen.", "我帮助了邻居。", "私は隣人を助けました。",
    "The quick brown fox jumps over the lazy dog.", "[INST] [/INST]", "0123456789 .,;:!?",
    "Tell me how to do it. I'm sorry, I cannot help with that.",
]


def tiny_tokenizer():
    from tests.tiny import train_tokenizer

    return train_tokenizer(CORPUS)


TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512}


def tiny_model_dir(folder: Path, arch: str = "llama") -> Path:
    """A saved local model directory (random weights) with a tokenizer; built once per folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                  **TINY)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_gguf(path: Path) -> Path:
    """A tiny float32 LLaMA GGUF (random weights, the tiny tokenizer) that transformers can load."""
    import gguf
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if path.is_file():
        return path
    tokenizer = tiny_tokenizer()
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    tokens = [""] * len(state["model"]["vocab"])
    for token, index in state["model"]["vocab"].items():
        tokens[index] = token
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["model"]["merges"]]
    config = AutoConfig.for_model("llama", vocab_size=len(tokens), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                  **TINY)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(TINY["max_position_embeddings"])
    writer.add_embedding_length(TINY["hidden_size"])
    writer.add_block_count(TINY["num_hidden_layers"])
    writer.add_feed_forward_length(TINY["intermediate_size"])
    writer.add_head_count(TINY["num_attention_heads"])
    writer.add_head_count_kv(TINY["num_key_value_heads"])
    writer.add_rope_dimension_count(TINY["hidden_size"] // TINY["num_attention_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i < 4 else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_unk_token_id(3)
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    block = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        if name in top:
            gguf_name = top[name]
        else:
            parts = name.split(".")  # model.layers.{i}.{module...}.weight
            gguf_name = f"blk.{parts[2]}.{block['.'.join(parts[3:-1])]}.weight"
        writer.add_tensor(gguf_name, tensor.detach().numpy().astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def random_vectors(n_layers: int, hidden: int, seed: int = 0):
    """ConceptVectors with random unit directions and unit state norms (for --quick steering)."""
    import numpy as np

    from mvplatform.concepts import ConceptVectors

    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n_layers, hidden))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    return ConceptVectors(list(range(1, n_layers + 1)), directions, "cluster_mean", np.full(n_layers, 4.0))


# ---------------------------------------------------------------------------------------------
# Submissions in a fresh process (what `mvp submit` costs a user)

MARK = "@@MVP-BENCH@@"


@dataclass
class SubmitBench:
    """What a submitting benchmark (``resubmit``, ``scaling``) starts from."""

    args: argparse.Namespace
    repeats: int
    meta: dict[str, Any]
    tmp: tempfile.TemporaryDirectory
    model: str  # a spec's model.name: the packaged alias, or the tiny model's folder with --quick
    model_name: str  # for the printout and the JSON


def submit_bench(doc: str, argv: list[str] | None) -> SubmitBench:
    """Parse the common options (plus ``--model``), set threads, note the machine, build the model."""
    p = parser(doc.splitlines()[0], repeats=2)
    p.add_argument("--model", default="gemma3-270m")
    args = p.parse_args(argv)
    apply_threads(args)
    tmp = tempfile.TemporaryDirectory()
    model = str(tiny_model_dir(Path(tmp.name) / "tiny")) if args.quick else args.model
    return SubmitBench(args, args.repeats or (1 if args.quick else 2), machine(), tmp, model,
                       "tiny random llama" if args.quick else args.model)


def submit_in_subprocess(spec_path: Path, env: dict[str, str] | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run ``submit()`` of a spec file in a new Python process; returns its summary and timings.

    ``seconds`` is ``submit()``'s own duration (Ray start, model loads, forward passes, analyses,
    MLflow logging); ``process_seconds`` adds interpreter start and imports.
    """
    code = ("import sys; from benchmarks._common import _submit_child; _submit_child(sys.argv[1])")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(spec_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, check=False)
    process_seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"submit of {spec_path} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][len(MARK):])
    out["process_seconds"] = process_seconds
    return out


def _submit_child(spec_path: str) -> None:
    import io
    import resource

    from rich.console import Console

    from mvplatform.spec import load_spec
    from ray_jobs.submit import submit

    path = Path(spec_path)
    spec = load_spec(path)
    start = time.perf_counter()
    summary = submit(spec, path, console=Console(file=io.StringIO(), width=120))
    seconds = time.perf_counter() - start
    forward_seconds = _forward_seconds(summary)
    print(MARK + json.dumps({
        "seconds": seconds, "summary_seconds": summary.seconds, "ok": summary.ok, "failures": summary.failures,
        "computed": summary.computed, "cached": summary.cached, "analysed": summary.analysed,
        "forward_seconds": forward_seconds, "parent_run_id": summary.parent_run_id,
        "driver_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }), flush=True)


def _forward_seconds(summary: Any) -> float | None:
    """Sum of the extraction child runs' ``seconds`` (PairStates.seconds: 0 when states were cached)."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=summary.tracking_uri)
        parent = client.get_run(summary.parent_run_id)
        runs = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{summary.parent_run_id}' and tags.step = 'extract'")
        return float(sum(run.data.metrics.get("seconds", 0.0) for run in runs))
    except Exception:  # noqa: BLE001 - a reporting extra, never a reason to fail the benchmark
        return None
