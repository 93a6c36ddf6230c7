"""The MVALUE reader and the paper's split."""

import json
import math
import random

import pytest

from mvplatform.data import (
    load_instructions,
    load_split,
    read_pairs,
    resolve_dataset,
    sandbox_root_for,
    split_pairs,
)
from mvplatform.errors import DataError, MvpError
from mvplatform.spec import DataSpec
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


# ---------------------------------------------------------------------------------------------
# Sandboxed data paths (data.sandbox, data.data_root): a shared spec reads no file outside its root


@pytest.fixture
def spec_dir(tmp_path):
    """A spec folder holding data/ and instructions/, next to a folder outside/ it must not read."""
    inside, outside = tmp_path / "spec", tmp_path / "outside"
    for root in (inside / "data", outside):
        for language in ("en", "fr"):
            write_mvalue(root, "morality", language, {"care": {f"{i}": {"pos": f"good {i}", "neg": f"bad {i}"}
                                                               for i in range(5)}})
    for root in (inside / "instructions", outside / "instructions"):
        root.mkdir(parents=True)
        (root / "en.json").write_text(json.dumps({"harmful": {"1": "h1", "2": "h2"}, "harmless": {"1": "a", "2": "b"}}))
    return inside


def refused(call) -> DataError:
    with pytest.raises(DataError, match="outside the sandbox") as excinfo:
        call()
    assert isinstance(excinfo.value, MvpError) and excinfo.value.exit_code == 2  # the CLI's "bad input" status
    return excinfo.value


def test_sandbox_refuses_a_dotdot_path_and_names_field_path_and_fix(spec_dir):
    root = sandbox_root_for(True, None, spec_dir)
    assert root == spec_dir.resolve()
    error = refused(lambda: resolve_dataset("../outside", spec_dir, root))
    message = str(error)
    assert message.startswith("data.dataset: ") and str((spec_dir.parent / "outside").resolve()) in message
    assert "data.data_root" in message and "data.sandbox: false" in message
    refused(lambda: load_split("../outside", "morality", "en", base_dir=spec_dir, sandbox_root=root))
    refused(lambda: resolve_dataset(str(spec_dir.parent / "outside"), spec_dir, root))  # absolute, too


def test_sandbox_refuses_symlinks_that_escape(spec_dir):
    root = sandbox_root_for(True, None, spec_dir)
    (spec_dir / "linked").symlink_to(spec_dir.parent / "outside", target_is_directory=True)
    refused(lambda: resolve_dataset("linked", spec_dir, root))
    # A folder inside whose pair file is a link to a file outside.
    write_mvalue(spec_dir / "mixed", "morality", "fr", {"care": {"1": {"pos": "a", "neg": "b"}}})
    (spec_dir / "mixed" / "morality" / "morality_en.json").symlink_to(
        spec_dir.parent / "outside" / "morality" / "morality_en.json")
    assert resolve_dataset("mixed", spec_dir, root) == spec_dir / "mixed"
    refused(lambda: load_split("mixed", "morality", "en", base_dir=spec_dir, sandbox_root=root))
    # The same for control instructions, and the error names that field.
    (spec_dir / "linked-instructions").symlink_to(spec_dir.parent / "outside" / "instructions")
    error = refused(lambda: load_instructions("en", source="linked-instructions", base_dir=spec_dir, sandbox_root=root))
    assert str(error).startswith("control.instructions: ")
    (spec_dir / "instructions" / "fr.json").symlink_to(spec_dir.parent / "outside" / "instructions" / "en.json")
    refused(lambda: load_instructions("fr", source="instructions", base_dir=spec_dir, sandbox_root=root))


def test_sandbox_accepts_paths_inside_and_builtin_data(spec_dir):
    root = sandbox_root_for(True, None, spec_dir)
    assert resolve_dataset("data", spec_dir, root) == spec_dir / "data"
    assert resolve_dataset("./data/../data", spec_dir, root) == spec_dir / "data/../data"
    assert len(load_split("data", "morality", "en", base_dir=spec_dir, sandbox_root=root).train) == 4
    assert load_instructions("en", source="instructions", base_dir=spec_dir, sandbox_root=root).test
    (spec_dir / "alias").symlink_to(spec_dir / "data")  # a link that stays inside is fine
    assert resolve_dataset("alias", spec_dir, root).is_dir()
    assert resolve_dataset("builtin:values", spec_dir, root).is_dir()
    assert load_instructions("en", base_dir=spec_dir, sandbox_root=root).search


def test_data_root_widens_the_sandbox_relative_to_the_spec(spec_dir):
    root = sandbox_root_for(True, "..", spec_dir)
    assert root == spec_dir.parent.resolve()
    assert resolve_dataset("../outside", spec_dir, root).is_dir()
    refused(lambda: resolve_dataset("../outside", spec_dir, sandbox_root_for(True, "data", spec_dir)))


def test_without_sandbox_paths_resolve_as_before(spec_dir):
    assert sandbox_root_for(False, "data", spec_dir) is None
    assert resolve_dataset("../outside", spec_dir) == spec_dir / "../outside"
    assert resolve_dataset("../outside", spec_dir, None).is_dir()
    assert load_split("../outside", "morality", "en", base_dir=spec_dir).test
    with pytest.raises(DataError, match="control.instructions: .* does not exist"):
        load_instructions("en", source="nowhere", base_dir=spec_dir)


def test_data_spec_sandbox_is_off_by_default():
    assert (DataSpec().sandbox, DataSpec().data_root) == (False, None)
    assert DataSpec(sandbox=True, data_root="shared").data_root == "shared"
