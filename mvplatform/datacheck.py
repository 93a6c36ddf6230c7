"""Quality checks and counts for data in the MVALUE layout (the built-in set or a user's).

The checks are the data card's promises made executable: files parse, keys are parallel across
languages, no pair is empty, identical or duplicated, each text is written in its language's
script, and neither side is systematically longer. ``mvp data card`` prints the counts that
``DATA.md`` shows, so they are never typed by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mvplatform.catalog import CONCEPTS, LANGUAGES
from mvplatform.data import pair_file, read_pairs
from mvplatform.errors import DataError

MIN_PAIRS = 60
MIN_INSTRUCTIONS = 100

_SCRIPT_RANGES: dict[str, str] = {
    "Han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff",
    "Kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "Hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "Tamil": "\u0b80-\u0bff",
    "Telugu": "\u0c00-\u0c7f",
}
_SCRIPT = {name: re.compile(f"[{ranges}]") for name, ranges in _SCRIPT_RANGES.items()}
_FOREIGN_TO_LATIN = re.compile("[" + "".join(_SCRIPT_RANGES.values()) + "]")
_LETTER = re.compile(r"[^\W\d_]")


def script_problem(text: str, language: str) -> str | None:
    """Why ``text`` is not plausibly written in ``language``'s script, or None when it is."""
    letters = _LETTER.findall(text)
    if not letters:
        return "no letters"
    script = LANGUAGES[language].script
    if script == "Latin":
        return "non-Latin characters in a Latin-script language" if _FOREIGN_TO_LATIN.search(text) else None
    native = {"Han": ("Han",), "Japanese": ("Han", "Kana"), "Hangul": ("Hangul",), "Tamil": ("Tamil",),
              "Telugu": ("Telugu",)}[script]
    share = sum(any(_SCRIPT[s].match(ch) for s in native) for ch in letters) / len(letters)
    if share < 0.5:
        return f"only {share:.0%} of letters in {script} script"
    if script == "Japanese" and not _SCRIPT["Kana"].search(text):
        return "Japanese text without kana (reads as Chinese)"
    return None


def length(text: str, language: str) -> int:
    """Words, or characters for languages written without spaces."""
    return len(text) if language in ("zh", "ja") else len(text.split())


@dataclass
class FileReport:
    concept: str
    language: str
    pairs: int = 0
    neg_longer: float = 0.5  # among pairs of unequal length, the share whose neg side is longer (0.5 = no cue)
    problems: list[str] = field(default_factory=list)


def check_concept(root: Path, concept: str, languages: Iterable[str] = LANGUAGES,
                  reference: str = "en", min_pairs: int = MIN_PAIRS) -> list[FileReport]:
    """One report per language file of ``concept``; parallel keys are checked against ``reference``."""
    reports, reference_keys, reference_texts = [], None, {}
    for language in [reference, *[lang for lang in languages if lang != reference]]:
        report = FileReport(concept, language)
        reports.append(report)
        try:
            pairs = read_pairs(root, concept, language)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        raw = json.loads(pair_file(root, concept, language).read_text(encoding="utf-8"))
        report.pairs = len(pairs)
        keys = {p.key for p in pairs}
        if language == reference:
            reference_keys, reference_texts = keys, {p.key: p.pos for p in pairs}
        elif reference_keys is not None and keys != reference_keys:
            report.problems.append(f"keys differ from {reference}: missing {sorted(reference_keys - keys)[:5]}, "
                                   f"extra {sorted(keys - reference_keys)[:5]}")
        if len(pairs) < min_pairs:
            report.problems.append(f"{len(pairs)} pairs, fewer than {min_pairs}")
        if sum(_leaf_count(raw)) != len(pairs):
            report.problems.append(f"{sum(_leaf_count(raw)) - len(pairs)} pair(s) with pos == neg")
        texts = [t for p in pairs for t in (p.pos, p.neg)]
        duplicates = {t for t in texts if texts.count(t) > 1}
        if duplicates:
            report.problems.append(f"{len(duplicates)} duplicated text(s), e.g. {sorted(duplicates)[0][:60]!r}")
        for pair in pairs:
            for side in (pair.pos, pair.neg):
                problem = script_problem(side, language)
                if problem:
                    report.problems.append(f"{pair.key}: {problem}: {side[:60]!r}")
        if language != reference and reference_texts:
            untranslated = sum(reference_texts.get(p.key) == p.pos for p in pairs)
            if untranslated > len(pairs) // 10:
                report.problems.append(f"{untranslated} pos texts identical to {reference}: untranslated?")
        differ = [length(p.neg, language) > length(p.pos, language)
                  for p in pairs if length(p.neg, language) != length(p.pos, language)]
        report.neg_longer = sum(differ) / len(differ) if differ else 0.5
    return reports


def _leaf_count(node: object) -> list[int]:
    if isinstance(node, dict) and ("pos" in node or "neg" in node):
        return [1]
    return [n for child in (node.values() if isinstance(node, dict) else []) for n in _leaf_count(child)]


def check_instructions(folder: Path, languages: Iterable[str] = LANGUAGES,
                       minimum: int = MIN_INSTRUCTIONS) -> dict[str, list[str]]:
    """Problems per language in ``{lang}.json`` files of harmful and harmless instructions."""
    out: dict[str, list[str]] = {}
    reference: dict[str, set[str]] = {}
    for language in languages:
        problems = out.setdefault(language, [])
        path = folder / f"{language}.json"
        if not path.is_file():
            problems.append(f"{path} missing")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        for kind in ("harmful", "harmless"):
            items = data.get(kind, {})
            if len(items) < minimum:
                problems.append(f"{kind}: {len(items)} instructions, fewer than {minimum}")
            reference.setdefault(kind, set(items))
            if set(items) != reference[kind]:
                problems.append(f"{kind}: ids differ from the first language's")
            texts = list(items.values())
            if len({t for t in texts}) != len(texts) or any(not str(t).strip() for t in texts):
                problems.append(f"{kind}: empty or duplicated instructions")
            problems += [f"{kind}/{k}: {p}" for k, t in items.items() if (p := script_problem(t, language))]
    return out


def data_card_counts(root: Path, concepts: Iterable[str] = CONCEPTS) -> str:
    """Markdown table: pairs per concept x language, and how often neg is the longer side."""
    languages = list(LANGUAGES)
    lines = ["| concept | " + " | ".join(languages) + " | neg longer |",
             "|---" * (len(languages) + 2) + "|"]
    for concept in concepts:
        reports = {r.language: r for r in check_concept(root, concept, languages, min_pairs=0)}
        counts = [str(reports[lang].pairs) if reports[lang].pairs else "–" for lang in languages]
        shares = [r.neg_longer for r in reports.values() if r.pairs]
        mean = f"{sum(shares) / len(shares):.2f}" if shares else "–"
        lines.append(f"| {concept} | " + " | ".join(counts) + f" | {mean} |")
    return "\n".join(lines)


COUNTS_START, COUNTS_END = "<!-- counts:start (mvp data card --write) -->", "<!-- counts:end -->"


def replace_block(markdown: str, counts: str) -> str:
    """``markdown`` with the text between the counts markers replaced by ``counts``."""
    if COUNTS_START not in markdown or COUNTS_END not in markdown:
        raise DataError(f"the data card has no counts block; add the lines {COUNTS_START} and {COUNTS_END}")
    head, rest = markdown.split(COUNTS_START, 1)
    _, tail = rest.split(COUNTS_END, 1)
    return f"{head}{COUNTS_START}\n{counts}\n{COUNTS_END}{tail}"
