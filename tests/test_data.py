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


def test_a_file_whose_only_leaf_lacks_neg_has_no_usable_pairs(tmp_path):
    write_mvalue(tmp_path, "morality", "en", {"care": {"007": {"pos": "I helped."}}})
    with pytest.raises(DataError, match=r"morality_en.json: no usable contrast pairs \(every pair is missing a side"):
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


# ---------------------------------------------------------------------------------------------
# Surface cues (mvplatform.datacheck.measure_cues): shares computed by hand on tiny data sets

CUE_SIDES = [
    ("I returned the wallet.", "I kept the wallet and the cash."),  # 4 / 7 words: neg longer
    ("I paid for the bread.", "I did not pay for the bread."),  # 5 / 7: neg longer; "not" on neg
    ("Honestly, I told her.", "I lied to her."),  # 4 / 4: tied; first words "honestly" / "i"
    ("I never lie to friends.", "I lie to friends."),  # 5 / 4: neg shorter; "never" on pos
    ("I waited my turn!", "I pushed to the front."),  # 4 / 5: neg longer; closing "!" / "."
    ("Gladly, I shared it.", "I hid it."),  # 4 / 3: neg shorter; first words "gladly" / "i"
    ("I told the truth.", "I didn't tell the truth."),  # 4 / 5: neg longer; "didn't" on neg
]


def test_cues_on_a_hand_made_set_match_hand_counts():
    from mvplatform.datacheck import measure_cues

    cues = measure_cues(CUE_SIDES, "en", min_pairs=1)
    length = cues["length"]  # 6 untied pairs, neg longer in 4 (pairs 1, 2, 5, 7)
    assert (length.share, length.accuracy, length.covered, length.total) == (4 / 6, 4 / 6, 6, 7)
    negation = cues["negation"]  # differs in pairs 2, 4, 7; on the neg side in 2 of them
    assert (negation.accuracy, negation.covered, negation.feature) == (2 / 3, 3, "a negation word marks the neg side")
    assert negation.coverage == 3 / 7
    punctuation = cues["punctuation"]  # only pair 5 differs: "!" closes pos, "." closes neg
    assert (punctuation.accuracy, punctuation.covered) == (1.0, 1)
    opening = cues["opening"]  # "i" opens the neg side in the two pairs (3, 6) whose openings differ
    assert (opening.accuracy, opening.covered, opening.feature) == (1.0, 2, "first word 'i' marks the neg side")


def test_cue_limits_fail_only_judged_cues_beyond_the_thresholds():
    from mvplatform.datacheck import CueLimits, FileReport, measure_cues

    report = FileReport("morality", "en", pairs=7, cues=measure_cues(CUE_SIDES, "en", min_pairs=1))
    failed = report.cue_problems(CueLimits(0.60, 0.60, min_cue_pairs=2))  # punctuation: 1 pair, not judged
    assert [f.split(" cue")[0] for f in failed] == ["length", "negation", "opening"]
    assert "0.67 of 6 untied pairs (allowed 0.40-0.60)" in failed[0]
    assert [f.split(" cue")[0] for f in report.cue_problems(CueLimits(0.60, 0.60, min_cue_pairs=4))] == ["length"]
    assert report.cue_problems(CueLimits(0.70, 1.0, min_cue_pairs=1)) == []
    assert len(report.cue_problems(CueLimits(0.70, 0.99, min_cue_pairs=1))) == 2  # opening and punctuation: 1.0


def test_cues_read_the_sides_not_the_shared_scenario_and_count_characters_in_chinese(tmp_path):
    from mvplatform.datacheck import check_concept

    write_mvalue(tmp_path, "deontology", "en", {"work": {
        "001": {"scenario": "Can you cover my shift?", "pos": "No, I am sick.", "neg": "Yes, gladly."},
        "002": {"scenario": "Can you cover my shift?", "pos": "Sure.", "neg": "No, I want to sleep."},
        "003": {"scenario": "Will you feed the cat?", "pos": "Yes, at eight.", "neg": "No."}}})
    write_mvalue(tmp_path, "deontology", "zh", {"work": {
        "001": {"scenario": "你能替我的班吗？", "pos": "不行，我病了。", "neg": "好的。"},
        "002": {"scenario": "你能替我的班吗？", "pos": "行。", "neg": "不行，我想睡觉。"},
        "003": {"scenario": "你会喂猫吗？", "pos": "会，八点喂。", "neg": "不会。"}}})
    en, zh = check_concept(tmp_path, "deontology", ["en", "zh"], min_pairs=0, min_cue_pairs=2)  # "sure": 1 pair
    assert en.cues["length"].share == 1 / 3  # words: 4/2, 1/5, 3/1 -> neg longer once
    assert en.cues["opening"].feature == "first word 'no' marks the neg side"  # 'no': pos in 1, neg in 2 -> 2/3
    assert en.cues["opening"].accuracy == 2 / 3 and en.cues["opening"].covered == 3
    assert en.cues["punctuation"].covered == 0  # every side closes with "."; the scenarios' "?" do not count
    assert zh.cues["length"].share == 1 / 3  # characters: 7/3, 2/8, 6/3
    negation = zh.cues["negation"]  # 不 on pos in 001, on neg in 002 and 003
    assert (negation.accuracy, negation.covered) == (2 / 3, 3)
    assert zh.neg_longer == 1 / 3


