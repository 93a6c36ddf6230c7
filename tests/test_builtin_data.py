"""The built-in data set keeps the data card's promises (issue: built-in multilingual value data)."""

import json

import pytest

from mvplatform.catalog import CONCEPTS, LANGUAGES
from mvplatform.data import builtin_root, load_split
from mvplatform.datacheck import (
    MIN_PAIRS,
    CueLimits,
    check_concept,
    check_instructions,
    data_card_counts,
    replace_block,
    script_problem,
)

VALUES = builtin_root() / "values"


@pytest.mark.parametrize("concept", CONCEPTS)
def test_every_language_file_of_a_concept_passes_the_checks(concept):
    reports = check_concept(VALUES, concept)
    assert [r.language for r in reports] == list(LANGUAGES)
    problems = [f"{r.language}: {p}" for r in reports for p in r.problems]
    assert not problems, "\n".join(problems[:20])
    assert all(r.pairs >= MIN_PAIRS for r in reports)


@pytest.mark.parametrize("concept", CONCEPTS)
def test_no_cheap_surface_cue_separates_the_sides(concept):
    # Data version 2 (issue 21): length share in [0.40, 0.60], every other cue <= 0.60, in every file.
    reports = check_concept(VALUES, concept)
    assert all(r.pairs >= MIN_PAIRS == 128 for r in reports)
    failures = [f"{r.language}: {f}" for r in reports for f in r.cue_problems(CueLimits())]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("concept", ["deontology", "truthfulness"])
def test_structured_concepts_carry_their_extra_field(concept):
    field = {"deontology": "scenario", "truthfulness": "question"}[concept]
    for language in LANGUAGES:
        tree = json.loads((VALUES / concept / f"{concept}_{language}.json").read_text(encoding="utf-8"))
        leaves = [leaf for group in tree.values() for leaf in group.values()]
        assert all(leaf.get(field, "").strip() for leaf in leaves), language


def test_a_default_split_has_at_least_12_test_pairs_everywhere():
    for concept in CONCEPTS:
        for language in LANGUAGES:
            assert len(load_split("builtin:values", concept, language).test) >= 12


def test_control_instructions_are_parallel_and_large_enough():
    problems = check_instructions(builtin_root() / "instructions")
    assert not {lang: p for lang, p in problems.items() if p}


def test_every_language_has_a_refusal_lexicon():
    lexicon = json.loads((builtin_root() / "lexicons" / "refusal.json").read_text(encoding="utf-8"))
    assert set(lexicon) == set(LANGUAGES)
    for language, phrases in lexicon.items():
        assert len(phrases) >= 10, language
        assert all(p == p.lower() and len(p) >= 3 for p in phrases), language


def test_data_card_counts_are_current():
    card = (builtin_root() / "DATA.md").read_text(encoding="utf-8")
    assert replace_block(card, data_card_counts(VALUES)) == card, "run: mvp data card --write mvplatform/builtin/DATA.md"


@pytest.mark.parametrize(("text", "language", "problem"), [
    ("I helped my neighbour.", "en", None),
    ("Tôi đã giúp hàng xóm.", "vi", None),
    ("我帮助了邻居。", "zh", None),
    ("私は隣人を助けました。", "ja", None),
    ("隣人助力", "ja", "without kana"),
    ("나는 이웃을 도왔다.", "ko", None),
    ("I helped my neighbour.", "ta", "Tamil script"),
    ("நான் என் அண்டை வீட்டாருக்கு உதவினேன்.", "ta", None),
    ("నేను నా పొరుగువారికి సహాయం చేశాను.", "te", None),
    ("J'ai aidé 我的 voisin.", "fr", "non-Latin"),
    ("123 !!", "sw", "no letters"),
])
def test_script_check(text, language, problem):
    found = script_problem(text, language)
    assert (found is None) if problem is None else (problem in found)


def test_instruction_split_is_seeded_parallel_and_disjoint():
    from mvplatform.data import load_instructions

    en, fr = load_instructions("en"), load_instructions("fr")
    assert set(en.search["harmful"]) == set(fr.search["harmful"]) == set(en.search["harmless"])
    assert not set(en.search["harmful"]) & set(en.test["harmful"])
    assert len(en.search["harmful"]) == len(en.test["harmful"]) == 75  # 150 ids, floor(0.5 * 150) to the search
    assert load_instructions("en", seed=2).search != en.search
