"""One extraction work item, in two halves.

:func:`compute_states` is the only part that needs the model: the last-token hidden states of every
train and test input at every decoder layer, in one batched pass. :func:`recognise` turns those
states into concept vectors and per-layer recognition accuracy, in numpy. Keeping the halves apart
lets the states be cached (:mod:`mvplatform.statestore`), so a new method, layer choice or
analysis never re-runs the model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mvplatform.activations import Progress, last_token_states
from mvplatform.concepts import ConceptVectors, best_layer, extract_vectors, recognition_accuracy
from mvplatform.data import PairSplit
from mvplatform.errors import SpecError
from mvplatform.models import LoadedModel
from mvplatform.spec import ExtractSpec


@dataclass(frozen=True)
class PairStates:
    """Hidden states of one concept x language: train pairs first, then test pairs."""

    pos: np.ndarray  # [pairs, layers, hidden] float32
    neg: np.ndarray
    n_train: int
    layers: list[int]  # 1-based decoder layers, all of them
    seconds: float = 0.0  # forward time; 0 when read from the cache

    def save(self, path: Path) -> None:
        save_file({"pos": self.pos, "neg": self.neg}, str(path),
                  metadata={"n_train": str(self.n_train), "layers": json.dumps(self.layers)})

    @classmethod
    def load(cls, path: Path) -> PairStates:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
            pos, neg = handle.get_tensor("pos"), handle.get_tensor("neg")
        return cls(pos, neg, int(meta["n_train"]), json.loads(meta["layers"]))


def compute_states(loaded: LoadedModel, split: PairSplit, extract: ExtractSpec,
                   progress: Progress | None = None) -> PairStates:
    """All inputs of a split through the model once; every layer kept (layer choice comes later)."""
    start = time.perf_counter()
    layers = list(range(1, loaded.n_layers + 1))
    pairs = split.train + split.test
    texts = [p.pos for p in pairs] + [p.neg for p in pairs]
    states = last_token_states(loaded, texts, layers, extract.batch_size, extract.token, progress)
    return PairStates(states[: len(pairs)], states[len(pairs) :], len(split.train), layers,
                      time.perf_counter() - start)


@dataclass(frozen=True)
class ExtractionResult:
    """Everything later steps need, so no analysis ever has to re-run the model."""

    model: str
    concept: str
    language: str
    vectors: ConceptVectors
    accuracy: np.ndarray  # [L] recognition accuracy on the test split, per layer
    test_pos: np.ndarray  # [n_test, L, H] hidden states of the test split at the analysed layers
    test_neg: np.ndarray
    n_train: int
    seconds: float  # forward-pass time (0 when the states came from the cache)
    cached: bool = False
    train_accuracy: np.ndarray | None = None  # [L] on the training pairs, for test-free layer choice

    @property
    def n_test(self) -> int:
        return int(self.test_pos.shape[0])

    @property
    def best(self) -> tuple[int, float]:
        """The paper's number: the best test accuracy over layers (optimistic on small test sets)."""
        return best_layer(self.accuracy, self.vectors.layers)

    @property
    def selected(self) -> tuple[int, float] | None:
        """Test accuracy at the layer chosen on the training pairs: no selection on the test set."""
        if self.train_accuracy is None:
            return None
        layer, _ = best_layer(self.train_accuracy, self.vectors.layers)
        return layer, float(self.accuracy[self.vectors.layers.index(layer)])


def layer_numbers(extract: ExtractSpec, n_layers: int) -> list[int]:
    """1-based layers to analyse; refuses layers beyond the model's depth."""
    if extract.layers == "all":
        return list(range(1, n_layers + 1))
    too_deep = [layer for layer in extract.layers if layer > n_layers]
    if too_deep:
        raise SpecError(f"extract.layers: layer(s) {too_deep} exceed the model's {n_layers} decoder layers; "
                        f"use numbers from 1 to {n_layers} or 'all'")
    return list(extract.layers)


def recognise(states: PairStates, model: str, concept: str, language: str, extract: ExtractSpec,
              seed: int = 1, cached: bool = False) -> ExtractionResult:
    """Concept vectors from the train pairs and recognition accuracy on the test pairs, per layer."""
    layers = layer_numbers(extract, len(states.layers))
    index = [states.layers.index(layer) for layer in layers]
    pos, neg, n = states.pos[:, index], states.neg[:, index], states.n_train
    vectors = extract_vectors(pos[:n], neg[:n], layers, extract.method, seed)
    accuracy = recognition_accuracy(vectors, pos[n:], neg[n:])
    return ExtractionResult(model, concept, language, vectors, accuracy, pos[n:], neg[n:], n,
                            states.seconds, cached, recognition_accuracy(vectors, pos[:n], neg[:n]))
