"""Linguistic similarity of languages: URIEL's own distances (the paper's) or a feature-vector cosine.

The paper correlates concept-vector similarity with ``1 - lang2vec.distance(kind, l1, l2)`` for the
genetic, geographic, syntactic and phonological kinds. The lang2vec wheel lacks the precomputed
distance tables that call reads (it fetches them from the network), so mvp ships the authors' own
distances for the paper's 16 languages as plain JSON (``builtin/linguistics/uriel_distances.json``,
extracted once from ``lang_sim.pt`` in the authors' repository; provenance in the file and in
``builtin/DATA.md``). That is the default source, ``uriel_distance``.

For a language outside that table, ``feature_cosine`` computes a stand-in from the feature vectors
the wheel does ship (``lang2vec/data/*.npz``, plain arrays, loaded without pickle): 1 - the cosine
distance of two languages' URIEL vectors. It agrees poorly with URIEL's distances (which are not
plain cosines of these vectors), so it is named and never the default:

- genetic: ``fam`` membership vectors (3718 Glottolog families and subfamilies);
- geographic: ``geo`` vectors (distances to 299 reference points on the globe);
- syntactic: ``syntax_knn`` (103 WALS/SSWL/Ethnologue features, gaps filled by URIEL's kNN);
- phonological: ``phonology_knn`` (28 features, filled the same way).

Similarity = 1 - distance. Results are cached in memory per process.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources import files
from pathlib import Path

import numpy as np

from mvplatform.catalog import LANGUAGES
from mvplatform.errors import DataError

# feature -> (file in lang2vec/data, feature-name prefix or "" for all): the feature_cosine source
FEATURES: dict[str, tuple[str, str]] = {
    "genetic": ("family_features.npz", ""),
    "geographic": ("geocoord_features.npz", ""),
    "syntactic": ("feature_predictions.npz", "S_"),
    "phonological": ("feature_predictions.npz", "P_"),
}
SOURCES: tuple[str, ...] = ("uriel_distance", "feature_cosine")
DEFAULT_SOURCE = "uriel_distance"
DISTANCE_FILE = "builtin/linguistics/uriel_distances.json"
# URIEL's code where it differs from the catalogue's ISO 639-3 code: the authors look Swahili up as
# swh (the individual language), not swa (the macrolanguage).
URIEL_CODES: dict[str, str] = {"sw": "swh"}


@cache
def uriel_distances() -> tuple[list[str], dict[str, np.ndarray]]:
    """The shipped table: its languages and, per distance kind, a ``[n, n]`` distance matrix."""
    text = files("mvplatform").joinpath(DISTANCE_FILE).read_text(encoding="utf-8")
    table = json.loads(text)
    languages = list(table["languages"])
    return languages, {kind: np.asarray(rows, dtype=np.float64) for kind, rows in table["distances"].items()}


def _uriel_similarity(languages: tuple[str, ...], feature: str) -> np.ndarray:
    known, distances = uriel_distances()
    missing = [lang for lang in languages if lang not in known]
    if missing:
        raise DataError(f"{DISTANCE_FILE} has no URIEL distances for {', '.join(missing)}; set "
                        "analysis.similarity_source: feature_cosine to use a cosine of URIEL feature vectors")
    index = [known.index(lang) for lang in languages]
    return 1.0 - distances[feature][np.ix_(index, index)]


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


def uriel_code(language: str) -> str:
    """The code URIEL files a catalogue language under."""
    return URIEL_CODES.get(language, LANGUAGES[language].iso3)


def feature_vector(language: str, feature: str) -> np.ndarray:
    filename, prefix = FEATURES[feature]
    index, feats, data = _table(filename)
    iso = uriel_code(language)
    if iso not in index:
        raise DataError(f"URIEL has no {feature} features for {language} ({iso})")
    vector = data[index[iso]]
    if prefix:
        vector = vector[np.char.startswith(feats, prefix)]
    out: np.ndarray = vector.astype(np.float64)
    return out


def _cosine_similarity(languages: tuple[str, ...], feature: str) -> np.ndarray:
    vectors = np.stack([feature_vector(lang, feature) for lang in languages])
    missing = vectors < 0  # URIEL marks unknown values with -1
    vectors = np.where(missing, 0.0, vectors)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms == 0, 1.0, norms)
    return unit @ unit.T


def similarity_matrix(languages: list[str], feature: str, source: str = DEFAULT_SOURCE) -> np.ndarray:
    """``[n, n]`` linguistic similarity (1 - distance) from ``source``, cached per process."""
    return _similarity(tuple(languages), feature, source).copy()


@cache
def _similarity(languages: tuple[str, ...], feature: str, source: str) -> np.ndarray:
    if feature not in FEATURES:
        raise ValueError(f"unknown linguistic feature {feature!r}; choose from {', '.join(FEATURES)}")
    if source == "uriel_distance":
        return _uriel_similarity(languages, feature)
    if source == "feature_cosine":
        return _cosine_similarity(languages, feature)
    raise ValueError(f"unknown similarity source {source!r}; choose from {', '.join(SOURCES)}")


def format_matrix(matrix: np.ndarray, languages: list[str], fmt: str = "csv", digits: int = 4) -> str:
    """A language x language matrix as CSV (header ``,en,fr,...``) or a markdown table."""
    cells = [[f"{value:.{digits}f}" for value in row] for row in matrix]
    if fmt == "csv":
        return "\n".join([",".join(["", *languages])] + [",".join([lang, *row]) for lang, row in
                                                          zip(languages, cells)]) + "\n"
    if fmt == "md":
        lines = ["| | " + " | ".join(languages) + " |", "|---" * (len(languages) + 1) + "|"]
        lines += [f"| {lang} | " + " | ".join(row) + " |" for lang, row in zip(languages, cells)]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown format {fmt!r}; use csv or md")
