"""Table-driven: every malformed input gets the platform's own error class and a message that says
where and how to fix it, before any work or MLflow run exists."""

import json
from pathlib import Path

import pytest

from mvplatform.data import load_split, read_pairs
from mvplatform.errors import DataError, ModelError, MvpError, SpecError
from mvplatform.extraction import layer_numbers
from mvplatform.models import PACKAGED, model_depth
from mvplatform.spec import ExtractSpec, ModelSpec, load_spec
from mvplatform.statestore import StateStore
from tests.conftest import write_mvalue

SPEC_CASES = [
    ("yaml syntax", "name: x\n  bad: [\n", r"spec.yaml:2:\d+: invalid YAML"),
    ("yaml tab indentation", "name: x\ndata:\n\tseed: 1\n", r"spec.yaml:3:1: invalid YAML"),
    ("python tag refused", "name: !!python/object/apply:os.system ['echo hi']\n", r"invalid YAML"),
    ("not a mapping", "- a\n- b\n", r"spec must be a mapping"),
    ("empty file", "", r"spec.yaml: the spec is empty .*`\{\}` for every default"),
    ("comments only", "# name: x\n\n# data: {}\n", r"the spec is empty \(no fields, only blanks or comments\)"),
    ("unknown top-level key", "nmae: x\n", r"spec.yaml:1: nmae: unknown field \(did you mean 'name'\?\)"),
    ("unknown nested key", "data:\n  languges: [en]\n", r"spec.yaml:2: data.languges: unknown field \(did you mean 'languages'"),
    ("wrong type", "extract:\n  batch_size: lots\n", r"spec.yaml:2: extract.batch_size: Input should be a valid integer"),
    ("empty concept list", "data:\n  concepts: []\n", r"data.concepts: List should have at least 1 item"),
    ("empty model list", "model: []\n", r"model: Value error|model list is empty"),
    ("unknown concept", "data:\n  concepts: [moral]\n", r"unknown concept 'moral' \(did you mean 'morality'\?\)"),
    ("unknown language", "data:\n  languages: [en, fz]\n", r"unknown language 'fz'"),
    ("duplicate language", "data:\n  languages: [en, fr, en]\n", r"language en listed twice"),
    ("duplicate model", "model: [a/b, a/b]\n", r"the same model is listed twice"),
    ("test_fraction 1.5", "data:\n  test_fraction: 1.5\n", r"data.test_fraction: Input should be less than 1"),
    ("test_fraction 0", "data:\n  test_fraction: 0\n", r"data.test_fraction: Input should be greater than 0"),
    ("layer 0", "extract:\n  layers: [0, 3]\n", r"extract.layers\[0\]: Input should be greater than or equal to 1"),
    ("token 0", "extract:\n  token: 0\n", r"extract.token: Input should be less than 0"),
    ("unknown method", "extract:\n  method: mean\n", r"unknown direction method 'mean'"),
    ("bad device", "model: {name: x, device: gpu}\n", r"model.device: unknown device 'gpu'"),
    ("prompt without {input}", "model: {name: x, prompt: 'Q:'}\n", r"template containing \{input\}"),
    ("negative GPUs", "resources: {gpus_per_worker: -1}\n", r"gpus_per_worker must be >= 0"),
    ("zero workers", "resources: {model_workers: 0}\n", r"resources.model_workers: Input should be greater than or equal to 1"),
    ("cross-lingual with one language", "data: {languages: [en]}\nanalyses: [consistency]\n",
     r"compare languages: list at least 2"),
    ("unknown analysis", "analyses: [telepathy]\n", r"analyses\[0\]"),
    ("bad name", "name: 'my run!'\n", r"name: must be a name, not a path"),
    ("control strength low > high", "control:\n  search:\n    strength: [1.0, -1.0]\n",
     r"spec.yaml:3: control.search.strength: range \[1.0, -1.0\] is empty"),
    ("control trials < 1", "control:\n  search: {trials: 0}\n", r"control.search.trials: Input should be greater than or equal to 1"),
    ("control window width 0", "control:\n  search: {layers: {width: [0, 3]}}\n", r"control.search.layers.width\[0\]"),
    ("control concept not extracted", "data: {concepts: [morality]}\ncontrol:\n  concept: harmfulness\n",
     r"spec.yaml:3: control.concept: 'harmfulness' is not extracted: add it to data.concepts"),
    ("control language not extracted", "data: {languages: [en, fr]}\ncontrol: {languages: [en, sw]}\n",
     r"spec.yaml:2: control.languages: sw not in data.languages; control steers with vectors"),
    ("En-Control without English", "data: {languages: [fr, zh]}\ncontrol: {modes: [english_source]}\n",
     r"control.modes: english_source steers with English vectors"),
    ("unknown control mode", "control: {modes: [ls]}\n", r"control.modes\[0\]"),
    ("unknown operator", "control: {operator: rotate}\n", r"control.operator: unknown steering operator 'rotate'; valid: linear_comb, piecewise_linear"),
    ("unknown sampler", "control:\n  search: {sampler: bayes}\n", r"control.search.sampler: unknown Optuna sampler 'bayes'; valid: tpe, grid"),
    ("model judge without model", "control: {judge: model}\n", r"control.judge: judge name: model needs judge.model"),
    ("guard bound above 1", "control:\n  search: {guard: {min_relative: 1.5}}\n", r"control.search.guard.min_relative"),
]


