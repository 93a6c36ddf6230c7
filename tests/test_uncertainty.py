"""Intervals, paired tests and chance levels against hand-computed values on small inputs."""

import math

import numpy as np
import pytest

from mvplatform.concepts import extract_vectors, repe_signs
from mvplatform.uncertainty import (
    accuracy_intervals,
    best_layer_interval,
    bootstrap_counts,
    consistency_interval,
    fisher_interval,
    mcnemar,
    pair_correct,
    paired_difference,
    pearson,
    permutation_chance,
    resampled_directions,
    transfer_intervals,
    wilson,
)

Z = 1.959963984540054


def test_wilson_matches_the_formula_worked_by_hand():
    # 10 of 13: p = 0.76923, centre = (p + z^2/26) / (1 + z^2/13) = 0.70782, half-width 0.21038
    low, high = wilson(10, 13)
    assert float(low) == pytest.approx(0.497434, abs=1e-5)
    assert float(high) == pytest.approx(0.918204, abs=1e-5)
    # 0 of 10: the interval is [0, (z^2/n) / (1 + z^2/n)] in closed form
    low, high = wilson(0, 10)
    assert float(low) == 0.0
    assert float(high) == pytest.approx((Z * Z / 10) / (1 + Z * Z / 10), rel=1e-9)
    # n of n mirrors it
    low, high = wilson(10, 10)
    assert float(low) == pytest.approx(1 - (Z * Z / 10) / (1 + Z * Z / 10), rel=1e-9) and float(high) == 1.0
    with pytest.raises(ValueError, match="successes"):
        wilson(5, 4)


