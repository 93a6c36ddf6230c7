"""Consistency, transfer, directionality and Table-1 correlations against hand-computed values."""

import numpy as np
import pytest
from scipy import stats

from mvplatform.concepts import ConceptVectors
from mvplatform.crosslingual import consistency, correlate, directionality, table1_row, transfer
from mvplatform.linguistics import similarity_matrix


def vec(*rows):
    return ConceptVectors(list(range(1, len(rows) + 1)), np.array(rows, dtype=float), "cluster_mean")


def test_consistency_is_cosine_per_layer_then_averaged():
    vectors = {"en": vec([1, 0], [0, 2]), "fr": vec([1, 1], [0, 5]), "sw": vec([-3, 0], [1, 0])}
    result = consistency(vectors)
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(result.per_layer[0], [[1, s, -1], [s, 1, -s], [-1, -s, 1]], atol=1e-12)
    np.testing.assert_allclose(result.per_layer[1], [[1, 1, 0], [1, 1, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(result.mean[0, 1], (s + 1) / 2)
    # mean off-diagonal similarity per layer: layer 1 (s - 1 - s) / 3, layer 2 (1 + 0 + 0) / 3
    np.testing.assert_allclose(result.layer_curve(), [-1 / 3, 1 / 3])


def test_transfer_matrix_has_the_known_asymmetry():
    # en's vector reads both languages' data; sw's vector only reads sw's own data.
    en = vec([1.0, 0.0])
    sw = vec([1.0, 1.0])
    # en test pairs differ along x and get hurt by y; sw test pairs differ along both axes.
    en_pos = np.array([[[1.0, -2.0]], [[1.0, -2.0]], [[1.0, 0.0]], [[1.0, 0.0]]])
    en_neg = np.zeros_like(en_pos)
    sw_pos = np.array([[[1.0, 1.0]], [[1.0, 1.0]], [[0.5, 0.5]], [[0.2, 0.2]]])
    sw_neg = np.zeros_like(sw_pos)
    result = transfer({"en": en, "sw": sw}, {"en": (en_pos, en_neg), "sw": (sw_pos, sw_neg)})
    # acc: en on en 1.0, en on sw 1.0, sw on en 0.5 (margins -1, -1, 1, 1), sw on sw 1.0
    np.testing.assert_allclose(result.accuracy, [[1.0, 1.0], [0.5, 1.0]])
    np.testing.assert_allclose(result.scores, [[0.0, 0.0], [-0.5, 0.0]])
    d = directionality(result, high=["en"])
    assert (d.high_to_low, d.low_to_high) == (0.0, -0.5)
    assert np.isnan(d.within_high) and np.isnan(d.within_low)


def test_transfer_takes_each_pairs_best_layer():
    source = ConceptVectors([3, 7], np.array([[1.0], [-1.0]]), "cluster_mean")
    pos = np.array([[[-1.0], [-1.0]], [[-1.0], [-1.0]]])
    result = transfer({"a": source}, {"a": (pos, np.zeros_like(pos))})
    assert result.accuracy[0, 0] == 1.0 and result.best_layers[0, 0] == 7


def test_table1_correlations_on_a_fixed_matrix():
    languages = ["en", "fr", "zh", "sw", "ny"]
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(5, 5))
    similarity = (a + a.T) / 2
    linguistic = 0.5 * similarity + 0.1 * np.arange(25).reshape(5, 5) % 0.3
    linguistic = (linguistic + linguistic.T) / 2
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    expected = stats.pearsonr([similarity[p] for p in pairs], [linguistic[p] for p in pairs])
    row = table1_row(similarity, linguistic, languages, high=["en", "fr", "zh"])
    assert row["direct"].r == pytest.approx(expected[0]) and row["direct"].p == pytest.approx(expected[1])
    assert row["direct"].n_pairs == 10 and row["within_high"].n_pairs == 3
    high_pairs = [(0, 1), (0, 2), (1, 2)]
    assert row["within_high"].r == pytest.approx(
        stats.pearsonr([similarity[p] for p in high_pairs], [linguistic[p] for p in high_pairs])[0])
    # the authors' Split: pairs with a high-resource language (9) and the one low-low pair (sw-ny)
    with_high = [p for p in pairs if p != (3, 4)]
    assert row["split_with_high"].n_pairs == 9 and row["split_with_high"].r == pytest.approx(
        stats.pearsonr([similarity[p] for p in with_high], [linguistic[p] for p in with_high])[0])
    assert row["split_low"].n_pairs == 1 and np.isnan(row["split_low"].r)  # one pair: no correlation
    assert np.isnan(row["split"].r) and row["split"].n_pairs == 10  # a nan part makes the mean nan


def test_perfectly_related_similarities_correlate_at_one():
    lin = np.array([[1, 0.9, 0.2], [0.9, 1, 0.4], [0.2, 0.4, 1]])
    assert correlate(2 * lin + 1, lin, ["a", "b", "c"]).r == pytest.approx(1.0)


def test_uriel_similarities_are_symmetric_and_sensible():
    languages = ["en", "fr", "es", "ja"]
    genetic = similarity_matrix(languages, "genetic")
    np.testing.assert_allclose(genetic, genetic.T)
    np.testing.assert_allclose(np.diag(genetic), 1.0)
    assert genetic[1, 2] > genetic[0, 1] > genetic[0, 3]  # fr-es (Romance) > en-fr (Indo-European) > en-ja
    geographic = similarity_matrix(languages, "geographic")
    assert geographic[1, 2] > geographic[0, 3]


def test_uriel_data_is_found_even_when_the_lang2vec_script_shadows_the_package():
    """The lang2vec wheel installs bin/lang2vec.py; console scripts put bin/ first on sys.path."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import importlib.util, sys; sys.path.insert(0, sys.argv[1]); "
            "assert importlib.util.find_spec('lang2vec').origin.endswith('lang2vec.py'); "  # shadowed, as in Ray
            "from mvplatform.linguistics import similarity_matrix; print(similarity_matrix(['en', 'fr'], 'genetic')[0, 0])")
    result = subprocess.run([sys.executable, "-c", code, str(Path(sys.executable).parent)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(1.0)


def test_consistency_stays_within_minus_one_and_one():
    # nearly parallel vectors whose float cosine rounds above 1 without clipping
    rng = np.random.default_rng(0)
    base = rng.normal(size=(8, 96)) * 1e3
    vectors = {"en": ConceptVectors(list(range(1, 9)), base, "cluster_mean"),
               "fr": ConceptVectors(list(range(1, 9)), base * (1 + 1e-12), "cluster_mean")}
    result = consistency(vectors)
    assert result.max.max() <= 1.0 and result.per_layer.min() >= -1.0
