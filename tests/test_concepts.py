"""Directions, sign rule and recognition against hand-computed values."""

import numpy as np
import pytest

from mvplatform.concepts import ConceptVectors, best_layer, cluster_mean, extract_vectors, orient, recognition_accuracy


def test_cluster_mean_is_difference_of_means_per_layer():
    pos = np.array([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 4.0], [2.0, 2.0]]])  # [2 pairs, 2 layers, 2]
    neg = np.array([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 0.0], [1.0, 3.0]]])
    # layer 1: mean pos (2, 3) - mean neg (0.5, 0) = (1.5, 3); layer 2: (1, 1) - (1, 2) = (0, -1)
    raw = cluster_mean(pos, neg, np.random.default_rng(0))
    np.testing.assert_allclose(raw, [[1.5, 3.0], [0.0, -1.0]])


def test_pca_matches_first_component_of_recentred_flipped_differences():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    axis = np.array([3.0, 1.0, 0.0, 0.0])
    pos = rng.normal(size=(40, 1, 4)) + axis * rng.uniform(1, 2, size=(40, 1, 1))
    neg = pos - axis * rng.uniform(1, 2, size=(40, 1, 1)) + 0.05 * rng.normal(size=(40, 1, 4))
    vectors = extract_vectors(pos, neg, layers=[1], method="pca", seed=7)
    flips = np.random.default_rng(7).choice([-1.0, 1.0], size=40)[:, None]
    reference = PCA(n_components=1).fit(flips * (pos - neg)[:, 0, :]).components_[0]
    cosine = vectors.directions[0] @ reference / np.linalg.norm(vectors.directions[0]) / np.linalg.norm(reference)
    assert abs(cosine) == pytest.approx(1.0, abs=1e-9)
    # and the sign rule points it from neg to pos: along +axis
    assert vectors.directions[0] @ axis > 0


def test_sign_rule_flips_a_direction_that_points_from_pos_to_neg():
    pos = np.array([[[1.0]], [[1.0]], [[-0.5]]])
    neg = np.zeros_like(pos)
    # margins along +1: 1, 1, -0.5 -> 2 of 3 pairs positive -> keep; along -1 -> 1 of 3 -> flip
    np.testing.assert_allclose(orient(np.array([[1.0]]), pos, neg), [[1.0]])
    np.testing.assert_allclose(orient(np.array([[-2.0]]), pos, neg), [[2.0]])


def test_recognition_counts_pairs_whose_pos_projects_strictly_higher():
    vectors = ConceptVectors([4, 9], np.array([[1.0, 0.0], [0.0, 1.0]]), "cluster_mean")
    pos = np.array([[[2, 0], [0, 1]], [[1, 5], [0, -1]], [[0, 0], [0, 3]], [[3, 3], [0, 2]]], dtype=float)
    neg = np.array([[[1, 0], [0, 0]], [[2, 0], [0, 0]], [[0, 9], [0, 1]], [[0, 0], [0, 2]]], dtype=float)
    # layer 4 (x): margins 1, -1, 0, 3 -> 2/4 ; layer 9 (y): 1, -1, 2, 0 -> 2/4
    np.testing.assert_allclose(recognition_accuracy(vectors, pos, neg), [0.5, 0.5])
    vectors = ConceptVectors([4, 9], np.array([[1.0, 0.0], [0.0, -1.0]]), "cluster_mean")
    np.testing.assert_allclose(recognition_accuracy(vectors, pos, neg), [0.5, 0.25])


def test_best_layer_takes_the_earliest_of_ties():
    assert best_layer(np.array([0.5, 0.9, 0.9]), [1, 2, 3]) == (2, 0.9)


def test_separable_synthetic_concept_is_recognised_perfectly():
    rng = np.random.default_rng(0)
    concept = rng.normal(size=16)
    base = rng.normal(size=(30, 3, 16))
    pos, neg = base + concept, base - concept + 0.1 * rng.normal(size=base.shape)
    vectors = extract_vectors(pos[:24], neg[:24], layers=[1, 2, 3])
    assert recognition_accuracy(vectors, pos[24:], neg[24:]).tolist() == [1.0, 1.0, 1.0]


def test_vectors_round_trip_through_safetensors(tmp_path):
    vectors = ConceptVectors([1, 2], np.arange(6, dtype=np.float32).reshape(2, 3), "pca")
    vectors.save(tmp_path / "v.safetensors")
    back = ConceptVectors.load(tmp_path / "v.safetensors")
    assert back.layers == [1, 2] and back.method == "pca"
    np.testing.assert_array_equal(back.directions, vectors.directions)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="layers"):
        extract_vectors(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), layers=[1, 2])


def test_selected_layer_is_chosen_on_training_pairs_not_on_the_test_set():
    from mvplatform.extraction import PairStates, recognise
    from mvplatform.spec import ExtractSpec

    # 2 layers, hidden 1, 3 train pairs then 1 test pair. Layer 1: every train pair right, the
    # test pair wrong. Layer 2: 2 of 3 train pairs right, the test pair right.
    pos = np.array([[[1.0], [1.0]], [[1.0], [1.0]], [[1.0], [-1.0]], [[-1.0], [1.0]]])
    neg = np.zeros_like(pos)
    result = recognise(PairStates(pos, neg, 3, [1, 2]), "m", "c", "en", ExtractSpec())
    np.testing.assert_allclose(result.train_accuracy, [1.0, 2 / 3])
    np.testing.assert_allclose(result.accuracy, [0.0, 1.0])
    assert result.best == (2, 1.0)  # chosen on the test pairs: optimistic
    assert result.selected == (1, 0.0)  # chosen on the training pairs: honest
