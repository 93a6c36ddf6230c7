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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mvplatform.activations import Progress, last_token_reads
from mvplatform.baselines import cell_baselines
from mvplatform.concepts import (
    ORIENTATIONS,
    ConceptVectors,
    best_layer,
    cluster_mean,
    extract_vectors,
    orient,
    recognition_accuracy,
)
from mvplatform.data import ContrastPair, PairSplit
from mvplatform.errors import SpecError
from mvplatform.models import LoadedModel
from mvplatform.spec import ExtractSpec
from mvplatform.uncertainty import (
    N_REEXTRACT,
    Interval,
    accuracy_intervals,
    best_layer_interval,
    pair_correct,
    pair_gram,
    permutation_accuracy,
    permuted_accuracy_from_gram,
    wilson,
)


@dataclass(frozen=True)
class PairStates:
    """Hidden states of one concept x language: train pairs first, then test pairs.

    ``pos``/``neg`` are read at ``read`` (``extract.read``); ``pos_norms``/``neg_norms`` are the L2 norms
    of the block output at the same tokens, where steering writes (its ``state_norm`` scale).
    """

    pos: np.ndarray  # [pairs, layers, hidden] float32
    neg: np.ndarray
    n_train: int
    layers: list[int]  # 1-based decoder layers, all of them
    seconds: float = 0.0  # forward time; 0 when read from the cache
    pos_norms: np.ndarray | None = None  # [pairs, layers] float32 block-output norms (None: saved before they were kept)
    neg_norms: np.ndarray | None = None
    read: str = "hidden_states"

    def save(self, path: Path) -> None:
        tensors = {"pos": self.pos, "neg": self.neg}
        if self.pos_norms is not None and self.neg_norms is not None:
            tensors |= {"pos_norms": self.pos_norms, "neg_norms": self.neg_norms}
        save_file(tensors, str(path),
                  metadata={"n_train": str(self.n_train), "layers": json.dumps(self.layers), "read": self.read})

    @classmethod
    def load(cls, path: Path) -> PairStates:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
            pos, neg = handle.get_tensor("pos"), handle.get_tensor("neg")
            kept = "pos_norms" in set(handle.keys())  # absent in states saved before issue 23
            pos_norms = handle.get_tensor("pos_norms") if kept else None
            neg_norms = handle.get_tensor("neg_norms") if kept else None
        return cls(pos, neg, int(meta["n_train"]), json.loads(meta["layers"]), 0.0, pos_norms, neg_norms,
                   meta.get("read", "hidden_states"))


def compute_states(loaded: LoadedModel, split: PairSplit, extract: ExtractSpec,
                   progress: Progress | None = None) -> PairStates:
    """All inputs of a split through the model once; every layer kept (layer choice comes later)."""
    start = time.perf_counter()
    layers = list(range(1, loaded.n_layers + 1))
    pairs = split.train + split.test
    texts = [p.pos for p in pairs] + [p.neg for p in pairs]
    reads = last_token_reads(loaded, texts, layers, extract.batch_size, extract.token, progress, extract.read)
    states, norms, n = reads.states, reads.write_norms, len(pairs)
    return PairStates(states[:n], states[n:], len(split.train), layers, time.perf_counter() - start,
                      norms[:n], norms[n:], extract.read)