def test_accuracy_intervals_are_wilson_per_layer():
    correct = np.array([[1, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    acc, low, high = accuracy_intervals(correct)
    np.testing.assert_allclose(acc, [0.75, 0.5])
    exp_low, exp_high = wilson(np.array([3, 2]), 4)
    np.testing.assert_allclose(low, exp_low)
    np.testing.assert_allclose(high, exp_high)


def test_bootstrap_counts_are_seeded_and_sum_to_n():
    a, b = bootstrap_counts(7, 50, seed=3), bootstrap_counts(7, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert (a.sum(axis=1) == 7).all()
    assert not np.array_equal(a, bootstrap_counts(7, 50, seed=4))


def test_best_layer_bootstrap_repeats_the_layer_choice():
    # Two layers, each right on one of two pairs: each layer has accuracy 0.5, so the best-layer
    # number is 0.5. A resample draws pair 1 twice, pair 2 twice (best layer: 1.0 either way) or
    # each once (0.5), with probabilities 1/4, 1/4, 1/2: the optimism of picking a layer shows.
    correct = np.array([[1.0, 0.0], [0.0, 1.0]])
    result = best_layer_interval(correct, n_boot=4000, seed=1)
    assert result.point == 0.5
    assert result.low == 0.5 and result.high == 1.0
    counts = bootstrap_counts(2, 4000, seed=1)
    maxima = (counts @ correct / 2).max(axis=1)
    assert np.mean(maxima == 1.0) == pytest.approx(0.5, abs=0.03)
    # a layer right on every pair gives a zero-width interval at 1
    perfect = best_layer_interval(np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]]), n_boot=100)
    assert (perfect.point, perfect.low, perfect.high) == (1.0, 1.0, 1.0)


def test_paired_difference_resamples_both_sides_together():
    a = np.array([[1.0], [1.0], [0.0], [1.0]])
    same = paired_difference(a, a.copy(), n_boot=200)
    assert (same.point, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: identical sides never differ
    ones, zeros = np.ones((5, 2)), np.zeros((5, 3))
    full = paired_difference(ones, zeros, n_boot=200)
    assert (full.point, full.low, full.high) == (1.0, 1.0, 1.0)
    # b is a but one pair worse: the difference is 0 or positive in every resample, 0.25 on the full set
    b = np.array([[1.0], [1.0], [0.0], [0.0]])
    diff = paired_difference(a, b, n_boot=2000, seed=2)
    assert diff.point == 0.25 and diff.low >= 0.0 and diff.high <= 1.0
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference(a, np.ones((3, 1)))


def test_pearson_interval_is_fisher_z_and_p_is_the_t_test():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    result = pearson(np.array(x), np.array(y))
    # by hand: sum dx dy = 6, sum dx^2 = 10, sum dy^2 = 6 -> r = 6 / sqrt(60)
    r = 6 / math.sqrt(60)
    assert result.r == pytest.approx(r)
    half = Z / math.sqrt(5 - 3)
    assert result.low == pytest.approx(math.tanh(math.atanh(r) - half))
    assert result.high == pytest.approx(math.tanh(math.atanh(r) + half))
    # t = r sqrt(n - 2) / sqrt(1 - r^2) = 2.1213 with 3 degrees of freedom: p = 0.1240
    assert result.p == pytest.approx(0.1240, abs=5e-4)
    assert math.isnan(pearson(np.array([1.0, 2, 3]), np.array([1.0, 2, 4])).r)  # fewer than 4 points


def test_mcnemar_is_the_exact_binomial_on_discordant_instructions():
    ls = np.array([1, 1, 1, 1, 0, 1])
    en = np.array([0, 0, 0, 1, 0, 1])
    result = mcnemar(ls, en)
    assert (result.only_a, result.only_b) == (3, 0)
    assert result.p == pytest.approx(2 * 0.5**3)  # 3 of 3 discordant favour LS: 2 * (1/2)^3
    assert result.rate_a == pytest.approx(5 / 6) and result.rate_b == pytest.approx(2 / 6)
    assert result.difference.point == pytest.approx(0.5)
    assert mcnemar(ls, ls).p == 1.0
    with pytest.raises(ValueError, match="equally long"):
        mcnemar(ls, en[:3])


def test_pair_correct_counts_ties_as_wrong():
    pos = np.array([[[2.0, 0.0]], [[1.0, 0.0]], [[0.0, 0.0]]])
    neg = np.array([[[0.0, 0.0]], [[3.0, 0.0]], [[0.0, 0.0]]])
    np.testing.assert_array_equal(pair_correct(np.array([[1.0, 0.0]]), pos, neg), [[1.0], [0.0], [0.0]])


@pytest.mark.parametrize("orientation", ["authors", "majority", "repe"])
def test_batched_cluster_mean_reextraction_matches_extract_vectors(orientation):
    """The vectorised path must give the vectors extract_vectors gives on the same drawn, flipped pairs."""
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(size=(9, 3, 5)), rng.normal(size=(9, 3, 5))
    pos[:, :, 0] += 0.3  # a weak signal, so the sign rule matters on some resamples
    counts = bootstrap_counts(9, 20, seed=5)
    signs = rng.choice([-1.0, 1.0], size=(20, 9))
    batched = resampled_directions(pos, neg, counts, signs, "cluster_mean", orientation=orientation)
    for b in range(20):
        index = np.repeat(np.arange(9), counts[b].astype(int))
        flip = signs[b, index] < 0
        p = np.where(flip[:, None, None], neg[index], pos[index])
        q = np.where(flip[:, None, None], pos[index], neg[index])
        if orientation == "repe":  # how crosslingual.consistency signs the authors' cluster means
            expected = extract_vectors(p, q, [1, 2, 3]).directions
            expected = expected * repe_signs(expected, p, q)[:, None]
        else:
            expected = extract_vectors(p, q, [1, 2, 3], orientation=orientation).directions
        np.testing.assert_allclose(batched[b], expected, atol=1e-12)


def test_permutation_signs_swap_exactly_half_the_pairs():
    from mvplatform.uncertainty import permutation_signs

    signs = permutation_signs(7, 300, seed=2)
    assert ((signs == -1).sum(axis=1) == 3).all() and set(np.unique(signs)) == {-1.0, 1.0}
    assert 0.3 < (signs[:, 0] == -1).mean() < 0.56  # each pair is swapped in about 3/7 of the permutations
    np.testing.assert_array_equal(signs, permutation_signs(7, 300, seed=2))


@pytest.mark.parametrize("orientation", ["authors", "majority"])
def test_permutation_chance_on_a_two_pair_example(orientation):
    # Training differences e1 and e2; every permutation swaps exactly one of them, so the direction is
    # (1, -1) / 2 or (-1, 1) / 2 (the majority rule keeps it: one flipped pair projects +1/2, the
    # other -1/2, a tie kept). Test pairs e1 and e2: exactly one of them is right, accuracy 0.5.
    train_pos = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    train_neg = np.zeros_like(train_pos)
    test_pos, test_neg = train_pos.copy(), train_neg.copy()
    for quantile in (0.05, 0.5, 0.95):
        assert permutation_chance(train_pos, train_neg, test_pos, test_neg, n_perm=100, seed=1, quantile=quantile,
                                  orientation=orientation)[0] == 0.5


def test_permutation_chance_rises_with_the_pairs_common_offset():
    # Every pair differs by a common vector (size c along one of 16 axes) plus unit noise. Half the
    # training pairs are swapped in every permutation, so the common vector cancels in the mean, but
    # the noise left over still has a component along it of random sign: when c is large against the
    # noise, that component decides every test pair at once and shuffled labels score 0 or 100%.
    def chance(c):
        rng = np.random.default_rng(0)
        pos = np.zeros(16) + rng.normal(size=(60, 1, 16))
        pos[:, :, 0] += c
        return permutation_chance(pos[:48], np.zeros_like(pos[:48]), pos[48:], np.zeros_like(pos[48:]), n_perm=300,
                                  seed=1)[0]

    assert chance(1.0) == 0.75  # 12 test pairs: 9 of 12 at the 95th percentile
    assert chance(5.0) == 1.0  # a dominant offset: the chance level says the pairs differ along one direction


def test_permutation_chance_is_deterministic_and_near_half_on_noise():
    rng = np.random.default_rng(3)
    pos, neg = rng.normal(size=(40, 2, 8)), rng.normal(size=(40, 2, 8))
    a = permutation_chance(pos[:30], neg[:30], pos[30:], neg[30:], n_perm=300, seed=9)
    b = permutation_chance(pos[:30], neg[:30], pos[30:], neg[30:], n_perm=300, seed=9)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2,) and ((a >= 0.6) & (a <= 1.0)).all()  # 10 test pairs: the 95th percentile is well above 0.5


@pytest.mark.parametrize("orientation", ["authors", "majority", "repe"])
def test_permutation_chance_on_pure_noise_is_the_binomial_95th_percentile(orientation):
    """A known answer (issue 16 item 4): when pos and neg are independent noise, a vector from shuffled
    training labels is independent of the test pairs, each of the m test pairs is right with probability
    1/2 independently, and accuracy is Binomial(m, 1/2) / m: mean 0.5, sd sqrt(0.25 / m), 95th
    percentile ~ 0.5 + 1.645 sqrt(0.25 / m) = 0.5411 for m = 400."""
    from mvplatform.uncertainty import permutation_accuracy

    rng = np.random.default_rng(11)
    pos, neg = rng.normal(size=(460, 4, 16)), rng.normal(size=(460, 4, 16))
    accuracy = permutation_accuracy(pos[:60], neg[:60], pos[60:], neg[60:], "cluster_mean", n_perm=200, seed=2,
                                     orientation=orientation)  # [200 permutations, 4 layers]
    expected = 0.5 + 1.645 * math.sqrt(0.25 / 400)
    # 800 draws of Binomial(400, 1/2) / 400: the mean within 3 standard errors (0.025 / sqrt(800) = 0.0009),
    # the spread within 10%, the 95th percentile within 3 of its standard errors (~0.0019)
    assert accuracy.mean() == pytest.approx(0.5, abs=0.003)
    assert accuracy.std() == pytest.approx(math.sqrt(0.25 / 400), rel=0.1)
    assert np.quantile(accuracy, 0.95) == pytest.approx(expected, abs=0.006)
    # per layer (what a cell reports), 200 draws each: within 3 standard errors (~0.0037)
    chance = permutation_chance(pos[:60], neg[:60], pos[60:], neg[60:], "cluster_mean", n_perm=200, seed=2,
                                orientation=orientation)
    np.testing.assert_allclose(chance, expected, atol=0.012)


def test_pca_chance_level_follows_its_own_accuracy_because_its_axis_ignores_the_labels():
    """Documented limit (docs/fidelity.md): PCA finds its axis in the spread of the pair differences, labels
    or not, so shuffled labels only pick the axis's sign and the chance level lands on the real accuracy;
    cluster means need the labels for the axis too, and stay well below it."""
    from mvplatform.concepts import recognition_accuracy

    rng = np.random.default_rng(0)
    pos = rng.normal(size=(260, 1, 16))
    pos[:, :, 0] += 2.0  # every pair differs along axis 0 (size 2 against unit noise in 16 dimensions)
    neg = np.zeros_like(pos)
    for method, gap in (("pca", None), ("cluster_mean", 0.15)):
        accuracy = recognition_accuracy(extract_vectors(pos[:60], neg[:60], [1], method, 1), pos[60:], neg[60:])[0]
        chance = permutation_chance(pos[:60], neg[:60], pos[60:], neg[60:], method, n_perm=200, seed=1)[0]
        assert accuracy > 0.9
        if gap is None:
            assert chance == pytest.approx(accuracy, abs=0.02)
        else:
            assert chance < accuracy - gap


def test_pooled_fold_chance_on_pure_noise_counts_every_pair():
    """Under 5-fold cross-validation each permutation's accuracy is pooled over the folds' test pairs, so on
    noise it is Binomial(N, 1/2) / N over all N = 200 pairs: 95th percentile ~ 0.5 + 1.645 sqrt(0.25 / 200)."""
    from mvplatform.extraction import PairStates, recognise
    from mvplatform.spec import ExtractSpec

    rng = np.random.default_rng(5)
    pos, neg = rng.normal(size=(200, 3, 8)).astype(np.float32), rng.normal(size=(200, 3, 8)).astype(np.float32)
    ev = recognise(PairStates(pos, neg, 160, [1, 2, 3]), "m", "c", "en", ExtractSpec(folds=5, intervals=True)).evidence
    assert ev.n_eval == 200
    np.testing.assert_allclose(ev.chance, 0.5 + 1.645 * math.sqrt(0.25 / 200), atol=0.016)  # 3 SE of a 200-draw quantile


def test_consistency_interval_is_exact_when_every_pair_agrees():
    # Every en pair differs by (1, 0) and every fr pair by (1, 1): every resample gives the same
    # vectors, so the cosine 1/sqrt(2) has a zero-width interval.
    en_pos = np.tile([[[1.0, 0.0]]], (4, 1, 1))
    fr_pos = np.tile([[[1.0, 1.0]]], (5, 1, 1))
    result = consistency_interval({"en": (en_pos, np.zeros_like(en_pos)), "fr": (fr_pos, np.zeros_like(fr_pos))},
                                  n_boot=50)
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(result.low, [[1, s], [s, 1]])
    np.testing.assert_allclose(result.high, [[1, s], [s, 1]])
    assert result.mean.point == pytest.approx(s) and result.mean.low == pytest.approx(s)


def test_consistency_interval_widens_with_noisy_pairs():
    rng = np.random.default_rng(1)
    train = {lang: (rng.normal(size=(12, 2, 6)) + [1.0, 0, 0, 0, 0, 0], rng.normal(size=(12, 2, 6)))
             for lang in ("en", "fr", "sw")}
    result = consistency_interval(train, n_boot=100, seed=4)
    assert result.mean.low < result.mean.point < result.mean.high
    again = consistency_interval(train, n_boot=100, seed=4)
    np.testing.assert_array_equal(result.low, again.low)


# -- cross-validated recognition and the evidence attached to a cell (mvplatform.extraction) ----------


def _states(diffs, n_train):
    from mvplatform.extraction import PairStates

    pos = np.array(diffs, dtype=float).reshape(len(diffs), 1, 1)
    return PairStates(pos, np.zeros_like(pos), n_train, [1])


def test_cross_validation_tests_every_pair_once_with_the_other_folds_vectors():
    from mvplatform.extraction import recognise
    from mvplatform.spec import ExtractSpec

    # pair differences 2, 1, -1, 1; fold of pair i = i mod 2. Fold 0 (pairs 0, 2) is tested by the
    # mean of pairs 1, 3 (+1): 2 right, -1 wrong. Fold 1 (pairs 1, 3) by the mean of pairs 0, 2
    # (+0.5): both right. Pooled: 3 of 4.
    result = recognise(_states([2, 1, -1, 1], 3), "m", "c", "en", ExtractSpec(folds=2, intervals=False))
    np.testing.assert_allclose(result.accuracy, [0.75])
    # the logged vector is the training split's (pairs 0-2): mean difference 2/3
    np.testing.assert_allclose(result.vectors.directions, [[2 / 3]])
    assert result.n_test == 1 and result.evidence is None
    # folds: 1 is the paper's split: the last pair alone is the test set
    paper = recognise(_states([2, 1, -1, 1], 3), "m", "c", "en", ExtractSpec(intervals=False))
    np.testing.assert_allclose(paper.accuracy, [1.0])


def test_more_folds_than_pairs_is_refused_with_the_fix():
    from mvplatform.errors import SpecError
    from mvplatform.extraction import recognise
    from mvplatform.spec import ExtractSpec

    with pytest.raises(SpecError, match=r"extract.folds: 5 folds but c/en has 4 pairs; use at most 4"):
        recognise(_states([2, 1, -1, 1], 3), "m", "c", "en", ExtractSpec(folds=5))


def test_evidence_carries_wilson_bands_chance_and_baselines_on_the_same_pairs():
    from mvplatform.data import ContrastPair, PairSplit
    from mvplatform.extraction import recognise
    from mvplatform.spec import ExtractSpec

    diffs = [2, 1, -1, 1, 3, 0.5]
    # pos is the longer text in every pair but the third: the length rule gets 5 of 6 under 3 folds
    texts = [("long text", "short"), ("longer one", "tiny"), ("a", "bbbb"), ("wordy words", "few"),
             ("many words here", "one"), ("plenty", "ok")]
    pairs = [ContrastPair(str(i), p, n) for i, (p, n) in enumerate(texts)]
    split = PairSplit(pairs[:4], pairs[4:])
    result = recognise(_states(diffs, 4), "m", "c", "en", ExtractSpec(folds=3), split=split)
    ev = result.evidence
    assert ev.folds == 3 and ev.n_eval == 6
    # folds {0, 3}, {1, 4}, {2, 5}: means of the others 0.875, 0.625, 1.75 (all positive): the only
    # wrong pair is pair 2 (difference -1): 5 of 6
    np.testing.assert_allclose(result.accuracy, [5 / 6])
    low, high = wilson(5, 6)
    np.testing.assert_allclose([ev.low[0], ev.high[0]], [low, high])
    assert ev.best.point == pytest.approx(5 / 6)
    assert ev.chance.shape == (1,) and 0.0 <= ev.chance[0] <= 1.0
    # baselines are in pair order: the length rule learns "longer is pos" in every fold and misses pair 2
    np.testing.assert_array_equal(ev.baselines["length_rule"], [1, 1, 0, 1, 1, 1])
    assert ev.baseline("length_rule").point == pytest.approx(5 / 6)
    assert ev.above_chance.tolist() == [bool(ev.low[0] > ev.chance[0])]
    # without folds the evidence is on the test split's two pairs
    plain = recognise(_states(diffs, 4), "m", "c", "en", ExtractSpec(), split=split).evidence
    assert plain.folds == 1 and plain.n_eval == 2
    np.testing.assert_array_equal(plain.baselines["length_rule"], [1, 1])


def test_evidence_survives_the_round_trip_through_accuracy_json():
    import json

    from mvplatform.extraction import Evidence, recognise
    from mvplatform.spec import ExtractSpec

    ev = recognise(_states([2, 1, -1, 1, 3, 0.5], 4), "m", "c", "en", ExtractSpec(folds=2)).evidence
    back = Evidence.from_json(json.loads(json.dumps(ev.to_json())))
    np.testing.assert_array_equal(back.correct, ev.correct)
    np.testing.assert_array_equal(back.chance, ev.chance)
    assert back.best == ev.best and back.chance_best == ev.chance_best and back.folds == 2
    # the best-layer chance level is the shuffled runs' best layer: never below any single layer's
    assert ev.chance_best >= ev.chance.max()


@pytest.mark.parametrize("reduction", ["mean", "max"])
@pytest.mark.parametrize("orientation", ["authors", "majority"])
def test_consistency_interval_point_is_the_analysis_number(orientation, reduction):
    from mvplatform.crosslingual import consistency

    rng = np.random.default_rng(2)
    train = {lang: (rng.normal(size=(10, 3, 4)) + 0.2, rng.normal(size=(10, 3, 4))) for lang in ("en", "fr", "sw")}
    vectors = {lang: extract_vectors(p, q, [1, 2, 3], orientation=orientation) for lang, (p, q) in train.items()}
    matrix = consistency(vectors).reduce(reduction)
    expected = matrix[~np.eye(3, dtype=bool)].mean()
    result = consistency_interval(train, n_boot=30, orientation=orientation, reduction=reduction)
    assert result.mean.point == pytest.approx(expected)
    assert result.mean.low <= result.mean.point <= result.mean.high
    assert (result.low <= matrix + 1e-12).all() and (matrix <= result.high + 1e-12).all()


def test_transfer_intervals_are_paired_bootstraps_of_the_score():
    # one layer; en's vector reads x, sw's reads y. On sw's 4 test pairs x is right on 2, y on all 4:
    # T(en -> sw) = 0.5 - 1.0 = -0.5; on en's pairs both are right everywhere: T(sw -> en) = 0 exactly.
    directions = {"en": np.array([[1.0, 0.0]]), "sw": np.array([[0.0, 1.0]])}
    en = np.array([[[1.0, 1.0]]] * 4)
    sw = np.array([[[1.0, 1.0]], [[1.0, 1.0]], [[-1.0, 1.0]], [[-1.0, 1.0]]])
    result = transfer_intervals(directions, {"en": (en, np.zeros_like(en)), "sw": (sw, np.zeros_like(sw))},
                                n_boot=500)
    assert (result.low[1, 0], result.high[1, 0]) == (0.0, 0.0)
    assert result.low[0, 1] == -1.0 and result.high[0, 1] == 0.0  # a resample can draw only x-right or x-wrong pairs
    assert result.low[0, 0] == result.high[0, 0] == 0.0


def test_transfer_intervals_place_the_spread_around_the_point():
    # sw's own vectors read x at layer 1 and y at layer 2; its 4 test pairs are (x, y, z) = (1, -1, 1) twice
    # and (-1, 1, 1) twice, so each layer is right on 2: sw's best is 0.5. en's vector reads z (right on all
    # 4 at both layers): T(en -> sw) = 1.0 - 0.5 = +0.5. A resample draws k ~ Binomial(4, 1/2) pairs of the
    # first kind; sw's re-picked best is max(k, 4 - k) / 4 >= 0.5, so the resampled T is 0 (k = 0 or 4,
    # P = 2/16), 0.25 (k = 1 or 3, P = 8/16) or 0.5 (k = 2, P = 6/16): percentiles 2.5 / 50 / 97.5 =
    # 0 / 0.25 / 0.5. The raw percentile interval [0, 0.5] has the point on its edge (the re-picked
    # maximum runs high); placed around the point: [0.5 - 0.25, 0.5 + 0.25] = [0.25, 0.75].
    # On en's pairs (1, 1, 1) every vector is right at every layer: T(sw -> en) = 0 in every resample.
    from mvplatform.concepts import ConceptVectors
    from mvplatform.crosslingual import transfer
    from mvplatform.uncertainty import transfer_point, transfer_resamples

    directions = {"en": np.array([[0.0, 0, 1], [0, 0, 1]]), "sw": np.array([[1.0, 0, 0], [0, 1, 0]])}
    sw = np.array([[[1.0, -1, 1]] * 2, [[1.0, -1, 1]] * 2, [[-1.0, 1, 1]] * 2, [[-1.0, 1, 1]] * 2])  # [4, L=2, 3]
    en = np.ones((4, 2, 3))
    states = {"en": (en, np.zeros_like(en)), "sw": (sw, np.zeros_like(sw))}
    point = transfer_point(directions, states, ["en", "sw"])
    assert point.tolist() == [[0.0, 0.5], [0.0, 0.0]]
    vectors = {lang: ConceptVectors([1, 2], d, "cluster_mean") for lang, d in directions.items()}
    np.testing.assert_array_equal(point, transfer(vectors, states).scores)  # the analysis's own T
    result = transfer_intervals(directions, states, n_boot=2000)
    assert (result.low[0, 1], result.high[0, 1]) == (0.25, 0.75)
    assert (result.low[1, 0], result.high[1, 0]) == (0.0, 0.0) and result.low[0, 0] == result.high[0, 0] == 0.0
    _, scores = transfer_resamples(directions, states, n_boot=2000)
    raw = np.quantile(scores[:, 0, 1], [0.025, 0.975])
    assert raw.tolist() == [0.0, 0.5]  # what the raw percentiles gave: the point on the edge
    assert (result.low <= point).all() and (point <= result.high).all()
    resampled = transfer_resamples(directions, states, n_boot=2000)
    same = transfer_intervals({}, {}, resampled=resampled, point=point)
    np.testing.assert_array_equal(same.low, result.low)
    with pytest.raises(ValueError, match="pass point="):
        transfer_intervals({}, {}, resampled=resampled)
    with pytest.raises(ValueError, match="does not match"):
        transfer_intervals({}, {}, resampled=resampled, point=np.zeros((3, 3)))


def test_weighted_pearson_is_pearson_on_the_repeated_points():
    from scipy import stats

    from mvplatform.uncertainty import weighted_pearson

    x, y = np.array([0.9, 0.5, 0.1, 0.3]), np.array([0.8, 0.6, 0.2, 0.7])
    weights = np.array([[2, 2, 1, 0], [1, 1, 1, 1], [3, 0, 0, 1], [1, 1, 0, 0]], dtype=float)
    r = weighted_pearson(x, y, weights)
    # row 0 by hand: points (0.9, 0.8) x2, (0.5, 0.6) x2, (0.1, 0.2): means 0.58 and 0.6,
    # Sxy = 0.32, Sxx = 0.448, Syy = 0.24 -> r = 0.32 / sqrt(0.448 * 0.24) = 0.97590
    assert r[0] == pytest.approx(0.32 / math.sqrt(0.448 * 0.24)) == pytest.approx(0.97590, abs=1e-5)
    assert r[1] == pytest.approx(stats.pearsonr(x, y)[0])
    assert math.isnan(r[2]) and math.isnan(r[3])  # two distinct points: no correlation (as correlate_pairs)
    assert math.isnan(weighted_pearson(np.array([1.0, 1, 1]), y[:3], np.ones((1, 3)))[0])  # a constant side


def test_language_bootstrap_resamples_within_the_resource_groups():
    from mvplatform.uncertainty import language_counts

    counts = language_counts([1, 0, 0, 0, 1, 0], n_boot=300, seed=3)
    assert counts.shape == (300, 6)
    assert (counts[:, [0, 4]].sum(axis=1) == 2).all() and (counts[:, [1, 2, 3, 5]].sum(axis=1) == 4).all()
    np.testing.assert_array_equal(counts, language_counts([1, 0, 0, 0, 1, 0], n_boot=300, seed=3))
    # one high-resource language (LLaMA2's en) is drawn exactly once in every resample
    assert (language_counts([1, 0, 0, 0], n_boot=50)[:, 0] == 1).all()


def test_resampled_pair_correlation_counts_pairs_of_drawn_languages():
    from mvplatform.uncertainty import resampled_pair_correlation

    # languages 0, 1, 2, 3 drawn 2, 1, 1, 0 times: pairs (0,1) x2, (0,2) x2, (1,2) x1; no (0,0) pair
    similarity = np.array([[1, 0.9, 0.5, 0.4], [0.9, 1, 0.1, 0.3], [0.5, 0.1, 1, 0.2], [0.4, 0.3, 0.2, 1]])
    linguistic = np.array([[1, 0.8, 0.6, 0.1], [0.8, 1, 0.2, 0.9], [0.6, 0.2, 1, 0.5], [0.1, 0.9, 0.5, 1]])
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    r = resampled_pair_correlation(similarity, linguistic, pairs, np.array([[2.0, 1, 1, 0], [1, 1, 1, 1]]))
    assert r[0] == pytest.approx(0.32 / math.sqrt(0.448 * 0.24))  # the hand-worked points above
    from scipy import stats

    assert r[1] == pytest.approx(stats.pearsonr([similarity[p] for p in pairs], [linguistic[p] for p in pairs])[0])


def test_fisher_interval_matches_pearson():
    r = 6 / math.sqrt(60)
    low, high = fisher_interval(r, 5)
    full = pearson(np.array([1, 2, 3, 4, 5.0]), np.array([2, 4, 5, 4, 5.0]))
    assert (low, high) == pytest.approx((full.low, full.high))
    assert all(math.isnan(v) for v in fisher_interval(float("nan"), 10) + fisher_interval(0.5, 3))


def test_table2_intervals_and_the_paired_ls_vs_en_test():
    from mvplatform.control import Evaluation, LanguageEvaluation, ModeTask
    from mvplatform.judges import Verdict
    from tracking.control_runs import following_intervals

    def evaluation(followed):
        instructions = [f"i{k}" for k in range(len(followed))]
        verdicts = [Verdict("followed" if f else "refused", "") for f in followed]
        return Evaluation(None, instructions, ["r"] * len(followed), verdicts)

    def language(code, ls, en):
        modes = {"none": (ModeTask("none", code, None, None), evaluation([0] * len(ls))),
                 "language_specific": (ModeTask("language_specific", code, code, None), evaluation(ls)),
                 "english_source": (ModeTask("english_source", code, "en", None), evaluation(en))}
        return LanguageEvaluation(code, modes, [], None, 0.0)

    # fr: LS follows where En does not on 3 instructions, never the reverse: p = 2 / 2^3 = 0.25
    # sw: 1 instruction each way: p = 1. Pooled: 4 against 1: p = 2 * (1 + 5) / 2^5 = 0.375
    evaluations = [language("fr", [1, 1, 1, 1, 0, 1], [0, 0, 0, 1, 0, 1]), language("sw", [1, 0, 0], [0, 1, 0])]
    markdown, tests = following_intervals(evaluations)
    assert tests["fr"].p == pytest.approx(0.25) and tests["sw"].p == pytest.approx(1.0)
    assert tests["all"].p == pytest.approx(0.375) and (tests["all"].only_a, tests["all"].only_b) == (4, 1)
    low, high = wilson(5, 6)
    assert f"| fr | LS-Control | 83.3 | {100 * float(low):.1f}–{100 * float(high):.1f} | 6 |" in markdown
    assert "| fr | No-Control | 0.0 | 0.0–" in markdown


def test_evaluation_on_another_data_set_applies_the_cell_vectors_to_every_pair():
    from mvplatform.extraction import PairStates, evaluate_on, recognise
    from mvplatform.spec import ExtractSpec

    # 2 layers: the training pairs differ along x at layer 1 and along y at layer 2
    pos = np.array([[[1.0, 0.0], [0.0, 1.0]]] * 4)
    result = recognise(PairStates(pos, np.zeros_like(pos), 3, [1, 2]), "m", "c", "en", ExtractSpec(intervals=False))
    # the other data set's 4 pairs: at layer 1, x is right on 3 of 4; at layer 2, y is right on 1 of 4
    other = np.array([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]], [[1.0, 0.0], [0.0, -1.0]],
                      [[-1.0, 0.0], [0.0, -1.0]]])
    ev = evaluate_on(result, PairStates(other, np.zeros_like(other), 0, [1, 2]), "other")
    np.testing.assert_allclose(ev.accuracy, [0.75, 0.25])
    assert ev.n_pairs == 4 and ev.best_layer == 1 and ev.best.point == 0.75
    low, high = wilson(3, 4)
    assert ev.selected_layer == 1 and ev.selected.point == 0.75
    assert (ev.selected.low, ev.selected.high) == pytest.approx((float(low), float(high)))


