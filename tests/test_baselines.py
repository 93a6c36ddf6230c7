"""Surface baselines against hand-worked small data sets."""

import numpy as np

from mvplatform.baselines import bow_lr, length_lr, length_rule, surface_baselines, tokens
from mvplatform.data import ContrastPair


def pair(pos: str, neg: str, key: str = "k") -> ContrastPair:
    return ContrastPair(key, pos, neg)


def test_tokens_split_words_and_characters_of_unspaced_scripts():
    assert tokens("Hello, World ok") == ["hello", "world", "ok"]
    assert tokens("我很好 ok") == ["我", "很", "好", "ok"]
    assert tokens("これは") == ["こ", "れ", "は"]


def test_length_rule_takes_its_direction_from_the_training_pairs():
    shorter = [pair("ab", "abcd"), pair("a", "abc"), pair("abcde", "abc")]  # pos shorter on 2 of 3
    longer = [pair("abcd", "ab"), pair("abc", "a"), pair("a", "abcdef")]  # pos longer on 2 of 3
    test = [pair("x", "xyz"), pair("xyz", "x"), pair("xy", "zw")]
    np.testing.assert_array_equal(length_rule(shorter, test), [1.0, 0.0, 0.5])
    np.testing.assert_array_equal(length_rule(longer, test), [0.0, 1.0, 0.5])
    # a tie in the training votes falls back to "the shorter side is pos"
    np.testing.assert_array_equal(length_rule([pair("a", "ab"), pair("ab", "a")], test), [1.0, 0.0, 0.5])


def test_length_regression_learns_a_planted_length_cue():
    train = [pair("w " * (3 + i), "w " * (1 + i)) for i in range(8)]  # pos is always two words longer
    test = [pair("a b c d", "a b"), pair("a", "a b c"), pair("same", "sane")]
    np.testing.assert_array_equal(length_lr(train, test), [1.0, 0.0, 0.5])
    # no length differences in training: nothing learned, every test pair is a coin flip
    flat = [pair("ab", "cd"), pair("ef", "gh")]
    np.testing.assert_array_equal(length_lr(flat, test), [0.5, 0.5, 0.5])


def test_bag_of_words_finds_a_giveaway_word_and_nothing_else():
    train = [pair(f"the {x} was kind", f"the {x} was cruel") for x in ("cat", "dog", "man", "boss", "host")]
    test = [pair("a kind act", "a cruel act"), pair("so cruel", "so kind"), pair("unseen words", "other text")]
    np.testing.assert_array_equal(bow_lr(train, test), [1.0, 0.0, 0.5])


def test_surface_baselines_bundle_reports_accuracy_per_baseline():
    train = [pair("kind and longer text", "cruel"), pair("very kind words here", "cruel"),
             pair("kind people everywhere", "cruel one")]
    test = [pair("kind words", "cruel"), pair("cruel", "kind")]
    result = surface_baselines(train, test)
    assert set(result.per_pair) == {"length_rule", "length_lr", "bow_lr"}
    assert result.accuracy()["length_rule"] == 1.0  # pos is the longer side in training and in both test pairs (10 > 5, 5 > 4)
    assert result.accuracy()["bow_lr"] == 0.5  # "kind" wins on the first pair, the second is swapped
    np.testing.assert_array_equal(result.per_pair["bow_lr"], [1.0, 0.0])
