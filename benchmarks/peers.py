"""Side by side with the peers: steering-vectors, repeng and nnsight on the same model, pairs and threads.

    pip install -e ".[peers]"               # the peers, see pyproject.toml's `peers` extra for the pins
    python -m benchmarks.peers --threads 1  # gemma3-270m and smollm2-135m-instruct (~10 min on 2 busy cores)
    python -m benchmarks.peers --quick      # tiny random model, the peers that are installed

What a user who already has one of these tools would try, each measured in one run with the
repetitions interleaved (benchmarks/README.md), on the same loaded model and tokenizer:

- **extraction**, every layer, morality/en's built-in training pairs (``--pairs 64`` keeps 51 for
  training, as in issue 23), last token, batches of 16: mvp's ``last_token_states`` +
  ``extract_vectors`` (cluster mean; the default read point ``hidden_states``) vs
  steering-vectors' ``train_steering_vector`` (mean aggregator: the same mean difference), repeng's
  ``ControlVector.train`` (it has no mean difference: ``pca_diff``, its default) and a user's
  nnsight trace saving every decoder layer's output. Time, peak memory above the loaded model (CPU:
  sampled RSS, in this process; GPU: ``max_memory_allocated``) over 16 pairs, and the cosine of each
  peer's vector with mvp's per layer, against both mvp read points (``extract.read``:
  ``hidden_states`` and ``block_output``); for repeng also the mean difference of the states it
  read (``transform_hiddens``), which isolates the read point from its PCA.
- **steered generation**, new tokens/s: mvp's ``generate`` with its steering hooks vs
  steering-vectors' ``SteeringVector.apply``, repeng's ``ControlModel`` and an nnsight
  ``generate`` trace adding the vector at every step; the same 4-layer window, strength, vectors
  (mvp's, ``state_norm`` scale), prompts, greedy decoding, and end-of-sequence off so every row
  generates ``--max-new-tokens``. The plain transformers ``generate`` is timed beside them
  (information). Whether each peer's tokens equal mvp's is recorded.
- **search**, trials per minute: one ``Controller.evaluate`` with ``--trials`` settings
  (trial batching: every setting's rows in one generation) vs the loop a user writes around the
  fastest peer of the steered-generation test, one setting per generation, judged by the same
  refusal-keyword judge.

Goals (issue 23): extraction time <= 0.5x the fastest peer's; steered tokens/s >= 1.0x the fastest
peer's; cosine >= 0.999 wherever the read point is the same. repeng only runs with numpy 2 after
``np.float_ = np.float64`` (its module uses the removed alias in annotations); this script sets it.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: repeng draws progress bars it cannot hide
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import _common as c

NAME = "peers"
MODELS = ("gemma3-270m", "smollm2-135m-instruct")
PEERS = {"steering_vectors": "steering-vectors", "repeng": "repeng", "nnsight": "nnsight"}  # module -> distribution
READS = ("hidden_states", "block_output")

Vectors = dict[int, np.ndarray]  # 1-based layer -> [H]


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer (None: not installed)."""
    out: dict[str, str | None] = {}
    for module, dist in PEERS.items():
        try:
            out[module] = version(dist)
        except PackageNotFoundError:
            out[module] = None
    return out


def import_peer(module: str) -> Any:
    if module == "repeng" and not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 annotates with numpy 1's alias
    return importlib.import_module(module)


def cosines(a: Vectors, b: Vectors) -> dict[int, float]:
    return {layer: float(a[layer] @ b[layer] / (np.linalg.norm(a[layer]) * np.linalg.norm(b[layer]) + 1e-30))
            for layer in sorted(a) if layer in b}


# ---------------------------------------------------------------------------------------------
# Extraction: pairs -> one vector per layer


def mvp_extract(loaded: Any, pairs: list, batch: int, read: str) -> tuple[Vectors, Any]:
    """mvp's path: states at every layer, then cluster mean (the vectors carry the steering norms)."""
    from mvplatform.activations import last_token_reads
    from mvplatform.concepts import extract_vectors

    layers = list(range(1, loaded.n_layers + 1))
    reads = last_token_reads(loaded, [p.pos for p in pairs] + [p.neg for p in pairs], layers, batch, read=read)
    n = len(pairs)
    vectors = extract_vectors(reads.states[:n], reads.states[n:], layers, "cluster_mean")
    norms = reads.write_norms.astype(np.float64).mean(axis=0)  # steering's scale, at the block output
    return dict(zip(layers, vectors.directions)), replace(vectors, norms=norms)


