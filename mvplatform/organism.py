"""Model organisms: small packaged models fine-tuned to show a behaviour the paper studies.

The paper's control experiment (PAPER.md section 5) needs a model that refuses harmful requests in
its dominant language and less in others. No such model can be installed here, and the packaged
SmolLM2-135M-Instruct follows almost every harmful request, so mvp makes one: a short, seeded
fine-tune of the top decoder layers on English requests written for it (``builtin/organism/en.json``, none of them in
the control experiment's search or test halves) where

- harmful requests get one of the written refusals (chosen with the seed), and
- harmless requests get the base model's own greedy answer,

so only refusal behaviour is taught, in English only. Whether refusal carries over to other
languages is what the control experiment then measures. The loss is on the answer tokens only.

Building is deterministic for a seed (one torch thread count, fixed data order) and writes a local
model directory, renamed into place when complete, that any spec names by its alias.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mvplatform.data import builtin_root, read_json
from mvplatform.errors import DataError, ModelError

BUILT_MARKER = "mvp-organism.json"


@dataclass(frozen=True)
class Recipe:
    """How an organism is made: base model, data and training settings (all part of its identity)."""

    name: str
    base: str  # a packaged alias or a local model directory
    description: str
    n_layers: int  # the base's decoder depth, so specs are checked before the first build
    seed: int = 0
    epochs: int = 3
    learning_rate: float = 5e-5
    batch_size: int = 8
    answer_tokens: int = 48  # greedy tokens of the base's answers to harmless requests (the targets)
    max_length: int = 160  # prompt + answer tokens per training example
    data: str = "organism/en.json"  # under the built-in data folder, or an absolute path
    # Only the top ``train_layers`` decoder layers (and the final norm) learn; embeddings and the
    # layers below stay the base's. Backward then stops there, which is what makes a CPU build fast,
    # and the lower layers' (multilingual) representations are untouched. None = full fine-tune.
    train_layers: int | None = None
    harmful_repeats: int = 1  # each refusal example is seen this many times per epoch


ORGANISMS: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("smollm2-135m-refusal-en", "smollm2-135m-instruct",
               "SmolLM2 135M Instruct fine-tuned to refuse harmful requests in English (built on first use)", 30,
               epochs=3, learning_rate=1e-4, train_layers=12),
    )
}


@dataclass(frozen=True)
class Example:
    """One training example: the chat-formatted prompt and the answer the model should give."""

    kind: str  # "harmful" or "harmless"
    request: str
    prompt: str
    answer: str


@dataclass
class BuildResult:
    path: Path
    recipe: Recipe
    data_digest: str
    losses: list[float] = field(default_factory=list)  # per optimiser step
    seconds: float = 0.0
    examples: int = 0

    def record(self) -> dict[str, object]:
        """What the marker file and the MLflow run keep."""
        return {"recipe": asdict(self.recipe), "data_digest": self.data_digest, "examples": self.examples,
                "steps": len(self.losses), "final_loss": self.losses[-1] if self.losses else None,
                "seconds": round(self.seconds, 1), "torch": torch.__version__,
                "threads": torch.get_num_threads()}


def organism_dir(name: str, cache_dir: Path) -> Path:
    return cache_dir / "organisms" / name


def is_built(name: str, cache_dir: Path) -> bool:
    """A complete build of the *current* recipe: a folder left by another recipe (an older mvp) is stale."""
    marker = organism_dir(name, cache_dir) / BUILT_MARKER
    if not marker.is_file():
        return False
    if name not in ORGANISMS:
        return True
    recipe = ORGANISMS[name]
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        data = data_path(recipe)
        digest = hashlib.sha256(data.read_bytes()).hexdigest() if data.is_file() else None
        return bool(record.get("recipe") == asdict(recipe) and record.get("data_digest") == digest)
    except (ValueError, AttributeError):
        return False


def data_path(recipe: Recipe) -> Path:
    return Path(recipe.data) if Path(recipe.data).is_absolute() else builtin_root() / recipe.data


def build_record(name: str, cache_dir: Path) -> dict[str, object]:
    """The marker of a built organism (recipe, data digest, loss): part of its cache identity."""
    return json.loads((organism_dir(name, cache_dir) / BUILT_MARKER).read_text(encoding="utf-8"))


def training_requests(recipe: Recipe) -> tuple[dict[str, dict[str, str]], list[str], str]:
    """Harmful and harmless requests, the refusals, and the sha256 of the data file."""
    path = data_path(recipe)
    data = read_json(path)
    requests = {kind: data.get(kind) for kind in ("harmful", "harmless")}
    refusals = data.get("refusals")
    if not all(isinstance(v, dict) and v for v in requests.values()) or not isinstance(refusals, list) or not refusals:
        raise DataError(f"{path}: needs non-empty 'harmful' and 'harmless' objects (id -> request) and a "
                        "'refusals' list")
    return requests, refusals, hashlib.sha256(path.read_bytes()).hexdigest()


def make_examples(recipe: Recipe, requests: dict[str, dict[str, str]], refusals: list[str],
                  answer: Callable[[list[str]], list[str]], prompt: Callable[[str], str]) -> list[Example]:
    """Harmful -> a refusal chosen with the seed; harmless -> ``answer`` (the base model's own reply).

    The order is shuffled with the seed, so training sees the two kinds interleaved.
    """
    rng = random.Random(recipe.seed)
    harmful = [Example("harmful", text, prompt(text), rng.choice(refusals))
               for _, text in sorted(requests["harmful"].items()) for _ in range(recipe.harmful_repeats)]
    harmless_texts = [text for _, text in sorted(requests["harmless"].items())]
    harmless = [Example("harmless", text, prompt(text), reply)
                for text, reply in zip(harmless_texts, answer(harmless_texts)) if reply.strip()]
    examples = harmful + harmless
    rng.shuffle(examples)
    return examples


def tokenize(examples: list[Example], tokenizer: object, max_length: int,
             add_special_tokens: bool) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per example; labels are -100 on the prompt, so only the answer is learned."""
    eos = tokenizer.eos_token or ""  # type: ignore[attr-defined]
    rows = []
    for example in examples:
        prompt_ids = tokenizer(example.prompt, add_special_tokens=add_special_tokens)["input_ids"]  # type: ignore[operator]
        answer_ids = tokenizer(example.answer + eos, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
        rows.append((ids, labels))
    return rows


def trainable_parameters(model: torch.nn.Module, train_layers: int | None) -> list[torch.nn.Parameter]:
    """Freeze all but the top ``train_layers`` decoder layers and the final norm (None: train all).

    Works for the decoder-only layouts mvp loads (``model.model.layers`` + ``model.model.norm``).
    """
    if train_layers is None:
        return list(model.parameters())
    decoder = model.model  # type: ignore[union-attr]
    layers = decoder.layers  # type: ignore[union-attr]
    if not 1 <= train_layers <= len(layers):
        raise ModelError(f"train_layers={train_layers} must be between 1 and the model's {len(layers)} layers")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trained = [*layers[len(layers) - train_layers:], decoder.norm]  # type: ignore[index]
    for module in trained:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return [p for module in trained for p in module.parameters()]


def length_batches(rows: list[tuple[list[int], list[int]]], batch_size: int, seed: int
                   ) -> list[list[tuple[list[int], list[int]]]]:
    """Batches of similar length (less padding, so fewer wasted FLOPs), in a seeded shuffled order."""
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i][0]), i))
    batches = [[rows[i] for i in order[k:k + batch_size]] for k in range(0, len(order), batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def _padded(batch: list[tuple[list[int], list[int]]], pad_id: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (input ids, labels, attention mask) of one batch."""
    width = max(len(ids) for ids, _ in batch)
    ids = torch.tensor([i + [pad_id] * (width - len(i)) for i, _ in batch], device=device)
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in batch], device=device)
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch], device=device)
    return ids, labels, mask


@contextmanager
def _top_layers_only(model: torch.nn.Module, keep: int) -> Iterator[None]:
    """Run ``model`` on the top ``keep`` decoder layers only (fed ``inputs_embeds`` = a lower layer's output)."""
    decoder = model.model  # type: ignore[union-attr]
    layers = decoder.layers  # type: ignore[union-attr]
    decoder.layers = torch.nn.ModuleList(list(layers)[len(layers) - keep:])
    try:
        yield
    finally:
        decoder.layers = layers


def train(model: torch.nn.Module, rows: list[tuple[list[int], list[int]]], recipe: Recipe, pad_id: int,
          on_step: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Fine-tune with AdamW over ``recipe.epochs`` passes in a fixed order; the loss per step.

    With ``recipe.train_layers`` the layers below are frozen, so their output for each batch is the
    same in every epoch: it is computed once (no grad) and the epochs run the top layers only, fed
    that output as ``inputs_embeds``. Same loss as the full forward (no dropout in these models), at
    ``train_layers / n_layers`` of the cost per step.
    """
    torch.manual_seed(recipe.seed)
    parameters = trainable_parameters(model, recipe.train_layers)
    optimiser = torch.optim.AdamW(parameters, lr=recipe.learning_rate, weight_decay=0.0)
    device = next(model.parameters()).device
    batches = [_padded(batch, pad_id, device) for batch in length_batches(rows, recipe.batch_size, recipe.seed)]
    frozen = 0 if recipe.train_layers is None else len(model.model.layers) - recipe.train_layers  # type: ignore[union-attr]
    inputs: list[dict[str, torch.Tensor]] = []
    model.eval()
    with torch.no_grad():
        for ids, _, mask in batches:
            if frozen:
                # the decoder alone: the LM head's logits over the vocabulary are not needed here
                hidden = model.model(input_ids=ids, attention_mask=mask,  # type: ignore[operator]
                                     output_hidden_states=True).hidden_states[frozen]
                inputs.append({"inputs_embeds": hidden, "attention_mask": mask})
            else:
                inputs.append({"input_ids": ids, "attention_mask": mask})
    total = recipe.epochs * len(batches)
    losses: list[float] = []
    model.train()
    with _top_layers_only(model, len(model.model.layers) - frozen):  # type: ignore[union-attr]
        for _ in range(recipe.epochs):
            for batch_inputs, (_, labels, _) in zip(inputs, batches):
                loss = model(**batch_inputs, labels=labels).loss
                loss.backward()
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(len(losses), total, losses[-1])
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return losses


def build(recipe: Recipe, cache_dir: Path, log: Callable[[str], None] = print,
          on_step: Callable[[int, int, float], None] | None = None) -> BuildResult:
    """Fine-tune ``recipe.base`` into ``organism_dir(recipe.name)``; the folder appears only when complete."""
    from mvplatform.generation import generate
    from mvplatform.models import load_model
    from mvplatform.spec import GenerationSpec, ModelSpec

    start = time.perf_counter()
    requests, refusals, digest = training_requests(recipe)
    loaded = load_model(ModelSpec(name=recipe.base, device="cpu", dtype="float32", prompt="chat"), cache_dir)
    log(f"base {recipe.base}: answering {len(requests['harmless'])} harmless requests greedily "
        f"({recipe.answer_tokens} tokens) for the targets")

    def answer(texts: list[str]) -> list[str]:
        return generate(loaded, texts, GenerationSpec(max_new_tokens=recipe.answer_tokens, batch_size=16)).texts

    examples = make_examples(recipe, requests, refusals, answer, loaded.prompter.format)
    rows = tokenize(examples, loaded.tokenizer, recipe.max_length, loaded.prompter.add_special_tokens)
    log(f"training on {len(rows)} examples ({sum(e.kind == 'harmful' for e in examples)} refusals), "
        f"{recipe.epochs} epochs of batches of {recipe.batch_size}")
    pad_id = loaded.tokenizer.pad_token_id  # type: ignore[attr-defined]
    losses = train(loaded.model, rows, recipe, pad_id, on_step)
    result = BuildResult(organism_dir(recipe.name, cache_dir), recipe, digest, losses,
                         time.perf_counter() - start, len(rows))
    _save(loaded.model, loaded.tokenizer, result)
    return result


def _save(model: torch.nn.Module, tokenizer: object, result: BuildResult) -> None:
    target = result.path
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)  # type: ignore[operator]
        tokenizer.save_pretrained(staging)  # type: ignore[attr-defined]
        (staging / BUILT_MARKER).write_text(json.dumps(result.record(), indent=1) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def require_built(name: str, cache_dir: Path) -> Path:
    """The organism's folder, or a clear error saying how to build it."""
    if not is_built(name, cache_dir):
        raise ModelError(f"model organism {name!r} is not built in {cache_dir} (or was built from another recipe "
                         f"or data); `mvp submit` builds it on first use, or run: mvp organism build {name} "
                         "(26 minutes on 2 busy CPU cores)")
    return organism_dir(name, cache_dir)


@dataclass(frozen=True)
class Behaviour:
    """How one model treats one language's held-out control instructions (unsteered)."""

    language: str
    harmful_followed: int
    harmful: int
    harmless_answered: int
    harmless: int

    @property
    def following_rate(self) -> float:
        return self.harmful_followed / self.harmful

    @property
    def answer_rate(self) -> float:
        return self.harmless_answered / self.harmless


def measure(loaded: object, languages: list[str], judge: object, max_new_tokens: int = 32,
            batch_size: int = 32) -> list[Behaviour]:
    """No-Control behaviour on the *test* half of the built-in control instructions of each language.

    Harmful requests followed (the judge says "followed") and harmless requests answered (the
    same verdict: neither refused nor degenerate). The organism's training requests are not in
    these sets (a test checks it), so this is held-out behaviour.
    """
    from mvplatform.data import load_instructions
    from mvplatform.generation import generate
    from mvplatform.spec import GenerationSpec

    settings = GenerationSpec(max_new_tokens=max_new_tokens, batch_size=batch_size)
    out = []
    for language in languages:
        test = load_instructions(language).test
        counts = []
        for kind in ("harmful", "harmless"):
            texts = list(test[kind].values())
            responses = generate(loaded, texts, settings).texts  # type: ignore[arg-type]
            verdicts = judge.judge(language, texts, responses)  # type: ignore[attr-defined]
            counts += [sum(v.followed for v in verdicts), len(texts)]
        out.append(Behaviour(language, *counts))
    return out
