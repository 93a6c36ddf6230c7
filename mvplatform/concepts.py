"""Concept directions, their sign, and recognition (PAPER.md sections 1 and 2).

Pure numpy over hidden states shaped ``[pairs, layers, hidden]``: no model, no Ray, no MLflow,
so every formula here is tested against hand-computed values.

>>> import numpy as np
>>> pos = np.array([[[2.0, 0.0]], [[3.0, 1.0]]])      # 2 pairs, 1 layer, hidden 2
>>> neg = np.array([[[0.0, 0.0]], [[1.0, 1.0]]])
>>> vectors = extract_vectors(pos, neg, layers=[1], method="cluster_mean")
>>> vectors.directions.tolist(), recognition_accuracy(vectors, pos, neg).tolist()
([[2.0, 0.0]], [1.0])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from mvplatform.registry import DIRECTION_METHODS

# (pos [n, L, H], neg [n, L, H], rng) -> unoriented directions [L, H]
DirectionMethod = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


@DIRECTION_METHODS.register("cluster_mean", help="mean(h_pos) - mean(h_neg) per layer (the paper's)")
def cluster_mean(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mean(h_pos) - mean(h_neg) per layer: the paper's choice."""
    direction: np.ndarray = pos.mean(axis=0) - neg.mean(axis=0)
    return direction


@DIRECTION_METHODS.register("pca", help="first principal component of recentred pair differences (repe's PCA)")
def pca(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """First principal component of recentred pair differences (repe's PCA reader).

    As in repe, each pair's order is shuffled before differencing, so the component captures the
    axis along which pairs differ rather than their mean offset.
    """
    flips = rng.choice([-1.0, 1.0], size=pos.shape[0])[:, None, None]  # [n, 1, 1]
    diffs = flips * (pos - neg)  # [n, L, H]
    diffs = diffs - diffs.mean(axis=0, keepdims=True)
    directions = np.empty(pos.shape[1:], dtype=np.float64)
    for layer in range(pos.shape[1]):
        _, _, vt = np.linalg.svd(diffs[:, layer, :], full_matrices=False)
        directions[layer] = vt[0]
    return directions


def orient(directions: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Flip each layer's direction so pos projects above neg on most training pairs (ties keep)."""
    margins = np.einsum("nlh,lh->nl", pos - neg, directions)  # [n, L]
    signs = np.where((margins > 0).mean(axis=0) >= 0.5, 1.0, -1.0)
    return directions * signs[:, None]


# How extract_vectors signs a direction. authors: as the paper's code does - cluster_mean keeps the
# raw mean difference (their recognition compares a list with -1, so it never flips) and records
# repe's signs for consistency; every other method is flipped by repe's sign rule. majority: orient().
ORIENTATIONS: tuple[str, ...] = ("authors", "majority")


def repe_signs(directions: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """[L] repe's sign rule (``get_signs``): -1 where more training pairs put pos below neg than above.

    repe counts a pair for "max" when pos is the larger projection and for "min" when it is the
    smaller; a tied pair counts for both, so ties cancel, and a tie in the counts keeps +1.
    """
    margins = np.einsum("nlh,lh->nl", pos - neg, directions)  # [n, L]
    return np.where((margins < 0).sum(axis=0) > (margins > 0).sum(axis=0), -1.0, 1.0)


@dataclass(frozen=True)
class ConceptVectors:
    """One direction per analysed layer; ``layers`` are 1-based decoder-layer numbers."""

    layers: list[int]
    directions: np.ndarray  # [L, H]
    method: str
    norms: np.ndarray | None = None  # [L] mean L2 norm of the training hidden states: steering's scale
    signs: np.ndarray | None = None  # [L] repe's signs, recorded but not applied (authors' cluster_mean)

    def save(self, path: str | Path) -> None:
        tensors: dict[str, np.ndarray] = {"directions": np.ascontiguousarray(self.directions, dtype=np.float32),
                   "layers": np.asarray(self.layers, dtype=np.int64)}
        if self.norms is not None:
            tensors["norms"] = np.asarray(self.norms, dtype=np.float32)
        if self.signs is not None:
            tensors["signs"] = np.asarray(self.signs, dtype=np.float32)
        save_file(tensors, str(path), metadata={"method": self.method})

    @classmethod
    def load(cls, path: str | Path) -> ConceptVectors:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            method = (handle.metadata() or {}).get("method", "unknown")
        tensors = load_file(str(path))
        return cls(tensors["layers"].tolist(), tensors["directions"], method, tensors.get("norms"),
                   tensors.get("signs"))


def extract_vectors(
    pos: np.ndarray, neg: np.ndarray, layers: list[int], method: str = "cluster_mean", seed: int = 0,
    orientation: str = "authors",
) -> ConceptVectors:
    """Directions from training pairs, signed by ``orientation`` (see ORIENTATIONS)."""
    _check_pairs(pos, neg, layers)
    if orientation not in ORIENTATIONS:
        raise ValueError(f"unknown orientation {orientation!r}; choose from {', '.join(ORIENTATIONS)}")
    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    raw = DIRECTION_METHODS.get(method)(pos, neg, np.random.default_rng(seed))
    norms = np.linalg.norm(np.concatenate([pos, neg]), axis=-1).mean(axis=0)  # [L]
    if orientation == "majority":
        return ConceptVectors(list(layers), orient(raw, pos, neg), method, norms)
    signs = repe_signs(raw, pos, neg)
    if method == "cluster_mean":
        return ConceptVectors(list(layers), raw, method, norms, signs)
    return ConceptVectors(list(layers), raw * signs[:, None], method, norms)


def recognition_accuracy(vectors: ConceptVectors, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Per layer, the share of pairs whose pos input projects strictly higher than its neg input."""
    _check_pairs(pos, neg, vectors.layers)
    margins = np.einsum("nlh,lh->nl", pos.astype(np.float64) - neg, vectors.directions)
    accuracy: np.ndarray = (margins > 0).mean(axis=0)
    return accuracy


def best_layer(accuracy: np.ndarray, layers: list[int]) -> tuple[int, float]:
    """The layer with the highest accuracy (the earliest on ties) and that accuracy."""
    index = int(np.argmax(accuracy))
    return layers[index], float(accuracy[index])


def _check_pairs(pos: np.ndarray, neg: np.ndarray, layers: list[int]) -> None:
    if pos.shape != neg.shape or pos.ndim != 3:
        raise ValueError(f"pos and neg must both be [pairs, layers, hidden]; got {pos.shape} and {neg.shape}")
    if pos.shape[0] == 0:
        raise ValueError("no pairs")
    if pos.shape[1] != len(layers):
        raise ValueError(f"{pos.shape[1]} layers of hidden states but {len(layers)} layer numbers")
