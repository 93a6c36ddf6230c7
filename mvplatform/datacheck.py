"""Quality checks and counts for data in the MVALUE layout (the built-in set or a user's).

The checks are the data card's promises made executable: files parse, keys are parallel across
languages, no pair is empty, identical or duplicated, each text is written in its language's
script, and no cheap surface cue tells the sides apart (:func:`measure_cues`: length, negation
words, punctuation, the opening word). ``mvp data card`` prints the counts that ``DATA.md`` shows,
so they are never typed by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvplatform.catalog import CONCEPTS, LANGUAGES
from mvplatform.data import pair_file, read_json, read_pairs
from mvplatform.errors import DataError
from mvplatform.uncertainty import wilson

MIN_PAIRS = 128  # data version 2; a 20% split then holds 26 test pairs
MIN_INSTRUCTIONS = 150

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


# Negation markers per language (lower-cased text). Spaced languages match whole words or, where
# negation is a verb prefix or suffix (fi, hu, sw, ny, ta, te, ko), word parts; zh and ja match
# characters. The lists aim at the common forms, not completeness: a cue that these miss is missed.
_W = r"(?<!\w)(?:{})(?!\w)"
NEGATION: dict[str, str] = {
    "en": _W.format("not|no|never|nothing|nobody|none|neither|nor|without|cannot|\\w+n['’]t"),
    "fr": "(?<!\\w)n['’]|" + _W.format("ne|pas|jamais|rien|aucun|aucune|sans|ni|non|guère"),
    "es": _W.format("no|nunca|jamás|nada|nadie|ningún|ninguno|ninguna|sin|ni|tampoco"),
    "pt": _W.format("não|nunca|jamais|nada|ninguém|nenhum|nenhuma|sem|nem"),
    "ca": _W.format("no|mai|res|ningú|sense|ni|tampoc|gens"),  # not "cap": "cap de setmana", "cap a"
    "vi": _W.format("không|chẳng|chả|chưa|đừng|chớ"),
    "id": _W.format("tidak|tak|bukan|jangan|belum|tanpa|tiada|enggak|nggak"),
    "fi": _W.format("en|et|ei|emme|ette|eivät|enkä|etkä|eikä|emmekä|ettekä|eivätkä|älä|älkää|ilman|"
                    "ett(?:en|et|ei|emme|ette|eivät)|\\w+m[aä]tt[aä]"),
    "hu": _W.format("nem|ne|sem|soha|nélkül|nincs\\w*|sincs\\w*|semmi\\w*|senki\\w*|sehol|sehova"),
    "sw": _W.format("si|sio|siyo|hapana|bila|wala|pasipo|sina|huna|hana|hatuna|hamna|hawana|hakuna|"
                    "(?!sikukuu|sikuzote)(?:siku|sija|sita|haku|haja|hawa|hatu|hamku|hamja|hamta)\\w{2,}|"
                    "(?:nisi|usi|asi|tusi|msi|wasi)\\w+e|"
                    "(?:si|hu|ha|hatu|ham|hawa)(?:wezi|taki|jui|pendi|oni|sikii|fai)|"
                    "(?:asiye|wasio|isiyo|usio|kisicho|lisilo|zisizo|visivyo)\\w*"),
    "ny": _W.format("si|ayi|osati|palibe|alibe|ndilibe|tilibe|mulibe|kulibe|popanda|"
                    "(?:sindi|sitin|sana|sada|sanga|musa|osa)\\w+"),
    "zh": "不|没|沒|未|无|無|别(?!人)|勿|莫",
    "ja": "ない|なかっ|なく|ません|ませんでし|ず(?:に|、|。)|せず|ぬ|無断|無視|無理|いいえ|だめ|ダメ",
    "ko": "않|(?<!잘)못|없|(?<!\\w)안(?!\\w)|말고|마세요|마라|지 마|아니|모르|몰라|몰랐",
    "ta": "இல்லை|ில்லை|இல்லா|ில்லா|மாட்ட|கூடாது|வேண்டாம்|அல்ல|ாமல|முடியா|ாத(?=\\s)",
    "te": "లేదు|లేక|లేని|లేన|లేను|లేరు|లేము|లేవు|కాదు|వద్దు|వద్దన|కుండా|కూడదు|కుదరదు|ఉండదు",
}
_NEGATION = {language: re.compile(pattern) for language, pattern in NEGATION.items()}


def has_negation(text: str, language: str) -> bool:
    """Whether ``text`` holds one of ``language``'s negation markers (False for a language without a list)."""
    pattern = _NEGATION.get(language)
    return bool(pattern and pattern.search(text.lower()))


