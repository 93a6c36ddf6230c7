"""Fuzzing the spec validator: whatever the input, it returns a Spec or raises SpecError, never crashes."""

from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvplatform.errors import SpecError
from mvplatform.spec import Spec, parse_spec

SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))]
FIELD_NAMES = ["name", "model", "data", "extract", "analyses", "analysis", "resources", "results", "tracking",
               "languages", "concepts", "layers", "seed", "test_fraction", "method", "device", "prompt"]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=20), st.sampled_from(["en", "fr", "morality", "all", "auto", "pca", "{input}"]))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8)),
                                                 inner, max_size=4)), max_leaves=20)


def check(text: str) -> None:
    try:
        assert isinstance(parse_spec(text, "fuzz.yaml"), Spec)
    except SpecError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_random_yaml_documents(document):
    check(yaml.safe_dump(document))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text(text):
    check(text)


def _mutate(tree, path, value, action):
    if not path or not isinstance(tree, dict) or not tree:
        return value if action == "replace" else tree
    key = sorted(tree, key=str)[path[0] % len(tree)]
    tree = dict(tree)
    if len(path) == 1 and action == "delete":
        del tree[key]
    elif len(path) == 1 and action == "rename":
        tree[f"{key}x"] = tree.pop(key)
    else:
        tree[key] = _mutate(tree[key], path[1:], value, action)
    return tree


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SHIPPED))), st.lists(st.integers(0, 50), min_size=1, max_size=3), documents,
       st.sampled_from(["replace", "delete", "rename"]))
def test_mutated_shipped_specs(index, path, value, action):
    check(yaml.safe_dump(_mutate(SHIPPED[index], path, value, action)))