@pytest.mark.parametrize(("language", "negated"), [
    ("fi", "Lähdin maksamatta."), ("fi", "Sanoin, etteivät he tule."), ("sw", "Siwezi, gari liko gereji."),
    ("sw", "Alimsingizia mfanyakazi asiye na hatia."), ("ja", "無理なんだ、車が修理中だから。"), ("ko", "나는 그 사실을 몰랐다."),
    ("ta", "அவர் தெரியாமலேயே சென்றார்."), ("ta", "எதுவும் செய்யாத பெண்."), ("te", "మంచి కార్యక్రమం లేనప్పుడు."),
])
def test_negation_markers_catch_affixes(language, negated):
    from mvplatform.datacheck import has_negation

    assert has_negation(negated, language)


@pytest.mark.parametrize(("language", "negated", "plain"), [
    ("en", "I didn't tell her.", "I told her."),
    ("fr", "Je n'ai rien dit.", "J'ai tout dit."),
    ("es", "No le dije nada.", "Le dije todo."),
    ("pt", "Eu não contei a ela.", "Eu contei a ela."),
    ("ca", "No li vaig dir res.", "Li ho vaig dir tot."),
    ("vi", "Tôi không nói với cô ấy.", "Tôi đã nói với cô ấy."),
    ("id", "Saya tidak memberitahunya.", "Saya memberitahunya."),
    ("fi", "En kertonut hänelle.", "Kerroin hänelle."),
    ("hu", "Nem mondtam el neki.", "Elmondtam neki."),
    ("sw", "Sikumwambia.", "Nilimwambia usiku."),
    ("ny", "Sindinamuuze.", "Ndinamuuza."),
    ("zh", "我没有告诉她。", "我告诉了别人。"),
    ("ja", "彼女に言わなかった。", "彼女に言った。"),
    ("ko", "나는 그녀에게 말하지 않았다.", "나는 잘못을 말했다."),
    ("ta", "நான் அவளிடம் சொல்லவில்லை.", "நான் அவளிடம் சொன்னேன்."),
    ("te", "నేను ఆమెకు చెప్పలేదు.", "నేను ఆమెకు చెప్పాను."),
])
def test_negation_markers_per_language(language, negated, plain):
    from mvplatform.datacheck import has_negation

    assert has_negation(negated, language) and not has_negation(plain, language)


def test_final_mark_and_opening_ignore_wrapping_punctuation():
    from mvplatform.datacheck import final_mark, opening

    assert (final_mark("¿Por qué no?"), opening("¿Por qué no?", "es")) == ("?", "por")
    assert (final_mark("私は行かない。"), opening("私は行かない。", "ja")) == (".", "私")
    assert (final_mark('He said "stop!"'), opening('"Well, fine."', "en")) == ("!", "well")
    assert final_mark("No mark") == "none"


def test_data_check_cli_reports_cues_and_takes_thresholds(tmp_path, capsys):
    from mvplatform.cli import main

    write_mvalue(tmp_path, "morality", "en", {"g": {f"{i:03}": {"pos": s[0], "neg": s[1]}
                                                    for i, s in enumerate(CUE_SIDES)}})
    assert main(["data", "check", str(tmp_path), "--min-cue-pairs", "2"]) == 1
    out = capsys.readouterr().out
    assert "morality_en: length cue: neg side longer in 0.67 of 6 untied pairs" in out
    assert "3 cue failure(s)" in out
    main(["data", "check", str(tmp_path), "--min-cue-pairs", "1", "--max-length-share", "0.7",
          "--max-cue-accuracy", "1.0"])
    assert "0 cue failure(s)" in capsys.readouterr().out