_FINAL = {"。": ".", "．": ".", "？": "?", "！": "!", "…": "."}
_OPENING_JUNK = "¿¡\"'«»“”‘’([「『-–— "


def final_mark(text: str) -> str:
    """The closing punctuation mark ('.', '?', '!') or 'none'."""
    last = text.rstrip().rstrip("\"'»”’)」』")[-1:]
    last = _FINAL.get(last, last)
    return last if last in ".?!" else "none"


def opening(text: str, language: str) -> str:
    """The first word, lower-cased (the first character for zh and ja, written without spaces)."""
    text = text.lstrip(_OPENING_JUNK).lower()
    if language in ("zh", "ja"):
        return text[:1]
    word = text.split(maxsplit=1)[0] if text.split() else ""
    return word.rstrip(",.;:!?？！。、\"'»”’")


@dataclass(frozen=True)
class Cue:
    """How well one surface feature alone picks the pos side of a pair.

    ``accuracy`` is that of the best one-feature rule ("the side with the feature is pos", or
    "the side without it") over the ``covered`` pairs whose two sides differ in the feature; 0.5
    means no cue. For length, ``share`` is the share of untied pairs whose neg side is longer.
    """

    name: str
    feature: str
    accuracy: float
    covered: int
    total: int
    share: float | None = None

    @property
    def coverage(self) -> float:
        return self.covered / self.total if self.total else 0.0


@dataclass(frozen=True)
class CueLimits:
    """Thresholds of ``mvp data check``: the length share must lie in [1 - max_length_share,
    max_length_share], every other cue's accuracy at most ``max_cue_accuracy``; a cue is judged only
    when at least ``min_cue_pairs`` pairs differ in it (fewer pairs say nothing either way)."""

    max_length_share: float = 0.60
    max_cue_accuracy: float = 0.60
    min_cue_pairs: int = 10

    def failure(self, cue: Cue) -> str | None:
        """Why ``cue`` breaks these limits, or None."""
        if cue.covered < self.min_cue_pairs:
            return None
        if cue.share is not None:
            low = 1 - self.max_length_share
            if not low <= cue.share <= self.max_length_share:
                return (f"length cue: neg side longer in {cue.share:.2f} of {cue.covered} untied pairs "
                        f"(allowed {low:.2f}-{self.max_length_share:.2f})")
            return None
        if cue.accuracy > self.max_cue_accuracy:
            return (f"{cue.name} cue: {cue.feature} in {cue.accuracy:.2f} of the {cue.covered} pairs that differ in it "
                    f"(coverage {cue.coverage:.2f}; allowed <= {self.max_cue_accuracy:.2f})")
        return None


def _rule(name: str, feature: str, flags: list[tuple[bool, bool]], total: int) -> Cue:
    """Best rule on one binary feature given (pos has it, neg has it) per pair."""
    differ = [pos for pos, neg in flags if pos != neg]
    if not differ:
        return Cue(name, feature, 0.5, 0, total)
    pos_has = sum(differ)
    side = "pos" if 2 * pos_has >= len(differ) else "neg"
    return Cue(name, f"{feature} marks the {side} side", max(pos_has, len(differ) - pos_has) / len(differ),
               len(differ), total)


def _best(cues: list[Cue], min_pairs: int) -> Cue:
    """The strongest cue among those with enough pairs, else the one covering most pairs."""
    judged = [c for c in cues if c.covered >= min_pairs]
    if judged:
        return max(judged, key=lambda c: (c.accuracy, c.covered))
    return max(cues, key=lambda c: (c.covered, c.accuracy))


