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


def test_table1_intervals_are_a_bootstrap_over_languages():
    from mvplatform.uncertainty import language_counts, resampled_pair_correlation

    languages = ["en", "fr", "zh", "ja", "ko", "vi", "sw", "ny"]
    rng = np.random.default_rng(4)
    a = rng.uniform(size=(8, 8))
    similarity = (a + a.T) / 2
    high = ["en", "fr", "zh", "ja"]
    # an exact linear relation: every resample's r is 1, so every interval is [1, 1]
    exact = table1_row(similarity, 0.5 * similarity + 0.2, languages, high, n_boot=200)
    for cell in ("direct", "split_with_high", "split_low", "within_high", "split"):
        assert (exact[cell].r, exact[cell].low, exact[cell].high) == pytest.approx((1.0, 1.0, 1.0))
    # noise: the interval is the 2.5th / 97.5th percentile of r over language resamples, drawn within the
    # high- (en fr zh ja) and low-resource groups; Split's resample is the mean of its parts' resamples
    b = rng.uniform(size=(8, 8))
    linguistic = 0.3 * similarity + (b + b.T) / 2
    row = table1_row(similarity, linguistic, languages, high, n_boot=400, seed=7)
    counts = language_counts([1, 1, 1, 1, 0, 0, 0, 0], 400, 7)
    pairs = [(i, j) for i in range(8) for j in range(i + 1, 8)]
    direct = resampled_pair_correlation(similarity, linguistic, pairs, counts)
    assert (row["direct"].low, row["direct"].high) == pytest.approx(tuple(np.nanquantile(direct, [0.025, 0.975])))
    with_high = resampled_pair_correlation(similarity, linguistic, [(i, j) for i, j in pairs if i < 4], counts)
    low = resampled_pair_correlation(similarity, linguistic, [(i, j) for i, j in pairs if i >= 4], counts)
    split = (with_high + low) / 2
    assert (row["split"].low, row["split"].high) == pytest.approx(tuple(np.nanquantile(split, [0.025, 0.975])))
    assert row["direct"].low < row["direct"].r < row["direct"].high
    # seeded: the same numbers again
    again = table1_row(similarity, linguistic, languages, high, n_boot=400, seed=7)
    assert again["direct"] == row["direct"]


def test_table1_interval_is_missing_when_most_resamples_have_no_correlation():
    # three low-resource languages: a resample holds three distinct low-low pairs only when it draws all
    # three (6 of 27 draws), so r is undefined in most resamples and no interval is given
    languages = ["en", "sw", "ny", "ta"]
    similarity = np.array([[1, 0.2, 0.5, 0.3], [0.2, 1, 0.7, 0.1], [0.5, 0.7, 1, 0.6], [0.3, 0.1, 0.6, 1]])
    linguistic = similarity ** 2
    row = table1_row(similarity, linguistic, languages, high=["en"], n_boot=300)
    assert not np.isnan(row["split_low"].r) and np.isnan(row["split_low"].low) and np.isnan(row["split"].low)
    assert not np.isnan(row["direct"].low)  # en is in every resample: most draw at least 3 distinct pairs


def test_directionality_interval_is_a_paired_bootstrap_over_the_targets_test_pairs():
    from mvplatform.crosslingual import directionality_intervals
    from mvplatform.uncertainty import transfer_resamples

    # one layer; en's vector reads x, sw's reads y. On en's 4 test pairs en's own vector is right on all,
    # sw's on 2 (y = -1 on two); on sw's 4 pairs sw's own is right on all, en's on 2. A resample of sw's
    # pairs draws k1 ~ Binomial(4, 1/2) of the pairs en reads right: T(en -> sw) = k1 / 4 - 1, in
    # [-1, 0] (P(k1 = 0) = P(k1 = 4) = 1/16 > 2.5%); likewise T(sw -> en) = k2 / 4 - 1 with k2 independent
    # (another target). high_minus_low = (k1 - k2) / 4: P(k1 - k2 >= 3) = 9/256 = 3.5% > 2.5% and
    # P(k1 - k2 = 4) = 1/256 < 2.5%, so the interval is [-0.75, 0.75] around the point 0. (Each spread is
    # placed around the point by moving the resamples' median onto it: here the medians are the points.)
    directions = {"en": np.array([[1.0, 0.0]]), "sw": np.array([[0.0, 1.0]])}
    en = np.array([[[1.0, 1.0]], [[1.0, 1.0]], [[1.0, -1.0]], [[1.0, -1.0]]])
    sw = np.array([[[1.0, 1.0]], [[1.0, 1.0]], [[-1.0, 1.0]], [[-1.0, 1.0]]])
    states = {"en": (en, np.zeros_like(en)), "sw": (sw, np.zeros_like(sw))}
    languages, resampled = transfer_resamples(directions, states, n_boot=2000)
    assert languages == ["en", "sw"] and resampled.shape == (2000, 2, 2)
    vectors = {lang: ConceptVectors([1], d, "cluster_mean") for lang, d in directions.items()}
    point = directionality(transfer(vectors, states), high=["en"])
    assert (point.high_to_low, point.low_to_high, point.high_minus_low) == (-0.5, -0.5, 0.0)
    ci = directionality_intervals(resampled, languages, ["en"], point)
    assert (ci["high_to_low"].low, ci["high_to_low"].high) == (-1.0, 0.0)
    assert (ci["low_to_high"].low, ci["low_to_high"].high) == (-1.0, 0.0)
    assert (ci["high_minus_low"].point, ci["high_minus_low"].low, ci["high_minus_low"].high) == (0.0, -0.75, 0.75)
    assert np.isnan(ci["within_high"].point) and np.isnan(ci["within_high"].low)  # one high-resource language


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