def test_eval_data_sets_follow_the_sandbox_and_skip_missing_cells(tmp_path):
    from mvplatform.data import load_eval_pairs
    from mvplatform.errors import DataError
    from tests.conftest import write_mvalue

    inside = tmp_path / "spec" / "other"
    write_mvalue(inside, "morality", "en", {"g": {"1": {"pos": "good", "neg": "bad"}}})
    outside = tmp_path / "elsewhere"
    write_mvalue(outside, "morality", "en", {"g": {"1": {"pos": "good", "neg": "bad"}}})
    base = tmp_path / "spec"
    path, pairs = load_eval_pairs("other", "morality", "en", 0, base, base)
    assert path == inside / "morality" / "morality_en.json" and [(p.pos, p.neg) for p in pairs] == [("good", "bad")]
    assert load_eval_pairs("other", "morality", "fr", 0, base, base) is None  # skipped, not an error
    with pytest.raises(DataError, match=r"data.eval_datasets\[1\]: .* outside the sandbox"):
        load_eval_pairs(str(outside), "morality", "en", 1, base, base)
    with pytest.raises(DataError, match=r"data.eval_datasets\[0\]: directory .* does not exist"):
        load_eval_pairs("missing", "morality", "en", 0, base, None)


@pytest.mark.parametrize("orientation", ["authors", "majority"])
def test_permutation_shortcut_for_cluster_means_equals_reextracting(orientation):
    from mvplatform.uncertainty import batch_accuracy, permutation_accuracy, permutation_signs

    rng = np.random.default_rng(5)
    pos, neg = rng.normal(size=(30, 3, 7)), rng.normal(size=(30, 3, 7))
    pos[:, :, 0] += 0.4
    fast = permutation_accuracy(pos[:22], neg[:22], pos[22:], neg[22:], n_perm=50, seed=3, orientation=orientation)
    signs = permutation_signs(22, 50, seed=3)  # the same draws as inside
    slow = batch_accuracy(resampled_directions(pos[:22], neg[:22], np.ones((50, 22)), signs, "cluster_mean",
                                               orientation=orientation), pos[22:], neg[22:])
    np.testing.assert_array_equal(fast, slow)