def measure_cues(sides: list[tuple[str, str]], language: str, min_pairs: int = CueLimits.min_cue_pairs
                 ) -> dict[str, Cue]:
    """Length, negation, punctuation and opening cues over (pos, neg) side texts of one file.

    Sides are the texts that differ (not the shared ``scenario`` or ``question``). For punctuation
    and opening several binary features are tried (each closing mark; '?' or '!' anywhere; each
    first word) and the strongest with at least ``min_pairs`` differing pairs is kept.
    """
    total = len(sides)
    untied = [length(neg, language) > length(pos, language) for pos, neg in sides
              if length(neg, language) != length(pos, language)]
    share = sum(untied) / len(untied) if untied else 0.5
    cues = {"length": Cue("length", "longer side is neg" if share > 0.5 else "shorter side is neg",
                          max(share, 1 - share), len(untied), total, share)}
    cues["negation"] = _rule("negation", "a negation word",
                             [(has_negation(p, language), has_negation(n, language)) for p, n in sides], total)
    marks = sorted({final_mark(t) for pair in sides for t in pair})
    punctuation = [_rule("punctuation", f"closing {mark!r}", [(final_mark(p) == mark, final_mark(n) == mark)
                                                             for p, n in sides], total) for mark in marks]
    punctuation += [_rule("punctuation", f"{mark!r} anywhere", [(mark in p or full in p, mark in n or full in n)
                                                               for p, n in sides], total)
                    for mark, full in (("?", "？"), ("!", "！"))]
    cues["punctuation"] = _best(punctuation, min_pairs)
    words = sorted({opening(t, language) for pair in sides for t in pair})
    openings = [_rule("opening", f"first word {word!r}", [(opening(p, language) == word, opening(n, language) == word)
                                                         for p, n in sides], total) for word in words]
    cues["opening"] = _best(openings, min_pairs) if openings else Cue("opening", "none", 0.5, 0, total)
    return cues


def side_texts(tree: object) -> list[tuple[str, str]]:
    """(pos, neg) of every leaf of an MVALUE tree whose sides are non-empty strings and differ."""
    if not isinstance(tree, dict):
        return []
    if "pos" in tree or "neg" in tree:
        pos, neg = tree.get("pos"), tree.get("neg")
        ok = isinstance(pos, str) and isinstance(neg, str) and pos.strip() and neg.strip() and pos != neg
        return [(pos, neg)] if ok else []
    return [pair for child in tree.values() for pair in side_texts(child)]


@dataclass
class FileReport:
    concept: str
    language: str
    pairs: int = 0
    neg_longer: float = 0.5  # among pairs of unequal length, the share whose neg side is longer (0.5 = no cue)
    problems: list[str] = field(default_factory=list)
    cues: dict[str, Cue] = field(default_factory=dict)  # kept apart from problems: see cue_problems

    def cue_problems(self, limits: CueLimits = CueLimits()) -> list[str]:
        """The cues of this file that break ``limits``."""
        return [failure for cue in self.cues.values() if (failure := limits.failure(cue))]


def check_concept(root: Path, concept: str, languages: Iterable[str] = LANGUAGES,
                  reference: str = "en", min_pairs: int = MIN_PAIRS,
                  min_cue_pairs: int = CueLimits.min_cue_pairs) -> list[FileReport]:
    """One report per language file of ``concept``; parallel keys are checked against ``reference``.

    ``problems`` lists what breaks the format promises; the cues are measured into ``cues`` and
    judged separately (:meth:`FileReport.cue_problems`), so a caller can choose its thresholds.
    """
    reports, reference_keys, reference_texts = [], None, {}
    for language in [reference, *[lang for lang in languages if lang != reference]]:
        report = FileReport(concept, language)
        reports.append(report)
        try:
            pairs = read_pairs(root, concept, language)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        raw = read_json(pair_file(root, concept, language))
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
        report.cues = measure_cues(side_texts(raw), language, min_cue_pairs)
        report.neg_longer = report.cues["length"].share  # type: ignore[assignment]  # always set for length
    return reports