def test_tables_show_the_intervals():
    from mvplatform.crosslingual import ConceptAnalysis, Correlation, Directionality, ModelTable1
    from mvplatform.figures import directionality_table, model_table1_text
    from mvplatform.uncertainty import CrossLingualIntervals, Interval

    d = Directionality(-0.05, -0.2, 0.0, float("nan"))
    ci = {"high_to_low": Interval(-0.05, -0.1, 0.0), "low_to_high": Interval(-0.2, -0.3, -0.1),
          "high_minus_low": Interval(0.15, 0.05, 0.25), "within_high": Interval(0.0, -0.02, 0.02),
          "within_low": Interval(float("nan"), float("nan"), float("nan"))}
    analysis = ConceptAnalysis("m", "morality", ["en", "fr", "sw"], directionality=d,
                               intervals=CrossLingualIntervals(directionality=ci))
    text = directionality_table([analysis])
    assert "| m | morality | -5.0 [-10.0, +0.0] | -20.0 [-30.0, -10.0] | +15.0 [+5.0, +25.0] | +0.0 [-2.0, +2.0] | – |" \
        in text
    # without evidence: the numbers alone
    assert "| m | morality | -5.0 | -20.0 | +15.0 | +0.0 | – |" in directionality_table([ConceptAnalysis(
        "m", "morality", ["en", "fr", "sw"], directionality=d)])
    cells = {"genetic": {"direct": Correlation(0.456, 0.01, 10, 0.1, 0.71),
                         "split": Correlation(0.2, float("nan"), 10)}}
    markdown, table_csv = model_table1_text([ModelTable1("m", ["en", "fr", "sw"], ["morality"], np.eye(3), cells)])
    assert "| m | +0.46* [+0.10, +0.71] | +0.20 |" in markdown
    assert "m,all,genetic,direct,0.4560,0.01,10,0.1000,0.7100" in table_csv


def test_cross_lingual_intervals_need_every_languages_training_differences():
    from mvplatform.crosslingual import cross_lingual_intervals
    from mvplatform.extraction import Evidence, ExtractionResult
    from mvplatform.uncertainty import Interval

    def result(lang, diff, train_diffs=True, evidence=True):
        diffs = np.array([[diff], [diff]], dtype=np.float32)  # two identical training pairs, one layer
        ev = Evidence(1, np.ones((2, 1)), np.ones(1), np.ones(1), np.full(1, 0.5), Interval(1.0, 1.0, 1.0), {},
                      train_diffs=diffs if train_diffs else None)
        return ExtractionResult("m", "morality", lang, vec(diff), np.ones(1), diffs, np.zeros_like(diffs), 2, 0.0,
                                evidence=ev if evidence else None)

    en, fr = result("en", [1.0, 0.0]), result("fr", [1.0, 1.0])
    cons = consistency({"en": en.vectors, "fr": fr.vectors})
    ci = cross_lingual_intervals([en, fr], cons, None, "max").consistency
    # every resample draws the same pairs, so the interval is the point: cos((1, 0), (1, 1)) = 1 / sqrt(2)
    s = 1 / np.sqrt(2)
    assert ci.languages == ["en", "fr"]
    np.testing.assert_allclose([ci.mean.point, ci.mean.low, ci.mean.high], [s, s, s], atol=1e-6)
    np.testing.assert_allclose(ci.low, [[1, s], [s, 1]], atol=1e-6)
    # one language without its training differences, or without evidence at all: no intervals
    assert cross_lingual_intervals([en, result("fr", [1.0, 1.0], train_diffs=False)], cons, None, "max") is None
    assert cross_lingual_intervals([result("en", [1.0, 0.0], evidence=False), fr], cons, None, "max") is None
    assert cross_lingual_intervals([], cons, None, "max") is None
