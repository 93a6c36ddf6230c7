"""One extraction work item: pairs -> hidden states -> concept vectors -> recognition per layer."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mvplatform.activations import Progress, last_token_states
from mvplatform.concepts import ConceptVectors, best_layer, extract_vectors, recognition_accuracy
from mvplatform.data import PairSplit
from mvplatform.errors import SpecError
from mvplatform.models import LoadedModel
from mvplatform.spec import ExtractSpec


@dataclass(frozen=True)
class ExtractionResult:
    """Everything later steps need, so no analysis ever has to re-run the model."""

    model: str
    concept: str
    language: str
    vectors: ConceptVectors
    accuracy: np.ndarray  # [L] recognition accuracy on the test split, per layer
    test_pos: np.ndarray  # [n_test, L, H] float16 hidden states of the test split
    test_neg: np.ndarray
    n_train: int
    seconds: float

    @property
    def n_test(self) -> int:
        return int(self.test_pos.shape[0])

    @property
    def best(self) -> tuple[int, float]:
        return best_layer(self.accuracy, self.vectors.layers)


def layer_numbers(extract: ExtractSpec, n_layers: int) -> list[int]:
    """1-based layers to analyse; refuses layers beyond the model's depth."""
    if extract.layers == "all":
        return list(range(1, n_layers + 1))
    too_deep = [layer for layer in extract.layers if layer > n_layers]
    if too_deep:
        raise SpecError(f"extract.layers: layer(s) {too_deep} exceed the model's {n_layers} decoder layers")
    return list(extract.layers)


def run_extraction(
    loaded: LoadedModel, concept: str, language: str, split: PairSplit, extract: ExtractSpec,
    seed: int = 1, progress: Progress | None = None,
) -> ExtractionResult:
    """Hidden states of all train and test inputs in one batched pass, then vectors and recognition."""
    start = time.perf_counter()
    layers = layer_numbers(extract, loaded.n_layers)
    pairs = split.train + split.test
    texts = [p.pos for p in pairs] + [p.neg for p in pairs]
    states = last_token_states(loaded, texts, layers, extract.batch_size, extract.token, progress)
    pos, neg = states[: len(pairs)], states[len(pairs) :]
    n_train = len(split.train)
    vectors = extract_vectors(pos[:n_train], neg[:n_train], layers, extract.method, seed)
    accuracy = recognition_accuracy(vectors, pos[n_train:], neg[n_train:])
    return ExtractionResult(
        model=loaded.name, concept=concept, language=language, vectors=vectors, accuracy=accuracy,
        test_pos=pos[n_train:].astype(np.float16), test_neg=neg[n_train:].astype(np.float16),
        n_train=n_train, seconds=time.perf_counter() - start,
    )