CUE_NAMES = ("length", "negation", "punctuation", "opening")


def worst(reports: Iterable[FileReport], name: str, limits: CueLimits = CueLimits()) -> FileReport | None:
    """The report whose ``name`` cue is strongest (length: share farthest from 0.5), judged ones first."""
    measured = [r for r in reports if name in r.cues]
    if not measured:
        return None

    def strength(report: FileReport) -> tuple[bool, float]:
        cue = report.cues[name]
        return cue.covered >= limits.min_cue_pairs, abs(cue.share - 0.5) if cue.share is not None else cue.accuracy

    return max(measured, key=strength)


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
        data = read_json(path)
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


def data_card_counts(root: Path, concepts: Iterable[str] = CONCEPTS, limits: CueLimits = CueLimits()) -> str:
    """The data card's generated block: pairs per concept x language, the surface cues, and, when the
    folders sit next to ``root`` (as in the built-in set), back-translation results, instruction counts
    and the judges' agreement with the labelled responses in ``judge_labels/``."""
    languages = list(LANGUAGES)
    reports = {concept: {r.language: r for r in check_concept(root, concept, languages, min_pairs=0,
                                                                min_cue_pairs=limits.min_cue_pairs)}
               for concept in concepts}
    lines = ["| concept | " + " | ".join(languages) + " | neg longer |",
             "|---" * (len(languages) + 2) + "|"]
    for concept, by_language in reports.items():
        counts = [str(by_language[lang].pairs) if by_language[lang].pairs else "–" for lang in languages]
        shares = [r.neg_longer for r in by_language.values() if r.pairs]
        mean = f"{sum(shares) / len(shares):.2f}" if shares else "–"
        lines.append(f"| {concept} | " + " | ".join(counts) + f" | {mean} |")
    parts = ["\n".join(lines), cue_table(reports, limits)]
    backtranslation = root.parent / "backtranslation"
    instructions = root.parent / "instructions"
    if backtranslation.is_dir():
        parts.append(backtranslation_table(backtranslation_summary(backtranslation, root)))
        if (backtranslation / "instructions").is_dir() and instructions.is_dir():
            parts.append(instruction_backtranslation_table(
                instruction_backtranslation_summary(backtranslation / "instructions", instructions)))
    if instructions.is_dir():
        parts.append(instruction_counts(instructions))
    labels, lexicon = root.parent / "judge_labels", root.parent / "lexicons" / "refusal.json"
    if (labels / "responses.json").is_file() and lexicon.is_file():
        from mvplatform.judge_agreement import card_block  # only the card needs the judges

        phrases = read_json(lexicon)
        parts.append(card_block(labels, {lang: [p.lower() for p in items] for lang, items in phrases.items()}))
    return "\n\n".join(parts)


def cue_table(reports: dict[str, dict[str, FileReport]], limits: CueLimits = CueLimits()) -> str:
    """Markdown: per concept the length share (mean and range over languages), the strongest other cues
    (language and pairs that differ in the cue) and every language x cue that breaks ``limits``."""
    lines = ["| concept | neg longer: mean (range) | negation | punctuation | opening | breaks the limits |",
             "|---|---|---|---|---|---|"]
    for concept, by_language in reports.items():
        measured = [r for r in by_language.values() if r.pairs]
        shares = [r.cues["length"].share for r in measured if r.cues["length"].covered]
        length = f"{sum(shares) / len(shares):.2f} ({min(shares):.2f}-{max(shares):.2f})" if shares else "–"
        cells = []
        for name in CUE_NAMES[1:]:
            report = worst(measured, name, limits)
            if report is None or report.cues[name].covered < limits.min_cue_pairs:
                cells.append("–")
                continue
            cells.append(f"{report.cues[name].accuracy:.2f} {report.language} (n {report.cues[name].covered})")
        breaks = [f"{r.language} {name} {_value(r.cues[name]):.2f} (n {r.cues[name].covered})"
                  for r in measured for name in CUE_NAMES if name in r.cues and limits.failure(r.cues[name])]
        lines.append(f"| {concept} | {length} | " + " | ".join(cells) + f" | {', '.join(breaks) or 'none'} |")
    note = (f"Limits: neg-longer share within {1 - limits.max_length_share:.2f}-{limits.max_length_share:.2f}; "
            f"any other cue's best one-feature rule at most {limits.max_cue_accuracy:.2f} accurate; a cue is judged "
            f"when at least {limits.min_cue_pairs} pairs differ in it (n).")
    return "\n".join(lines) + "\n\n" + note