@pytest.mark.parametrize(("case", "text", "pattern"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_malformed_spec(tmp_path, case, text, pattern):
    assert_spec_refused(tmp_path, text, pattern)


def assert_spec_refused(tmp_path, text: str, pattern: str) -> None:
    """``text`` written as spec.yaml is refused by load_spec with a message matching ``pattern``."""
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)


def test_layer_beyond_the_models_depth():
    with pytest.raises(SpecError, match=r"layer\(s\) \[19\] exceed the model's 18 decoder layers"):
        layer_numbers(ExtractSpec(layers=[3, 19]), 18)


def test_missing_data_file_for_a_language(mvalue_dir):
    with pytest.raises(DataError, match=r"morality_sw.json: missing data file.*present for this concept: en, fr"):
        read_pairs(mvalue_dir, "morality", "sw")


def test_mvalue_leaf_without_pos_is_dropped_and_counted(tmp_path):
    """As released, MVALUE files hold some pairs with an empty side: dropped and counted, not a refusal."""
    from mvplatform.data import read_pair_file

    write_mvalue(tmp_path, "fairness", "en", {"work": {"001": {"neg": "I favoured my friend."},
                                                       "002": {"pos": " ", "neg": "I took a bribe."},
                                                       "003": {"pos": "I followed the rules.", "neg": "I cheated."}}})
    read = read_pair_file(tmp_path, "fairness", "en")
    assert [p.key for p in read.pairs] == ["work/003"] and read.empty == ["work/001", "work/002"]


def test_mvalue_side_of_the_wrong_type(tmp_path):
    write_mvalue(tmp_path, "fairness", "en", {"work": {"001": {"pos": 7, "neg": "I favoured my friend."}}})
    with pytest.raises(DataError, match=r"fairness_en.json: work/001: 'pos' must be a string, got int"):
        read_pairs(tmp_path, "fairness", "en")


def test_all_identical_pairs(tmp_path):
    write_mvalue(tmp_path, "fairness", "en", {"g": {f"{i}": {"pos": "same", "neg": "same"} for i in range(5)}})
    with pytest.raises(DataError, match=r"no usable contrast pairs.*pos == neg"):
        read_pairs(tmp_path, "fairness", "en")


def test_too_few_pairs_for_a_split(tmp_path):
    write_mvalue(tmp_path, "fairness", "en", {"g": {"1": {"pos": "a", "neg": "b"}, "2": {"pos": "c", "neg": "d"}}})
    with pytest.raises(DataError, match=r"2 usable pair\(s\) give 0 train / 2 test at test_fraction=0.6"):
        load_split(str(tmp_path), "fairness", "en", test_fraction=0.6)


def test_data_file_that_is_not_json(tmp_path):
    (tmp_path / "fairness").mkdir()
    (tmp_path / "fairness" / "fairness_en.json").write_text("{not json")
    with pytest.raises(DataError, match=r"fairness_en.json:1:2: not valid JSON"):
        read_pairs(tmp_path, "fairness", "en")


def test_model_path_that_does_not_exist(tmp_path):
    with pytest.raises(ModelError, match=r"model path .* does not exist; packaged aliases: gemma3-270m"):
        model_depth(ModelSpec(name=str(tmp_path / "nowhere")))


def test_hub_id_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # what a machine without network sees, without the wait
    with pytest.raises(ModelError, match=r"cannot read the config of model 'nobody/no-such-model'.*local directory"):
        model_depth(ModelSpec(name="nobody/no-such-model"))


def test_packaged_alias_whose_package_is_missing(monkeypatch):
    from mvplatform import models

    missing = models.PackagedModel("ghost-1m", "ghost-1m-gguf", "pip install ghost-1m-gguf", "a model that is not installed",
                                   lambda cache: Path("/nowhere"), "ghost_1m_gguf_not_installed", 4)
    monkeypatch.setitem(PACKAGED, "ghost-1m", missing)
    with pytest.raises(ModelError, match=r"packaged model 'ghost-1m' is not installed; run: pip install ghost-1m-gguf"):
        model_depth(ModelSpec(name="ghost-1m"))


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(MvpError, match=r"results folder .* is not writable.*set results.dir"):
        StateStore(blocker / "results").check_writable()


def test_spec_with_too_deep_layers_fails_before_any_mlflow_run(tiny_model_dir, mvalue_dir, tmp_path):
    import subprocess
    import sys

    spec = tmp_path / "spec.yaml"
    spec.write_text(json.dumps({"name": "deep", "model": str(tiny_model_dir("llama")),
                                "data": {"dataset": str(mvalue_dir), "concepts": ["morality"], "languages": ["en"]},
                                "extract": {"layers": [2, 9]}, "tracking": {"uri": f"sqlite:///{tmp_path}/m.db"},
                                "results": {"dir": str(tmp_path / "r")}}))
    result = subprocess.run([sys.executable, "-m", "mvplatform.cli", "submit", str(spec)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "layer(s) [9] exceed the model's 3 decoder layers" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "r").exists()