@dataclass(frozen=True)
class Evidence:
    """How far one cell's recognition numbers can be trusted (issue 16); computed without the model.

    ``correct`` holds the per-pair results behind the accuracy curve: the test split's pairs, or every
    pair of the cell under cross-validation (``folds`` >= 2). Baselines are scored on the same pairs.
    """

    folds: int
    correct: np.ndarray  # [n_eval, L] 1.0 where the pair was recognised
    low: np.ndarray  # [L] Wilson 95% interval of the accuracy curve
    high: np.ndarray
    chance: np.ndarray  # [L] 95th percentile of accuracy when the training labels are shuffled
    best: Interval  # best-layer accuracy, bootstrap with the layer choice inside each resample
    baselines: dict[str, np.ndarray]  # surface baseline -> per-pair results [n_eval] (0.5 = tie)
    chance_best: float = float("nan")  # 95th percentile of the best layer's accuracy under shuffled labels
    # [n_train, L, H] float32 pos - neg of the training split: the consistency bootstrap re-extracts from it
    # (kept in memory for the cross-lingual analyses, not logged)
    train_diffs: np.ndarray | None = None
    orientation: str = "authors"
    seed: int = 1  # the extraction seed (pca's pair flips), so re-extractions match the logged vectors

    @property
    def best_above_chance(self) -> bool:
        """The best-layer number against chance with the same layer choice (max over layers, shuffled)."""
        return bool(self.best.low > self.chance_best)

    def to_json(self) -> dict[str, object]:
        """Plain lists, for the run's accuracy.json (what ``mvp report`` reads back)."""
        return {"folds": self.folds, "correct": self.correct.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "chance": self.chance.tolist(), "chance_best": self.chance_best,
                "best": [self.best.point, self.best.low, self.best.high],
                "baselines": {name: values.tolist() for name, values in self.baselines.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        """Back from :meth:`to_json`'s parsed JSON."""
        return cls(int(data["folds"]), np.asarray(data["correct"], dtype=np.float64), np.asarray(data["low"]),
                   np.asarray(data["high"]), np.asarray(data["chance"]), Interval(*map(float, data["best"])),
                   {name: np.asarray(values, dtype=np.float64) for name, values in data["baselines"].items()},
                   float(data.get("chance_best", float("nan"))))

    def release_train_states(self) -> None:
        """Drop ``train_diffs`` once the cross-lingual analyses are done: for a 7B model they are ~50 MB a cell."""
        object.__setattr__(self, "train_diffs", None)

    @property
    def n_eval(self) -> int:
        return int(self.correct.shape[0])

    @property
    def above_chance(self) -> np.ndarray:
        """[L] True where the interval's lower end clears the chance level."""
        return self.low > self.chance

    def baseline(self, name: str) -> Interval:
        """A surface baseline's accuracy with its Wilson interval (ties count as half a pair)."""
        values = self.baselines[name]
        low, high = wilson(values.sum(), len(values))
        return Interval(float(values.mean()), float(low), float(high))

    def at(self, layer_index: int) -> Interval:
        """The accuracy curve's interval at one layer (no selection: e.g. the training-chosen layer)."""
        return Interval(float(self.correct[:, layer_index].mean()), float(self.low[layer_index]),
                        float(self.high[layer_index]))


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
    evidence: Evidence | None = None  # intervals, chance level, surface baselines (extract.intervals)

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

    @property
    def selected_interval(self) -> Interval | None:
        """Wilson interval at the training-chosen layer (chosen without the test pairs: no optimism)."""
        if self.selected is None or self.evidence is None:
            return None
        return self.evidence.at(self.vectors.layers.index(self.selected[0]))


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
              seed: int = 1, cached: bool = False, split: PairSplit | None = None) -> ExtractionResult:
    """Concept vectors from the train pairs and recognition accuracy on the test pairs, per layer.

    With ``extract.folds`` K >= 2 the accuracy curve is K-fold cross-validated over every pair of the
    cell instead (the vectors returned are still the training split's). With ``extract.intervals``,
    :class:`Evidence` is attached; its surface baselines need the pair texts (``split``).
    """
    layers = layer_numbers(extract, len(states.layers))
    index = [states.layers.index(layer) for layer in layers]
    pos, neg, n = states.pos[:, index], states.neg[:, index], states.n_train
    vectors = extract_vectors(pos[:n], neg[:n], layers, extract.method, seed, extract.orientation)
    if states.pos_norms is not None and states.neg_norms is not None:  # steering's scale, where steering writes
        write = np.concatenate([states.pos_norms[:n][:, index], states.neg_norms[:n][:, index]])
        vectors = replace(vectors, norms=write.astype(np.float64).mean(axis=0))
    folds = fold_ids(len(pos), extract.folds, f"{concept}/{language}") if extract.folds > 1 else None
    if folds is None:
        correct = pair_correct(vectors.directions, pos[n:], neg[n:])
    else:
        correct = cross_validated(pos, neg, folds, layers, extract, seed)
    evidence = None
    if extract.intervals:
        pairs = None if split is None else split.train + split.test
        if pairs is not None and len(pairs) != len(pos):
            raise ValueError(f"{concept}/{language}: {len(pairs)} pairs of text but {len(pos)} pairs of states")
        evidence = gather_evidence(pos, neg, n, folds, correct, pairs, extract, seed)
    return ExtractionResult(model, concept, language, vectors, correct.mean(axis=0), pos[n:], neg[n:], n,
                            states.seconds, cached, recognition_accuracy(vectors, pos[:n], neg[:n]), evidence)


def fold_ids(n_pairs: int, folds: int, cell: str) -> np.ndarray:
    """[n_pairs] fold of each pair: pair i -> i mod K (the pairs are already in the seeded shuffle's order)."""
    if folds > n_pairs:
        raise SpecError(f"extract.folds: {folds} folds but {cell} has {n_pairs} pairs; use at most {n_pairs} "
                        "folds (or fewer, so each fold tests several pairs)")
    return np.arange(n_pairs) % folds


def _train_folds(folds: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training mask, test mask) per fold."""
    return [(folds != k, folds == k) for k in range(int(folds.max()) + 1)]


def cross_validated(pos: np.ndarray, neg: np.ndarray, folds: np.ndarray, layers: list[int], extract: ExtractSpec,
                    seed: int) -> np.ndarray:
    """[pairs, L] per-pair recognition, each pair by the vectors of the folds it is not in."""
    correct = np.empty((len(pos), len(layers)))
    for train, test in _train_folds(folds):
        directions = fold_directions(pos[train], neg[train], layers, extract.method, seed, extract.orientation)
        correct[test] = pair_correct(directions, pos[test], neg[test])
    return correct


def fold_directions(pos: np.ndarray, neg: np.ndarray, layers: list[int], method: str, seed: int,
                    orientation: str) -> np.ndarray:
    """[L, H] the directions :func:`extract_vectors` would return, without what recognition does not use.

    For cluster means the same float64 arithmetic (mean of pos minus mean of neg, then the sign rule of
    ``orientation``), but no state norms (steering's scale) and no recorded repe signs: those made up
    most of a fold's cost. Every other method goes through :func:`extract_vectors`.
    """
    if method != "cluster_mean" or orientation not in ORIENTATIONS:
        return extract_vectors(pos, neg, layers, method, seed, orientation).directions
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    raw = cluster_mean(pos, neg, np.random.default_rng(seed))
    return orient(raw, pos, neg) if orientation == "majority" else raw


def gather_evidence(pos: np.ndarray, neg: np.ndarray, n_train: int, folds: np.ndarray | None, correct: np.ndarray,
                    pairs: list[ContrastPair] | None, extract: ExtractSpec, seed: int) -> Evidence:
    """Intervals, permutation chance and surface baselines on the same pairs as ``correct``.

    Every resample is over hidden states already in memory; no model runs.
    """
    _, low, high = accuracy_intervals(correct)
    splits = ([(np.arange(len(pos)) < n_train, np.arange(len(pos)) >= n_train)] if folds is None
              else _train_folds(folds))
    if extract.method == "cluster_mean":  # one inner-product matrix per cell serves every fold's permutations
        gram = pair_gram(pos, neg, np.float32).astype(np.float64)
        per_fold = [permuted_accuracy_from_gram(gram, np.flatnonzero(train), np.flatnonzero(test), N_REEXTRACT,
                                                seed + k, extract.orientation) for k, (train, test) in enumerate(splits)]
    else:
        per_fold = [permutation_accuracy(pos[train], neg[train], pos[test], neg[test], extract.method,
                                         seed=seed + k, orientation=extract.orientation)
                    for k, (train, test) in enumerate(splits)]
    permuted = sum(acc * test.sum() for acc, (_, test) in zip(per_fold, splits)) / correct.shape[0]  # [P, L] pooled
    baselines: dict[str, np.ndarray] = {}
    if pairs is not None:  # every split's baselines from one tokenisation of the cell's texts
        baselines = cell_baselines(pairs, splits)
        if folds is None:  # scored on the test split only, as ``correct``
            baselines = {name: values[n_train:] for name, values in baselines.items()}
    return Evidence(1 if folds is None else int(folds.max()) + 1, correct, low, high,
                    np.quantile(permuted, 0.95, axis=0), best_layer_interval(correct, seed=seed), baselines,
                    float(np.quantile(permuted.max(axis=1), 0.95)),
                    (pos[:n_train] - neg[:n_train]).astype(np.float32), extract.orientation, seed)


@dataclass(frozen=True)
class EvalResult:
    """One cell's vectors applied to every pair of another data set (``data.eval_datasets``, issue 16)."""

    dataset: str  # a short name of the data set (its folder's name)
    model: str
    concept: str
    language: str
    layers: list[int]
    correct: np.ndarray  # [n_pairs, L] 1.0 where the pair was recognised
    low: np.ndarray  # [L] Wilson 95% interval
    high: np.ndarray
    best: Interval  # best layer on this data set, bootstrap with the layer choice inside each resample
    selected_layer: int | None  # the layer chosen on the original training pairs

    @property
    def accuracy(self) -> np.ndarray:
        accuracy: np.ndarray = self.correct.mean(axis=0)
        return accuracy

    @property
    def n_pairs(self) -> int:
        return int(self.correct.shape[0])

    @property
    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.accuracy))]

    @property
    def selected(self) -> Interval | None:
        """Accuracy at the training-chosen layer, with its Wilson interval: the number to quote."""
        if self.selected_layer is None:
            return None
        i = self.layers.index(self.selected_layer)
        return Interval(float(self.accuracy[i]), float(self.low[i]), float(self.high[i]))


def evaluate_on(result: ExtractionResult, states: PairStates, dataset: str, seed: int = 1) -> EvalResult:
    """Apply a cell's vectors to every pair of ``states`` (another data set's pairs, all as test pairs)."""
    layers = result.vectors.layers
    index = [states.layers.index(layer) for layer in layers]
    correct = pair_correct(np.asarray(result.vectors.directions, dtype=np.float64), states.pos[:, index],
                           states.neg[:, index])
    _, low, high = accuracy_intervals(correct)
    return EvalResult(dataset, result.model, result.concept, result.language, list(layers), correct, low, high,
                      best_layer_interval(correct, seed=seed), None if result.selected is None else result.selected[0])