def _value(cue: Cue) -> float:
    return cue.share if cue.share is not None else cue.accuracy


class _PassShares:
    """Pass counts shared by the value-pair and the instruction back-translation results."""

    checked: int
    passed: int  # verdict "pass" now
    failures: tuple[str, ...]  # failed at first check

    @property
    def passed_first(self) -> int:
        """Items that passed on the text as first checked (a later pass after a fix does not count)."""
        return self.checked - len(self.failures)

    @property
    def share(self) -> float:
        return self.passed_first / self.checked if self.checked else 0.0

    @property
    def share_now(self) -> float:
        return self.passed / self.checked if self.checked else 0.0


@dataclass(frozen=True)
class BackTranslationResult(_PassShares):
    """One language's blind back-translation check, read from ``backtranslation/{lang}.json``."""

    language: str
    checked: int
    passed: int  # verdict "pass" now
    failures: tuple[str, ...]  # failed at first check: "concept/id (kind, fix applied | fix not applied)"
    pending: int = 0  # back-translated items without a verdict yet (the compare phase has not reached them)
    stale: tuple[str, ...] = ()  # "concept/id" whose English or target pair changed since its verdict


@dataclass
class _Tally:
    """Verdict counts of one back-translation file: the walk both kinds of file (pairs, instructions) share."""

    checked: int = 0
    passed: int = 0
    pending: int = 0
    failures: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    def add(self, path: Path, where: str, item: object, fields: str, stamped: tuple[tuple[str, object], ...],
            fix_applied: Callable[[dict[str, Any]], bool]) -> None:
        """Count one item; ``stamped`` pairs each sha1 field with the text it stamps (None: gone)."""
        if not isinstance(item, dict):
            raise DataError(f"{path}: {where}: expected an object with {fields}")
        verdict = item.get("verdict")
        if verdict is None:
            self.pending += 1
            return
        if verdict not in ("pass", "fail"):
            raise DataError(f"{path}: {where}: field 'verdict' must be 'pass' or 'fail', got {verdict!r}")
        self.checked += 1
        self.passed += verdict == "pass"
        if any(stamp in item and (text is None or item[stamp] != text_stamp(text)) for stamp, text in stamped):
            self.stale.append(where)
        if verdict == "pass" and "problem" not in item:
            return
        kind = str(item.get("problem", "unstated")).split(":", 1)[0].strip()
        self.failures.append(f"{where} ({kind}, fix {'applied' if fix_applied(item) else 'not applied'})")