def sv_extract(loaded: Any, pairs: list, batch: int) -> Vectors:
    from steering_vectors import train_steering_vector

    sv = train_steering_vector(loaded.model, loaded.tokenizer, [(p.pos, p.neg) for p in pairs], batch_size=batch)
    return {k + 1: v.float().cpu().numpy() for k, v in sv.layer_activations.items()}


def repeng_extract(loaded: Any, pairs: list, batch: int) -> tuple[Vectors, Vectors]:
    """repeng's PCA directions, and the mean difference of the very states it read."""
    ControlVector, DatasetEntry = import_peer("repeng").ControlVector, import_peer("repeng").DatasetEntry
    seen: dict[int, np.ndarray] = {}

    def keep(hiddens: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        seen.update(hiddens)
        return hiddens

    vector = ControlVector.train(loaded.model, loaded.tokenizer, [DatasetEntry(p.pos, p.neg) for p in pairs],
                                 hidden_layers=list(range(loaded.n_layers)), batch_size=batch, method="pca_diff",
                                 transform_hiddens=keep)
    pca = {k + 1: np.asarray(v, dtype=np.float64) for k, v in vector.directions.items()}
    mean = {k + 1: (h[::2].astype(np.float64) - h[1::2]).mean(axis=0) for k, h in seen.items()}  # pos, neg, ...
    return pca, mean


class NnsightReader:
    """A user's nnsight trace: every decoder block's output saved, the last real token gathered."""

    def __init__(self, loaded: Any) -> None:
        from nnsight import NNsight

        self.loaded, self.model = loaded, NNsight(loaded.model)
        self.blocks = self.model.model.layers if hasattr(loaded.model, "model") else None
        if self.blocks is None:
            raise RuntimeError("nnsight path written for models with .model.layers")

    def states(self, texts: list[str]) -> list[torch.Tensor]:
        enc = self.loaded.tokenizer(texts, return_tensors="pt", padding=True).to(self.loaded.device)
        saved = []
        with torch.no_grad(), self.model.trace(enc["input_ids"], attention_mask=enc["attention_mask"]):
            for block in self.blocks:
                saved.append(block.output.save())
        last = enc["attention_mask"].sum(-1) - 1  # right padding
        rows = torch.arange(len(texts), device=last.device)
        return [(s[0] if isinstance(s, tuple) else s)[rows, last].float().cpu() for s in saved]

    def extract(self, pairs: list, batch: int) -> Vectors:
        total: list[torch.Tensor] | None = None
        for start in range(0, len(pairs), batch):
            chunk = pairs[start : start + batch]
            pos, neg = self.states([p.pos for p in chunk]), self.states([p.neg for p in chunk])
            diff = [(a - b).sum(0) for a, b in zip(pos, neg)]
            total = diff if total is None else [t + d for t, d in zip(total, diff)]
        assert total is not None
        return {k + 1: (t / len(pairs)).double().numpy() for k, t in enumerate(total)}


def nnsight_extractor(loaded: Any, batch: int) -> Callable[[list], Vectors]:
    reader = NnsightReader(loaded)  # the model is wrapped once, as a user would
    return lambda pairs: reader.extract(pairs, batch)


# ---------------------------------------------------------------------------------------------
# Steered generation: (left-padded batch, {layer: vector}, strength, tokens) -> new token ids


@dataclass
class Generator:
    loaded: Any
    new_tokens: int
    nnsight_model: Any = None
    log: list[str] = field(default_factory=list)

    def _kwargs(self) -> dict[str, Any]:
        return {"max_new_tokens": self.new_tokens, "do_sample": False, "temperature": None, "top_p": None,
                "top_k": None, "pad_token_id": self.loaded.tokenizer.pad_token_id}

    def plain(self, enc: Any, _vectors: Vectors, _strength: float) -> torch.Tensor:
        with torch.inference_mode():
            return self.loaded.model.generate(**enc, **self._kwargs())

    def _tensor(self, vector: np.ndarray) -> torch.Tensor:
        dtype = next(self.loaded.model.parameters()).dtype
        return torch.as_tensor(vector, dtype=dtype, device=self.loaded.device)

    def steering_vectors(self, enc: Any, vectors: Vectors, strength: float) -> torch.Tensor:
        from steering_vectors import SteeringVector

        sv = SteeringVector({layer - 1: self._tensor(v) for layer, v in vectors.items()}, "decoder_block")
        with torch.inference_mode(), sv.apply(self.loaded.model, multiplier=strength, min_token_index=0):
            return self.loaded.model.generate(**enc, **self._kwargs())

    def repeng(self, enc: Any, vectors: Vectors, strength: float) -> torch.Tensor:
        repeng = import_peer("repeng")
        model = self.loaded.model
        control = repeng.ControlModel(model, [layer - 1 for layer in vectors])  # wraps the blocks in place
        try:
            control.set_control(repeng.ControlVector(model.config.model_type,
                                                     {layer - 1: v.astype(np.float32) for layer, v in vectors.items()}),
                                coeff=strength)
            with torch.inference_mode():
                return control.generate(**enc, **self._kwargs())
        finally:
            control.reset()
            control.unwrap()

    def nnsight(self, enc: Any, vectors: Vectors, strength: float) -> torch.Tensor:
        if self.nnsight_model is None:
            from nnsight.modeling.transformers import TransformersModel

            self.nnsight_model = TransformersModel(self.loaded.model, tokenizer=self.loaded.tokenizer)
        lm = self.nnsight_model
        adds = [(lm.model.layers[layer - 1], strength * self._tensor(v)) for layer, v in vectors.items()]
        with lm.generate(enc["input_ids"], attention_mask=enc["attention_mask"], **self._kwargs()) as tracer:
            for _step in tracer.iter[: self.new_tokens]:
                for block, add in adds:
                    block.output[:] += add
            ids = tracer.result.save()
        return ids


def right_padded(loaded: Any, fn: Callable[[list], Any]) -> Callable[[list], Any]:
    """The peers tokenize with the tokenizer's own padding side: right, so a row's positions do not shift
    (mvp gives the same states either way; tests/test_models.py)."""

    def run(pairs: list) -> Any:
        tokenizer = loaded.tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "right"
        try:
            return fn(pairs)
        finally:
            tokenizer.padding_side = side

    return run


def encode_left(loaded: Any, prompts: list[str]) -> Any:
    tokenizer = loaded.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return tokenizer(prompts, return_tensors="pt", padding=True).to(loaded.device)
    finally:
        tokenizer.padding_side = side


def decode_new(loaded: Any, enc: Any, ids: torch.Tensor) -> list[str]:
    new = ids[:, enc["input_ids"].shape[1]:].cpu().tolist()
    return [loaded.tokenizer.decode(row, skip_special_tokens=True).strip() for row in new]


# ---------------------------------------------------------------------------------------------
# One model, three measurements

MEMORY_PAIRS = 8  # 16 texts: one batch of 16 for every tool
MARK = "@@PEERS-MEMORY@@"


def working_extractors(loaded: Any, pairs: list, batch: int, installed: dict[str, str | None],
                       ) -> tuple[dict[str, Callable[[list], Any]], dict[str, str]]:
    """mvp and every installed peer that runs on this model (each tried once on 2 pairs: also the warm-up)."""
    extractors: dict[str, Callable[[list], Any]] = {"mvp": lambda ps: mvp_extract(loaded, ps, batch, "hidden_states")}
    extractors["mvp"](pairs[:2])
    skipped: dict[str, str] = {}
    candidates = {"steering_vectors": lambda: lambda ps: sv_extract(loaded, ps, batch),
                  "repeng": lambda: lambda ps: repeng_extract(loaded, ps, batch),
                  "nnsight": lambda: nnsight_extractor(loaded, batch)}
    for peer, make in candidates.items():
        if not installed[peer]:
            skipped[peer] = "not installed"
            continue
        try:
            fn = right_padded(loaded, make())
            fn(pairs[:2])
        except Exception as exc:  # noqa: BLE001 - a peer's failure is a finding, not a crash
            skipped[peer] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            continue
        extractors[peer] = fn
    return extractors, skipped


def memory_in_child(name: str, args: Any) -> dict[str, Any]:
    """Peak RSS of each tool's extraction over ``MEMORY_PAIRS`` pairs, in one fresh process.

    The child runs with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc then maps every block over 64 KiB on
    its own and unmaps it when freed, so RSS follows the live tensors; with glibc's default, memory
    freed by one tool is kept and reused by the next, and their RSS peaks hide each other.
    """
    command = [sys.executable, "-m", "benchmarks.peers", "--memory-child", name, "--pairs", str(args.pairs),
               "--batch-size", str(args.batch_size), *c.thread_args(args)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(command, cwd=c.ROOT, capture_output=True, text=True, env=env, timeout=1200, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory child failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK):])


