"""Linguistic similarity of languages from URIEL features (the data the lang2vec package ships).

The paper correlates concept-vector similarity with lang2vec's genetic, geographic, syntactic and
phonological distances. lang2vec 1.1.2 fetches its precomputed distance tables from the network
and imports the removed ``pkg_resources``, so mvp reads the feature vectors the wheel ships
(``lang2vec/data/*.npz``, plain arrays, loaded without pickle) and computes the distances itself,
the way URIEL defines them: the cosine distance between two languages' feature vectors.

- genetic: ``fam`` membership vectors (3718 Glottolog families and subfamilies);
- geographic: ``geo`` vectors (distances to 299 reference points on the globe);
- syntactic: ``syntax_knn`` (103 WALS/SSWL/Ethnologue word-order and syntax features, gaps filled
  by URIEL's k-nearest-neighbour predictions);
- phonological: ``phonology_knn`` (28 features, filled the same way).

Similarity = 1 - distance. Results are cached in memory per process.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np

from mvplatform.catalog import LANGUAGES
from mvplatform.errors import DataError

# feature -> (file in lang2vec/data, feature-name prefix or "" for all)
FEATURES: dict[str, tuple[str, str]] = {
    "genetic": ("family_features.npz", ""),
    "geographic": ("geocoord_features.npz", ""),
    "syntactic": ("feature_predictions.npz", "S_"),
    "phonological": ("feature_predictions.npz", "P_"),
}


def _data_dir() -> Path:
    # Located through the installed distribution, not an import: the wheel also installs a script
    # `bin/lang2vec.py`, which shadows the package wherever a console script's folder leads sys.path.
    try:
        folder = Path(str(distribution("lang2vec").locate_file("lang2vec/data")))
    except PackageNotFoundError:
        folder = None
    if folder is None or not (folder / "family_features.npz").is_file():
        raise DataError("linguistic analyses need URIEL data from the lang2vec package: pip install lang2vec")
    return folder


@cache
def _table(filename: str) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    with np.load(_data_dir() / filename, allow_pickle=False) as archive:
        langs, feats, data = archive["langs"], archive["feats"], archive["data"][:, :, 0]
    return {code: i for i, code in enumerate(langs.tolist())}, feats, data


def feature_vector(language: str, feature: str) -> np.ndarray:
    filename, prefix = FEATURES[feature]
    index, feats, data = _table(filename)
    iso = LANGUAGES[language].iso3
    if iso not in index:
        raise DataError(f"URIEL has no {feature} features for {language} ({iso})")
    vector = data[index[iso]]
    if prefix:
        vector = vector[np.char.startswith(feats, prefix)]
    return vector.astype(np.float64)


def similarity_matrix(languages: list[str], feature: str) -> np.ndarray:
    """``[n, n]`` linguistic similarity (1 - cosine distance of URIEL vectors), cached per process."""
    return _similarity(tuple(languages), feature).copy()


@cache
def _similarity(languages: tuple[str, ...], feature: str) -> np.ndarray:
    if feature not in FEATURES:
        raise ValueError(f"unknown linguistic feature {feature!r}; choose from {', '.join(FEATURES)}")
    vectors = np.stack([feature_vector(lang, feature) for lang in languages])
    missing = vectors < 0  # URIEL marks unknown values with -1
    vectors = np.where(missing, 0.0, vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T