def backtranslation_summary(folder: Path, values: Path, languages: Iterable[str] = LANGUAGES
                            ) -> list[BackTranslationResult]:
    """Pass rates per language file in ``folder`` (``{concept: {id: {"verdict": "pass"|"fail", ...}}}``).

    An item failed at first check when its verdict is "fail", or "pass" with a ``problem`` (it was
    fixed and re-read). Its proposed ``fix_pos``/``fix_neg`` counts as applied when the pair file in
    ``values`` now holds that text under the same id, so the card shows what is still open. Items
    without a verdict are counted as pending, not as checked. A verdict is stale when its ``en_sha1``
    or ``target_sha1`` stamp (sha1 of the pair's JSON, see :func:`text_stamp`) no longer matches.
    """
    english_by_concept: dict[str, dict[str, dict[str, Any]]] = {}  # read once, not once per language
    results = []
    for language in languages:
        path = folder / f"{language}.json"
        if not path.is_file():
            continue
        tree = read_json(path)
        tally = _Tally()
        for concept, items in tree.items():
            if not isinstance(items, dict):
                raise DataError(f"{path}: {concept}: expected an object of items by id")
            current = _leaves_by_id(values, concept, language)
            if concept not in english_by_concept:
                english_by_concept[concept] = _leaves_by_id(values, concept, "en")
            english = english_by_concept[concept]
            for key, item in items.items():
                leaf = current.get(key)

                def applied(item: dict[str, Any], leaf: dict[str, Any] = leaf or {}) -> bool:
                    fixes = {side: item[f"fix_{side}"] for side in ("pos", "neg") if item.get(f"fix_{side}")}
                    return bool(fixes) and all(leaf.get(side) == text for side, text in fixes.items())

                tally.add(path, f"{concept}/{key}", item, "'pos', 'neg' and 'verdict'",
                          (("en_sha1", english.get(key)), ("target_sha1", leaf)), applied)
        results.append(BackTranslationResult(language, tally.checked, tally.passed, tuple(tally.failures),
                                             tally.pending, tuple(tally.stale)))
    return results


def _leaves_by_id(values: Path, concept: str, language: str) -> dict[str, dict]:
    path = pair_file(values, concept, language)
    if not path.is_file():
        return {}
    tree = read_json(path)
    return {key: leaf for group in tree.values() if isinstance(group, dict)
            for key, leaf in group.items() if isinstance(leaf, dict)}


def backtranslation_table(results: list[BackTranslationResult]) -> str:
    """Markdown: per back-translated language, items checked, passed at first check with its share and
    95% Wilson interval, pass now, the items that failed, and the verdicts whose stamps are stale; then
    all languages together."""
    lines = [("| language | checked | passed at first check | share | 95% Wilson interval | pass now "
              "| failed at first check | not yet judged | stale |"), "|---|---|---|---|---|---|---|---|---|"]
    rows = [(r.language, r.checked, r.passed_first, r.passed, "; ".join(r.failures) or "–", str(r.pending),
             ", ".join(r.stale) or "none") for r in results]
    if len(results) > 1:
        rows.append(("all", sum(r.checked for r in results), sum(r.passed_first for r in results),
                     sum(r.passed for r in results), str(sum(len(r.failures) for r in results)),
                     str(sum(r.pending for r in results)), str(sum(len(r.stale) for r in results) or "none")))
    for name, checked, first, now, failed, pending, stale in rows:
        lines.append(f"| {name} | {checked} | {first} | {_share(first, checked)} | {now} | {failed} | {pending} "
                     f"| {stale} |")
    if not results:
        lines.append("| – | 0 | 0 | – | – | 0 | no back-translation files | 0 | none |")
    return "\n".join(lines)


