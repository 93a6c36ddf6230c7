"""Registries are the single source of names: one decorated function makes a name valid everywhere.

A new operator, judge and sampler are registered here, in the test module, and nowhere else; the
spec then accepts them, ``mvp list`` lists them with their help and the JSON Schema offers them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from mvplatform.cli import main
from mvplatform.registry import ANALYSES, CONTROL_MODES, DIRECTION_METHODS, JUDGES, OPERATORS, SAMPLERS, Registry
from mvplatform.spec import ControlSpec, Spec, json_schema


@pytest.fixture
def plugins() -> Iterator[None]:
    """Register an operator, a judge and a sampler for one test, and remove them after."""

    @OPERATORS.register("test_double", help="h + 2 c v (a test operator)")
    def double(hidden, vector, coefficient):
        return hidden + 2 * coefficient * vector

    @JUDGES.register("test-always-follows", help="every response followed (a test judge)")
    def always(spec, load):
        raise NotImplementedError

    @SAMPLERS.register("test-sampler", help="a test sampler")
    def sampler(seed, space):
        raise NotImplementedError

    try:
        yield
    finally:
        OPERATORS.unregister("test_double")
        JUDGES.unregister("test-always-follows")
        SAMPLERS.unregister("test-sampler")


def test_a_registered_operator_judge_and_sampler_are_accepted_by_the_spec(plugins: None) -> None:
    control = ControlSpec.model_validate({"operator": "test_double", "judge": "test-always-follows",
                                          "search": {"sampler": "test-sampler"}})
    assert (control.operator, control.judge.name, control.search.sampler) == (
        "test_double", "test-always-follows", "test-sampler")
    assert OPERATORS.get("test_double")(1.0, 3.0, 0.5) == 4.0  # 1 + 2 * 0.5 * 3


def test_a_name_is_refused_once_unregistered() -> None:
    OPERATORS.register("test_gone", help="a test operator")(lambda hidden, vector, coefficient: hidden)
    try:
        assert ControlSpec(operator="test_gone").operator == "test_gone"
    finally:
        OPERATORS.unregister("test_gone")
    with pytest.raises(ValidationError, match="unknown steering operator 'test_gone'"):
        ControlSpec(operator="test_gone")


def test_registered_names_are_listed_with_their_help(plugins: None, capsys: pytest.CaptureFixture[str]) -> None:
    for what, name, help_words in (("operators", "test_double", "a test operator"),
                                   ("judges", "test-always-follows", "a test judge"),
                                   ("samplers", "test-sampler", "a test sampler")):
        assert main(["list", what]) == 0
        out = capsys.readouterr().out
        assert name in out and help_words in out, out


def test_registered_names_are_in_the_schema_enums(plugins: None) -> None:
    defs = json_schema()["$defs"]
    assert defs["ControlSpec"]["properties"]["operator"]["enum"] == ["linear_comb", "piecewise_linear", "test_double"]
    judge = next(option for option in defs["JudgeSpec"]["anyOf"] if "properties" in option)
    assert "test-always-follows" in judge["properties"]["name"]["enum"]
    assert defs["SearchSpec"]["properties"]["sampler"]["enum"][-1] == "test-sampler"
    assert "test_double" not in str(Spec.model_json_schema()["$defs"]["ExtractSpec"])


def test_list_fields_check_each_name_where_it_stands() -> None:
    with pytest.raises(ValidationError) as caught:
        ControlSpec(modes=["none", "ls"])
    error = caught.value.errors()[0]
    assert error["loc"] == ("modes", 1)
    assert "unknown control mode 'ls'" in error["msg"]
    with pytest.raises(ValidationError, match="control mode none listed twice"):
        ControlSpec(modes=["none", "none"])
    schema = json_schema()["$defs"]["ControlSpec"]["properties"]["modes"]
    assert schema["items"]["enum"] == ["none", "language_specific", "english_source"]


def test_every_registry_has_one_line_help_for_each_name() -> None:
    expected = {DIRECTION_METHODS: ["cluster_mean", "pca"], OPERATORS: ["linear_comb", "piecewise_linear"],
                JUDGES: ["refusal-keywords", "model"], SAMPLERS: ["tpe", "grid", "random", "qmc", "gp", "nsga2"],
                CONTROL_MODES: ["none", "language_specific", "english_source"],
                ANALYSES: ["recognition", "consistency", "transferability", "linguistic"]}
    for registry, names in expected.items():
        choices = registry.choices()
        assert list(choices) == names  # registration order: defaults and listings keep it
        assert all(text and "\n" not in text for text in choices.values())


def test_a_declared_target_is_imported_on_first_use() -> None:
    from mvplatform.crosslingual import consistency

    assert ANALYSES.entry("consistency").target == "mvplatform.crosslingual:consistency"
    assert ANALYSES.get("consistency") is consistency


def test_registry_refuses_twice_registered_names_and_multi_line_help() -> None:
    registry: Registry = Registry("widget")
    registry.register("a", help="one")(len)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.register("a", help="again")(len)
    with pytest.raises(ValueError, match="one non-empty line"):
        registry.register("b", help="two\nlines")
    with pytest.raises(KeyError, match="unknown widget 'c'; choose one of \\['a'\\]"):
        registry.get("c")


def test_importing_and_validating_the_spec_loads_neither_torch_nor_optuna() -> None:
    code = ("import sys; from mvplatform.spec import parse_spec; "
            "parse_spec('control: {operator: piecewise_linear, judge: refusal-keywords, search: {sampler: grid}}'); "
            "print(sorted(m for m in ('torch', 'optuna', 'scipy', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