def test_cue_table_lists_the_worst_language_and_every_break(tmp_path):
    from mvplatform.datacheck import CueLimits, check_concept, cue_table

    write_mvalue(tmp_path, "morality", "en", {"g": {f"{i:03}": {"pos": p, "neg": n}
                                                    for i, (p, n) in enumerate(CUE_SIDES)}})
    write_mvalue(tmp_path, "morality", "fr", {"g": {"000": {"pos": "J'ai aidé.", "neg": "Je n'ai pas aidé du tout."},
                                                    "001": {"pos": "J'ai payé le pain.", "neg": "J'ai volé."}}})
    reports = {"morality": {r.language: r for r in check_concept(tmp_path, "morality", ["en", "fr"], min_pairs=0,
                                                                 min_cue_pairs=2)}}
    table = cue_table(reports, CueLimits(0.60, 0.60, min_cue_pairs=2)).splitlines()
    # en: 4 of 6 untied pairs neg longer; fr: 1 of 2 -> mean 0.58, range 0.50-0.67. Negation: en 2/3 on 3
    # pairs, fr 1.0 on 1 pair (not judged). Opening: en "i" 1.0 on 2 pairs; fr has no differing opening.
    assert table[2] == ("| morality | 0.58 (0.50-0.67) | 0.67 en (n 3) | – | 1.00 en (n 2) | "
                        "en length 0.67 (n 6), en negation 0.67 (n 3), en opening 1.00 (n 2) |")


def test_backtranslation_summary_counts_passes_and_whether_fixes_landed(tmp_path):
    from mvplatform.datacheck import backtranslation_summary, backtranslation_table
    from mvplatform.errors import DataError

    values, folder = tmp_path / "values", tmp_path / "backtranslation"
    write_mvalue(values, "morality", "sw", {"care": {"001": {"pos": "Nilimsaidia.", "neg": "Nilimpiga."},
                                                     "002": {"pos": "Nililipa.", "neg": "Niliiba."},
                                                     "005": {"pos": "Nililipa deni.", "neg": "Niliiba tena."}}})
    folder.mkdir()
    (folder / "sw.json").write_text(json.dumps({"morality": {
        "001": {"pos": "I helped him.", "neg": "I hit him.", "verdict": "pass"},
        "002": {"pos": "I paid.", "neg": "I stole.", "verdict": "fail", "problem": "meaning: x",
                "fix_pos": "Nililipa."},
        "003": {"pos": "a", "neg": "b", "verdict": "fail", "problem": "swapped: y", "fix_neg": "Sikulipa."},
        "004": {"pos": "blind, not yet compared", "neg": "c"},
        "005": {"pos": "I paid a debt.", "neg": "I stole again.", "verdict": "pass", "problem": "contrast: z",
                "fix_neg": "Niliiba tena."}}}))
    [result] = backtranslation_summary(folder, values, ["en", "sw"])  # en has no file: skipped
    # 001 passes; 002 and 003 fail (002's fix is in the pair file, 003's is not); 004 has no verdict yet;
    # 005 failed at first check, its fix landed, and it passes now.
    assert (result.language, result.checked, result.passed, result.pending) == ("sw", 4, 2, 1)
    assert (result.passed_first, result.share, result.share_now) == (1, 1 / 4, 2 / 4)
    assert result.failures == ("morality/002 (meaning, fix applied)", "morality/003 (swapped, fix not applied)",
                               "morality/005 (contrast, fix applied)")
    assert backtranslation_table([result]).splitlines()[2] == (
        "| sw | 4 | 1 | 0.250 | 0.046-0.699 | 2 | morality/002 (meaning, fix applied); "
        "morality/003 (swapped, fix not applied); morality/005 (contrast, fix applied) | 1 | none |")
    (folder / "sw.json").write_text(json.dumps({"morality": {"001": {"verdict": "maybe"}}}))
    with pytest.raises(DataError, match=r"sw\.json: morality/001: field 'verdict' must be 'pass' or 'fail'"):
        backtranslation_summary(folder, values, ["sw"])


def test_data_check_min_pairs_option_sets_the_floor(tmp_path, capsys):
    from mvplatform.cli import main

    write_mvalue(tmp_path, "morality", "en", {"g": {f"{i:03}": {"pos": p, "neg": n}
                                                    for i, (p, n) in enumerate(CUE_SIDES)}})
    main(["data", "check", str(tmp_path)])
    assert "morality_en: 7 pairs, fewer than 128" in capsys.readouterr().out
    main(["data", "check", str(tmp_path), "--min-pairs", "7"])
    assert "morality_en: 7 pairs, fewer than" not in capsys.readouterr().out
