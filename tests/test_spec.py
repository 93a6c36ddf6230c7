"""Spec defaults, expansion and errors that name the file, line, field and fix."""

import json
from pathlib import Path

import pytest

from mvplatform.catalog import CONCEPTS, LANGUAGES
from mvplatform.errors import SpecError
from mvplatform.spec import Spec, expand, json_schema, load_spec, parse_spec


def test_a_three_line_spec_gets_every_default():
    spec = parse_spec("name: tiny\ndata:\n  concepts: [morality]\n")
    assert spec.models[0].name == "gemma3-270m" and spec.models[0].device == "auto"
    assert spec.data.languages == list(LANGUAGES) and spec.data.test_fraction == 0.2 and spec.data.seed == 1
    assert spec.extract.method == "cluster_mean" and spec.extract.layers == "all" and spec.extract.token == -1
    assert spec.experiment == "tiny"
    assert parse_spec("{}").data.concepts == list(CONCEPTS)  # explicit: every default


def test_expansion_is_models_x_concepts_x_languages_in_order():
    spec = parse_spec("model: [a/b, c/d]\ndata: {concepts: [fairness, toxicity], languages: [ja, sw, en]}")
    items = expand(spec)
    assert len(items) == 2 * 2 * 3
    assert [i.label for i in items[:4]] == ["b / fairness / ja", "b / fairness / sw", "b / fairness / en",
                                            "b / toxicity / ja"]


@pytest.mark.parametrize(("text", "pattern"), [
    ("name: x\ndata:\n  languges: [en]\n", r"spec.yaml:3: data.languges: unknown field \(did you mean 'languages'\?\)"),
    ("data:\n  languages: [en, fz]\n", r"spec.yaml:2: data.languages\[1\]|spec.yaml:2: data.languages: unknown language 'fz'"),
    ("data:\n  languages: [en, fr, en]\n", r"language en listed twice"),
    ("data:\n  concepts: [moral]\n", r"unknown concept 'moral' \(did you mean 'morality'\?\)"),
    ("data:\n  concepts: []\n", r"data.concepts: List should have at least 1 item"),
    ("data:\n  test_fraction: 1.5\n", r"spec.yaml:2: data.test_fraction: Input should be less than 1"),
    ("extract:\n  batch_size: many\n", r"extract.batch_size: Input should be a valid integer"),
    ("extract:\n  method: mean\n", r"unknown direction method 'mean'.*valid: cluster_mean, pca"),
    ("extract:\n  layers: [3, 3]\n", r"layers lists a layer twice"),
    ("model:\n  name: x\n  device: gpu\n", r"spec.yaml:3: model.device: unknown device 'gpu'"),
    ("model: {name: x, prompt: 'Q: '}\n", r"template containing \{input\}"),
    ("resources: {gpus_per_worker: -1}\n", r"gpus_per_worker must be >= 0"),
    ("analyses: [telepathy]\n", r"spec.yaml:1: analyses\[0\]"),
    ("name: x\n  bad: [\n", r"spec.yaml:2:\d+: invalid YAML"),
    ("- just\n- a list\n", r"a spec must be a mapping"),
])
def test_bad_specs_are_refused_with_location_and_hint(tmp_path, text, pattern):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=pattern):
        load_spec(path)


def test_missing_spec_file_says_so(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_fingerprint_ignores_spelling_of_defaults():
    assert parse_spec("name: a").fingerprint() == parse_spec("name: a\ndata: {seed: 1}").fingerprint()
    assert parse_spec("name: a").fingerprint() != parse_spec("name: a\ndata: {seed: 2}").fingerprint()


def test_json_schema_describes_every_top_level_field():
    schema = json_schema()
    assert set(schema["properties"]) == set(Spec.model_fields)
    json.dumps(schema)  # serialisable for editors


def test_shipped_schema_file_is_current():
    from pathlib import Path

    shipped = json.loads((Path(__file__).parents[1] / "docs" / "spec.schema.json").read_text())
    assert shipped == json_schema(), "run: mvp schema -o docs/spec.schema.json"


def test_shipped_specs_are_valid():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml")):
        assert expand(load_spec(path)), path


def test_shipped_spec_reference_is_current():
    from pathlib import Path

    from mvplatform.specdoc import spec_reference

    shipped = (Path(__file__).parents[1] / "docs" / "spec.md").read_text()
    assert shipped == spec_reference(), "run: mvp schema --markdown -o docs/spec.md"
    for field in ("data.languages", "extract.method", "resources.gpus_per_worker", "tracking.uri"):
        assert f"| `{field}` |" in shipped


def _documented_specs() -> list[tuple[str, object]]:
    """Every shipped spec and every YAML example in the README and docs, parsed."""
    import re

    import yaml

    root = Path(__file__).parents[1]
    found = [(str(p.relative_to(root)), yaml.safe_load(p.read_text())) for p in sorted((root / "experiments").glob("*.yaml"))]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)):
            found.append((f"{doc.name} yaml block {i + 1}", yaml.safe_load(block)))
    return found


@pytest.mark.parametrize(("where", "document"), _documented_specs(), ids=[w for w, _ in _documented_specs()])
def test_every_shipped_and_documented_spec_passes_the_json_schema(where, document):
    """Editors check specs with docs/spec.schema.json: shorthands (model: NAME, judge: NAME) must pass."""
    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs" / "spec.schema.json").read_text())
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(document)]
    assert not errors, f"{where}: {errors[:3]}"
    parse_spec(json.dumps(document))  # and the spec itself accepts it


def test_the_json_schema_names_concepts_and_languages():
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    assert not list(validator.iter_errors({"model": "gemma3-270m", "data": {"concepts": ["fairness"]}}))
    wrong = [e.message for e in validator.iter_errors({"data": {"languages": ["en", "fz"], "concepts": ["moral"]}})]
    assert any("'fz' is not one of" in m for m in wrong) and any("'moral' is not one of" in m for m in wrong)
