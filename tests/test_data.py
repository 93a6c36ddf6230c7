"""The MVALUE reader and the paper's split."""

import math
import random

import pytest

from mvplatform.data import load_split, read_pairs, resolve_dataset, split_pairs
from mvplatform.errors import DataError
from tests.conftest import write_mvalue


def test_reader_formats_scenario_and_question_and_drops_identical_pairs(tmp_path):
    write_mvalue(tmp_path, "deontology", "en", {"work": {
        "001": {"scenario": "Can you cover my shift?", "pos": "But I am sick.", "neg": "But I want to nap."},
        "002": {"scenario": "Same.", "pos": "Same text.", "neg": "Same text."}}})
    write_mvalue(tmp_path, "truthfulness", "en", {"sci": {
        "001": {"question": "Is the Earth flat?", "pos": "No.", "neg": "Yes."}}})
    deontology = read_pairs(tmp_path, "deontology", "en")
    assert [(p.key, p.pos, p.neg) for p in deontology] == [
        ("work/001", "Can you cover my shift? But I am sick.", "Can you cover my shift? But I want to nap.")]
    truth = read_pairs(tmp_path, "truthfulness", "en")[0]
    assert truth.pos == "Question: Is the Earth flat? Answer: No."
    assert truth.neg == "Question: Is the Earth flat? Answer: Yes."


def test_split_is_a_seeded_python_shuffle_then_floor_of_80_percent(mvalue_dir):
    pairs = read_pairs(mvalue_dir, "morality", "en")[:9]
    split = split_pairs(pairs, test_fraction=0.2, seed=1)
    expected = list(pairs)
    random.Random(1).shuffle(expected)
    assert len(split.train) == math.floor(0.8 * 9) == 7
    assert split.train + split.test == expected
    assert split_pairs(pairs, seed=1) == split


def test_max_pairs_caps_after_the_shuffle(mvalue_dir):
    split = split_pairs(read_pairs(mvalue_dir, "morality", "en"), max_pairs=5)
    assert (len(split.train), len(split.test)) == (4, 1)


def test_missing_language_file_names_the_path_and_what_exists(mvalue_dir):
    with pytest.raises(DataError, match=r"morality_de\.json.*languages present for this concept: en, fr"):
        read_pairs(mvalue_dir, "morality", "de")


def test_leaf_without_neg_is_refused_with_its_key(tmp_path):
    write_mvalue(tmp_path, "morality", "en", {"care": {"007": {"pos": "I helped."}}})
    with pytest.raises(DataError, match=r"care/007.*'neg'"):
        read_pairs(tmp_path, "morality", "en")


def test_split_with_an_empty_side_is_refused(tmp_path):
    write_mvalue(tmp_path, "morality", "en", {"care": {"001": {"pos": "a", "neg": "b"}}})
    with pytest.raises(DataError, match="1 usable pair"):
        load_split(str(tmp_path), "morality", "en")


def test_builtin_and_unknown_datasets_resolve_clearly(tmp_path):
    assert resolve_dataset("builtin:values").is_dir()
    with pytest.raises(DataError, match="available: builtin:"):
        resolve_dataset("builtin:nope")
    with pytest.raises(DataError, match="does not exist"):
        resolve_dataset(str(tmp_path / "missing"))