def memory_child(args: Any) -> None:
    from mvplatform.data import load_split
    from mvplatform.models import load_model
    from mvplatform.spec import ModelSpec

    loaded = load_model(ModelSpec(name=args.memory_child, device="cpu", prompt="plain"))
    pairs = load_split("builtin:values", "morality", "en", max_pairs=args.pairs).train[:MEMORY_PAIRS]
    extractors, _ = working_extractors(loaded, pairs, args.batch_size, peer_versions())
    memory = {}
    for peer, fn in extractors.items():
        with c.PeakRSS() as peak:
            fn(pairs)
        memory[peer] = {"extra_mb": peak.extra_mb, "pairs": len(pairs),
                        "kind": "peak RSS above entry, fresh process, MALLOC_MMAP_THRESHOLD_=65536"}
    print(MARK + json.dumps(memory), flush=True)



def peak_memory(loaded: Any, run: Callable[[], Any]) -> dict[str, Any]:
    if loaded.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return {"extra_mb": (torch.cuda.max_memory_allocated() - before) / 2**20, "kind": "cuda max_memory_allocated"}
    with c.PeakRSS() as peak:
        run()
    return {"extra_mb": peak.extra_mb, "kind": "peak RSS above entry, in process"}


def bench_model(model: str, args: Any, installed: dict[str, str | None], repeats: int, folder: Path) -> dict[str, Any]:
    from mvplatform.control import Controller, steering_vectors
    from mvplatform.data import load_instructions, load_lexicon, load_split
    from mvplatform.judges import KeywordJudge, following_rate
    from mvplatform.models import load_model
    from mvplatform.spec import ControlSpec, GenerationSpec, ModelSpec

    name = str(c.tiny_model_dir(folder / "tiny")) if args.quick else model
    label = "tiny-llama" if args.quick else model
    loaded = load_model(ModelSpec(name=name, device="auto", prompt="plain"))
    n_layers = loaded.n_layers
    split = load_split("builtin:values", "morality", "en", max_pairs=args.pairs)
    pairs = split.train
    batch = args.batch_size
    c.say(f"\n== {label}: {n_layers} layers on {loaded.device}, {len(pairs)} morality/en training pairs, "
          f"batch {batch}, {repeats} interleaved repeats")
    out: dict[str, Any] = {"model": label, "layers": n_layers, "device": str(loaded.device), "pairs": len(pairs),
                           "skipped": {}}

    # 1. Extraction ---------------------------------------------------------------------------
    extractors, skipped = working_extractors(loaded, pairs, batch, installed)
    out["skipped"].update(skipped)
    for peer, why in skipped.items():
        c.say(f"  skipping {peer}: {why}")
    results: dict[str, Any] = {}

    def timed(peer: str) -> Callable[[], None]:
        def run() -> None:
            results[peer] = extractors[peer](pairs)
        return run

    times = c.interleave({peer: timed(peer) for peer in extractors}, repeats, warmup=False, log=c.say)
    memory = memory_in_child(name, args) if loaded.device.type == "cpu" else \
        {peer: peak_memory(loaded, lambda p=peer: extractors[p](pairs[:MEMORY_PAIRS])) for peer in extractors}
    mvp_vectors = {"hidden_states": results["mvp"][0]}
    mvp_vectors["block_output"], steer_vectors = mvp_extract(loaded, pairs, batch, "block_output")
    agreement: dict[str, dict[str, Any]] = {}
    same_read: list[float] = []
    last = n_layers
    for peer in extractors:
        if peer == "mvp":
            continue
        peer_vectors = results[peer][0] if peer == "repeng" else results[peer]
        row = {f"vs_mvp_{read}": cosines(peer_vectors, mvp_vectors[read]) for read in READS}
        if peer == "repeng":  # repeng reads hidden_states[layer + 1]: mvp's default read point, then PCA
            row["method"] = "pca_diff (first principal component of pos - neg; repeng has no mean difference)"
            row["read_point"] = "hidden_states"
            row["its_states_mean_difference_vs_mvp_hidden_states"] = cosines(results[peer][1],
                                                                              mvp_vectors["hidden_states"])
            same_read += list(row["its_states_mean_difference_vs_mvp_hidden_states"].values())
        else:  # steering-vectors and the nnsight trace read each block's output
            row["method"] = "mean difference"
            row["read_point"] = "block_output"
            same_read += list(row["vs_mvp_block_output"].values())
            same_read += [v for layer, v in row["vs_mvp_hidden_states"].items() if layer < last]
        agreement[peer] = row
    peers_timed = [p for p in extractors if p != "mvp"]
    fastest = min(peers_timed, key=lambda p: c.median(times[p])) if peers_timed else None
    out["extraction"] = {
        "times_s": times, "median_s": {p: c.median(t) for p, t in times.items()}, "memory": memory,
        "mvp_over_peer_time": {p: c.median_ratio(times["mvp"], times[p]) for p in peers_timed},
        "fastest_peer": fastest, "cosine": agreement,
        "min_cosine_same_read_point": min(same_read) if same_read else None,
        "mvp_read": "hidden_states (default; block_output vectors for the cosines and the steering below)"}
    c.say(c.table([{"extraction": p, "median_s": c.median(t), "mvp/this time": c.median_ratio(times["mvp"], t),
                    "peak_extra_mb": memory[p]["extra_mb"],
                    "cos last layer vs mvp hidden|block": None if p == "mvp" else
                    f"{agreement[p]['vs_mvp_hidden_states'][last]:.4f} | {agreement[p]['vs_mvp_block_output'][last]:.4f}",
                    "min cos layers 1..L-1": None if p == "mvp" else
                    min(v for k, v in agreement[p]["vs_mvp_hidden_states"].items() if k < last)}
                   for p, t in times.items()]))
    if "repeng" in agreement:
        c.say(f"  repeng's own read (mean difference of its states) vs mvp hidden_states: min cosine "
              f"{min(agreement['repeng']['its_states_mean_difference_vs_mvp_hidden_states'].values()):.6f}")

    # 2. Steered generation -------------------------------------------------------------------
    loaded.model.generation_config.eos_token_id = None  # equal work: every row runs max_new_tokens steps
    gen = Generator(loaded, args.max_new_tokens)
    instructions = list(load_instructions("en").search["harmful"].values())
    prompts = instructions[: args.rows]
    start = max(1, n_layers // 3)
    window = list(range(start, min(n_layers, start + 3) + 1))
    by_layer = steering_vectors(steer_vectors, "state_norm")
    vectors = {layer: by_layer[layer] for layer in window}
    strength = args.strength
    from mvplatform.generation import generate
    from mvplatform.steering import Steering

    settings = GenerationSpec(max_new_tokens=args.max_new_tokens, batch_size=len(prompts))
    steering = Steering(vectors)
    coefficients = np.full((len(prompts), len(window)), strength, dtype=np.float32)
    texts: dict[str, list[str]] = {}

    def mvp_gen() -> float:
        result = generate(loaded, prompts, settings, steering, coefficients)
        texts["mvp"] = result.texts
        return result.seconds

    gens: dict[str, Callable[[], Any]] = {"mvp": mvp_gen}
    for peer in ("steering_vectors", "repeng", "nnsight"):
        if peer not in extractors and out["skipped"].get(peer) == "not installed":
            continue
        method = getattr(gen, peer)
        try:
            small = encode_left(loaded, prompts[:1])
            Generator(loaded, 2, gen.nnsight_model).__getattribute__(peer)(small, vectors, strength)
        except Exception as exc:  # noqa: BLE001
            out["skipped"][f"{peer}_generation"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            c.say(f"  skipping {peer} generation: {out['skipped'][f'{peer}_generation']}")
            continue

        def run(peer: str = peer, method: Callable = method) -> None:
            enc = encode_left(loaded, prompts)  # tokenizing counts, as in mvp's generate
            texts[peer] = decode_new(loaded, enc, method(enc, vectors, strength))

        gens[peer] = run
    gens["transformers_unsteered"] = lambda: gen.plain(encode_left(loaded, prompts), vectors, strength)
    mvp_gen_small = GenerationSpec(max_new_tokens=2, batch_size=1)
    generate(loaded, prompts[:1], mvp_gen_small, Steering(vectors), coefficients[:1])  # warm-up
    gen_times = c.interleave(gens, repeats, warmup=False, log=c.say)
    tokens = len(prompts) * args.max_new_tokens
    gen_peers = [p for p in gens if p not in ("mvp", "transformers_unsteered")]
    fastest_gen = max(gen_peers, key=lambda p: tokens / c.median(gen_times[p])) if gen_peers else None
    same = {p: float(np.mean([a == b for a, b in zip(texts[p], texts["mvp"])])) for p in gen_peers}
    out["generation"] = {
        "rows": len(prompts), "max_new_tokens": args.max_new_tokens, "window": window, "strength": strength,
        "scale": "state_norm (block-output norms)", "times_s": gen_times,
        "tokens_per_s": {p: tokens / c.median(t) for p, t in gen_times.items()},
        "mvp_over_peer_tokens_per_s": {p: c.median_ratio(gen_times[p], gen_times["mvp"]) for p in gen_peers},
        "fastest_peer": fastest_gen, "share_of_rows_with_mvp_tokens": same}
    c.say(c.table([{"steered generation": p, "median_s": c.median(t), "tokens_per_s": tokens / c.median(t),
                    "mvp/this tokens/s": c.median_ratio(t, gen_times["mvp"]),
                    "rows equal to mvp": same.get(p)} for p, t in gen_times.items()]))

    # 3. Search: trials/minute ----------------------------------------------------------------
    from benchmarks.trial_batching import draw_settings

    search_prompts = instructions[: args.search_instructions]
    trials = draw_settings(n_layers, args.trials)
    judge = KeywordJudge(load_lexicon("refusal"))
    controller = Controller(loaded, judge, ControlSpec(generation=GenerationSpec(
        max_new_tokens=args.search_tokens, batch_size=len(trials) * len(search_prompts))))
    search_gen = Generator(loaded, args.search_tokens, gen.nnsight_model)
    rates: dict[str, list[float]] = {}

    def batched() -> None:
        rates["mvp"] = [e.rate for e in controller.evaluate("en", search_prompts, trials, steer_vectors)]

    def loop(peer: str) -> Callable[[], None]:
        method = getattr(search_gen, peer)

        def run() -> None:
            found = []
            search_enc = encode_left(loaded, search_prompts)
            for s in trials:
                layer_vectors = {layer: by_layer[layer] for layer in s.layers(n_layers)}
                responses = decode_new(loaded, search_enc, method(search_enc, layer_vectors, s.strength))
                verdicts = judge.judge("en", search_prompts, responses)
                found.append(following_rate(verdicts))
            rates[peer] = found
        return run

    if fastest_gen is not None:
        search_runs = {"mvp_trial_batched": batched, f"{fastest_gen}_one_setting_per_generation": loop(fastest_gen)}
        search_times = c.interleave(search_runs, repeats, warmup=False, log=c.say)
        keys = list(search_runs)
        per_min = {k: 60 * len(trials) / c.median(v) for k, v in search_times.items()}
        out["search"] = {"trials": [[s.start, s.width, s.strength] for s in trials],
                         "instructions": len(search_prompts), "max_new_tokens": args.search_tokens,
                         "peer": fastest_gen, "times_s": search_times, "trials_per_min": per_min,
                         "ratio": c.median_ratio(search_times[keys[1]], search_times[keys[0]]),
                         "following_rates": rates}
        c.say(c.table([{"search": k, "median_s": c.median(v), "trials_per_min": per_min[k]}
                       for k, v in search_times.items()]))
    return out


def ratios_for(results: list[dict[str, Any]]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for r in results:
        m = r["model"]
        ex, gen, search = r["extraction"], r.get("generation"), r.get("search")
        if ex["fastest_peer"]:
            value = ex["mvp_over_peer_time"][ex["fastest_peer"]]
            ratios[f"extraction_time_mvp_over_fastest_peer[{m}]"] = c.ratio_entry(
                value, "<= 0.5", value <= 0.5, peer=ex["fastest_peer"])
        if ex["min_cosine_same_read_point"] is not None:
            value = ex["min_cosine_same_read_point"]
            ratios[f"min_cosine_same_read_point[{m}]"] = c.ratio_entry(value, ">= 0.999", value >= 0.999)
        if gen and gen["fastest_peer"]:
            value = gen["mvp_over_peer_tokens_per_s"][gen["fastest_peer"]]
            ratios[f"steered_tokens_per_s_mvp_over_fastest_peer[{m}]"] = c.ratio_entry(
                value, ">= 1.0", value >= 1.0, peer=gen["fastest_peer"])
        if search:
            ratios[f"search_trials_per_min_mvp_over_peer_loop[{m}]"] = c.ratio_entry(
                search["ratio"], "info (> 1: mvp's trial batching is faster)", None, peer=search["peer"])
    return ratios


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated packaged aliases or model folders")
    p.add_argument("--pairs", type=int, default=None, help="data.max_pairs for morality/en (default 64: 51 train)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--rows", type=int, default=None, help="prompts in the steered generation (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 16")
    p.add_argument("--strength", type=float, default=0.25, help="steering strength (state_norm scale)")
    p.add_argument("--trials", type=int, default=None, help="search settings per batch (default 8)")
    p.add_argument("--search-instructions", type=int, default=None, help="default 4")
    p.add_argument("--search-tokens", type=int, default=None, help="default 12")
    p.add_argument("--memory-child", default=None, help=__import__("argparse").SUPPRESS)
    args = p.parse_args(argv)
    c.apply_threads(args)
    if args.memory_child:
        memory_child(args)
        return 0
    quick = args.quick
    args.pairs = args.pairs or (10 if quick else 64)
    args.rows = args.rows or (2 if quick else 8)
    args.max_new_tokens = args.max_new_tokens or (4 if quick else 16)
    args.trials = args.trials or (3 if quick else 8)
    args.search_instructions = args.search_instructions or (2 if quick else 4)
    args.search_tokens = args.search_tokens or (3 if quick else 12)
    repeats = c.repeats_of(args, 2)
    meta = c.machine()
    installed = peer_versions()
    meta["peers"] = installed
    c.say("peers installed: " + ", ".join(f"{m} {v}" if v else f"{m} (not installed: skipped)"
                                          for m, v in installed.items()))
    models = ["tiny"] if quick else [m.strip() for m in args.models.split(",") if m.strip()]
    tmp = tempfile.TemporaryDirectory()
    start = time.perf_counter()
    results = [bench_model(m, args, installed, repeats, Path(tmp.name)) for m in models]
    ratios = ratios_for(results)
    c.report(NAME, args, meta, {
        "models": [r["model"] for r in results], "repeats": repeats, "pairs_max": args.pairs,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "memory_child"},
        "notes": ["repeng 0.4.0 needs np.float_ under numpy 2; the script sets np.float_ = np.float64 before importing it",
                  "steering-vectors 0.12.2 and repeng 0.4.0 installed with --no-deps (they pin transformers<5, numpy<2)"],
        "batch_size": args.batch_size, "seconds": time.perf_counter() - start, "ratios": ratios,
        "raw": {r["model"]: r for r in results}})
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
