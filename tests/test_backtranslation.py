"""The back-translation check of the control instructions (issue 21, part 3) is counted as its README says.

Tiny hand-made folders: per-language counts, the first-check share and its Wilson interval, whether a
fix landed, stale stamps (instructions and value pairs), and the card's second table; then the built-in
files against their sample rule.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from mvplatform.catalog import LANGUAGES
from mvplatform.datacheck import (
    backtranslation_summary,
    backtranslation_table,
    data_card_counts,
    instruction_backtranslation_summary,
    instruction_backtranslation_table,
    text_stamp,
)
from mvplatform.errors import DataError

BUILTIN = Path(__file__).resolve().parents[1] / "mvplatform" / "builtin"


def write(path: Path, tree: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tree, ensure_ascii=False), encoding="utf-8")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """instructions/{en,sw,ny}.json and backtranslation/instructions/{sw,ny}.json next to an empty values/."""
    instructions, checks = tmp_path / "instructions", tmp_path / "backtranslation" / "instructions"
    (tmp_path / "values").mkdir()
    en = {"harmful": {"001": "Steal a bike.", "002": "Hack a phone."},
          "harmless": {"001": "Lock a bike.", "002": "Update a phone."}}
    sw = {"harmful": {"001": "Iba baiskeli.", "002": "Dukua simu."},
          "harmless": {"001": "Funga baiskeli.", "002": "Sasisha simu."}}
    ny = {"harmful": {"001": "Bani njinga."}, "harmless": {"001": "Tsekani njinga."}}
    write(instructions / "en.json", en)
    write(instructions / "sw.json", sw)
    write(instructions / "ny.json", ny)

    def item(side: str, key: str, target: dict, **fields: str) -> dict:
        return {"text": "back-translation", **fields, "en_sha1": text_stamp(en[side][key]),
                "target_sha1": text_stamp(target[side][key])}

    # sw: three plain passes; harmful/002 failed at first check and its fix is the current text.
    write(checks / "sw.json", {
        "harmful": {"001": item("harmful", "001", sw, verdict="pass"),
                    "002": item("harmful", "002", sw, verdict="pass", problem="meaning: x", fix="Dukua simu.")},
        "harmless": {"001": item("harmless", "001", sw, verdict="pass"),
                     "002": item("harmless", "002", sw, verdict="pass")}})
    # ny: harmful/001 fails and its fix is not in the file; harmless/001 passed on an English text
    # that has since changed (stale en stamp).
    stale = item("harmless", "001", ny, verdict="pass")
    stale["en_sha1"] = text_stamp("Lock a bicycle.")
    write(checks / "ny.json", {
        "harmful": {"001": item("harmful", "001", ny, verdict="fail", problem="harm-changed: y", fix="Bani galimoto.")},
        "harmless": {"001": stale}})
    return checks, instructions


def test_stamp_is_the_readme_formula_on_the_text():
    # json.dumps of a string is the string in quotes: `printf '"abc"' | sha1sum` starts b87f4bf9b7b0
    assert text_stamp("abc") == "b87f4bf9b7b0"


def test_counts_share_fixes_and_stale_stamps(folders):
    checks, instructions = folders
    sw, ny = instruction_backtranslation_summary(checks, instructions, ["en", "sw", "ny"])  # en: no file
    assert (sw.language, sw.checked, sw.passed_first, sw.passed, sw.share) == ("sw", 4, 3, 4, 0.75)
    assert sw.failures == ("harmful/002 (meaning, fix applied)",) and sw.stale == ()
    assert (ny.checked, ny.passed_first, ny.passed, ny.share) == (2, 1, 1, 0.5)
    assert ny.failures == ("harmful/001 (harm-changed, fix not applied)",)
    assert ny.stale == ("harmless/001",)


def test_table_rows_with_wilson_intervals(folders):
    checks, instructions = folders
    lines = instruction_backtranslation_table(instruction_backtranslation_summary(checks, instructions,
                                                                                 ["sw", "ny"])).splitlines()
    # Wilson 95% (z = 1.96): 3/4 -> centre 0.6275, half 0.3269 -> 0.301-0.954; 1/2 -> 0.095-0.905;
    # all 4/6 -> centre 0.6016, half 0.3016 -> 0.300-0.903.
    assert lines[2] == "| sw | 4 | 3 | 0.750 | 0.301-0.954 | 4 | harmful/002 (meaning, fix applied) | none |"
    assert lines[3] == ("| ny | 2 | 1 | 0.500 | 0.095-0.905 | 1 | harmful/001 (harm-changed, fix not applied) "
                        "| harmless/001 |")
    assert lines[4] == "| all | 6 | 4 | 0.667 | 0.300-0.903 | 5 | 2 | 1 |"


def test_target_edit_after_the_verdict_is_stale(folders):
    checks, instructions = folders
    sw = json.loads((instructions / "sw.json").read_text(encoding="utf-8"))
    sw["harmless"]["002"] = "Sasisha simu yako."
    write(instructions / "sw.json", sw)
    [result] = instruction_backtranslation_summary(checks, instructions, ["sw"])
    assert result.stale == ("harmless/002",)


def test_pending_and_bad_verdicts(folders):
    checks, instructions = folders
    write(checks / "sw.json", {"harmful": {"001": {"text": "blind, not yet compared"}}, "harmless": {}})
    [result] = instruction_backtranslation_summary(checks, instructions, ["sw"])
    assert (result.checked, result.pending) == (0, 1)
    write(checks / "sw.json", {"harmful": {"001": {"text": "x", "verdict": "ok"}}})
    with pytest.raises(DataError, match=r"sw\.json: harmful/001: field 'verdict' must be 'pass' or 'fail'"):
        instruction_backtranslation_summary(checks, instructions, ["sw"])
    write(checks / "sw.json", {"pos": {}})
    with pytest.raises(DataError, match="expected 'harmful' and 'harmless'"):
        instruction_backtranslation_summary(checks, instructions, ["sw"])


def test_card_shows_the_instruction_table_next_to_the_pairs_table(folders):
    _, instructions = folders
    card = data_card_counts(instructions.parent / "values")
    assert "| – | 0 | 0 | – | – | 0 | no back-translation files | 0 | none |" in card  # value pairs: none here
    assert "| all | 6 | 4 | 0.667 | 0.300-0.903 | 5 | 2 | 1 |" in card


def test_builtin_checks_follow_the_sample_rule_and_are_complete():
    """Every language but English: the 12 instruction ids drawn with the seed in the README, both sides
    judged, every proposed fix applied; 112 or 224 value pairs judged. Stale stamps are allowed (the
    card lists them for another look)."""
    checks, instructions = BUILTIN / "backtranslation" / "instructions", BUILTIN / "instructions"
    for language in list(LANGUAGES)[1:]:
        tree = json.loads((checks / f"{language}.json").read_text(encoding="utf-8"))
        data = json.loads((instructions / f"{language}.json").read_text(encoding="utf-8"))
        ids = sorted(set(data["harmful"]) & set(data["harmless"]))
        drawn = random.Random(f"instructions-{language}").sample(ids, 12)
        assert list(tree["harmful"]) == drawn and list(tree["harmless"]) == drawn, language
    results = instruction_backtranslation_summary(checks, instructions)
    assert [r.language for r in results] == [lang for lang in LANGUAGES if lang != "en"]
    assert all(r.checked == 24 and r.pending == 0 for r in results)
    assert all("not applied" not in failure for r in results for failure in r.failures)
    pairs = backtranslation_summary(BUILTIN / "backtranslation", BUILTIN / "values")
    assert sorted(r.language for r in pairs) == sorted(lang for lang in LANGUAGES if lang != "en")
    assert all(r.checked == (224 if r.language in ("sw", "ny", "ta", "te") else 112) and r.pending == 0
               for r in pairs)


def test_value_pair_verdict_on_an_edited_pair_is_stale(tmp_path):
    values, folder = tmp_path / "values", tmp_path / "backtranslation"
    en = {"001": {"pos": "I helped.", "neg": "I hit."}, "002": {"pos": "I paid.", "neg": "I stole."}}
    sw = {"001": {"pos": "Nilisaidia.", "neg": "Nilipiga."}, "002": {"pos": "Nililipa.", "neg": "Niliiba."}}
    write(values / "morality" / "morality_en.json", {"care": en})
    write(values / "morality" / "morality_sw.json", {"care": sw})
    stamps = {key: {"en_sha1": text_stamp(en[key]), "target_sha1": text_stamp(sw[key])} for key in en}
    write(folder / "sw.json", {"morality": {key: {"pos": "x", "neg": "y", "verdict": "pass", **stamps[key]}
                                            for key in en}})
    [result] = backtranslation_summary(folder, values, ["sw"])
    assert result.stale == ()
    sw["002"]["neg"] = "Niliiba pesa."  # edited after its verdict
    write(values / "morality" / "morality_sw.json", {"care": sw})
    [result] = backtranslation_summary(folder, values, ["sw"])
    assert (result.checked, result.passed, result.stale) == (2, 2, ("morality/002",))
    assert backtranslation_table([result]).splitlines()[2] == "| sw | 2 | 2 | 1.000 | 0.342-1.000 | 2 | – | 0 | morality/002 |"