def text_stamp(text: object) -> str:
    """The 12-hex sha1 stamp a back-translation verdict records of the text it was given on: a pair's
    leaf object (as in ``backtranslation/README.md``) or one instruction string."""
    return hashlib.sha1(json.dumps(text, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class InstructionCheckResult(_PassShares):
    """One language's blind back-translation check of control instructions, read from
    ``backtranslation/instructions/{lang}.json``; a sampled id is checked on both sides."""

    language: str
    checked: int
    passed: int  # verdict "pass" now
    failures: tuple[str, ...]  # failed at first check: "side/id (kind, fix applied | fix not applied)"
    stale: tuple[str, ...] = ()  # "side/id" whose English or target text changed since its verdict
    pending: int = 0


def instruction_backtranslation_summary(folder: Path, instructions: Path, languages: Iterable[str] = LANGUAGES
                                        ) -> list[InstructionCheckResult]:
    """Pass rates per language file in ``folder`` (``{"harmful"|"harmless": {id: {"text", "verdict", ...}}}``).

    As for the value pairs, a text failed at first check when its verdict is "fail", or "pass" with a
    ``problem`` (fixed and re-read); its ``fix`` counts as applied when ``instructions/{lang}.json``
    now holds that text. A verdict is stale when its ``en_sha1`` or ``target_sha1`` stamp no longer
    matches the English or target text (someone edited it since), so the card shows what needs
    another look.
    """
    english = _instruction_file(instructions / "en.json")
    results = []
    for language in languages:
        path = folder / f"{language}.json"
        if not path.is_file():
            continue
        tree = _instruction_file(path)
        current = _instruction_file(instructions / f"{language}.json")
        tally = _Tally()
        for side, items in tree.items():
            if side not in ("harmful", "harmless") or not isinstance(items, dict):
                raise DataError(f"{path}: expected 'harmful' and 'harmless' objects of items by id, got {side!r}")
            for key, item in items.items():
                target = current.get(side, {}).get(key)
                tally.add(path, f"{side}/{key}", item, "'text' and 'verdict'",
                          (("en_sha1", english.get(side, {}).get(key)), ("target_sha1", target)),
                          lambda item, target=target: bool(item.get("fix")) and target == item["fix"])
        results.append(InstructionCheckResult(language, tally.checked, tally.passed, tuple(tally.failures),
                                              tuple(tally.stale), tally.pending))
    return results


def _instruction_file(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    tree = read_json(path)
    if not isinstance(tree, dict):
        raise DataError(f"{path}: expected a JSON object")
    return tree


def _share(successes: int, n: int) -> str:
    """Two table cells: the share and its 95% Wilson interval ("–" for none checked)."""
    if not n:
        return "– | –"
    low, high = wilson(successes, n)
    return f"{successes / n:.3f} | {float(low):.3f}-{float(high):.3f}"


def instruction_backtranslation_table(results: list[InstructionCheckResult]) -> str:
    """Markdown: per language the instruction texts checked, passed at first check with its share and
    95% Wilson interval, pass now, the failures and stale verdicts; then all languages together."""
    lines = [("| language (instructions) | checked | passed at first check | share | 95% Wilson interval "
              "| pass now | failed at first check | stale |"), "|---|---|---|---|---|---|---|---|"]
    rows = [(r.language, r.checked, r.passed_first, r.passed, "; ".join(r.failures) or "–",
             ", ".join(r.stale) or "none") for r in results]
    if len(results) > 1:
        stale = sum(len(r.stale) for r in results)
        rows.append(("all", sum(r.checked for r in results), sum(r.passed_first for r in results),
                     sum(r.passed for r in results), f"{sum(len(r.failures) for r in results)}", str(stale or "none")))
    for name, checked, first, now, failed, stale_cell in rows:
        lines.append(f"| {name} | {checked} | {first} | {_share(first, checked)} | {now} | {failed} | {stale_cell} |")
    if not results:
        lines.append("| – | 0 | 0 | – | – | 0 | no back-translation files | none |")
    return "\n".join(lines)


def instruction_counts(folder: Path, languages: Iterable[str] = LANGUAGES) -> str:
    """One line: harmful and harmless instructions per language (the smallest file's counts)."""
    counts = []
    for language in languages:
        path = folder / f"{language}.json"
        if path.is_file():
            data = read_json(path)
            counts.append((len(data.get("harmful", {})), len(data.get("harmless", {}))))
    if not counts:
        return "Control instructions: none."
    harmful, harmless = min(c[0] for c in counts), min(c[1] for c in counts)
    return (f"Control instructions: {harmful} harmful and {harmless} harmless per language in {len(counts)} "
            f"languages (fewest in any file).")


COUNTS_START, COUNTS_END = "<!-- counts:start (mvp data card --write) -->", "<!-- counts:end -->"


def replace_block(markdown: str, counts: str) -> str:
    """``markdown`` with the text between the counts markers replaced by ``counts``."""
    if COUNTS_START not in markdown or COUNTS_END not in markdown:
        raise DataError(f"the data card has no counts block; add the lines {COUNTS_START} and {COUNTS_END}")
    head, rest = markdown.split(COUNTS_START, 1)
    _, tail = rest.split(COUNTS_END, 1)
    return f"{head}{COUNTS_START}\n{counts}\n{COUNTS_END}{tail}"
