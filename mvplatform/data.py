"""Contrast pairs in the paper's MVALUE layout, and their train/test split.

Layout: ``{root}/{concept}/{concept}_{lang}.json`` holding ``{k1: {k2: {"pos": .., "neg": ..}}}``.
Deontology leaves carry ``scenario`` (input = scenario + " " + side), truthfulness leaves carry
``question`` (input = "Question: {question} Answer: {side}"). ``builtin:values`` names the data set
shipped inside this package; any other value is a directory in the same layout.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from mvplatform.errors import DataError

BUILTIN_PREFIX = "builtin:"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastPair:
    """Two model inputs that differ in one value judgement; ``key`` is stable across languages."""

    key: str
    pos: str
    neg: str


@dataclass(frozen=True)
class PairSplit:
    train: list[ContrastPair]
    test: list[ContrastPair]
    dropped_empty: list[str] = field(default_factory=list)  # ids of pairs with an empty side, not used


def builtin_root() -> Path:
    """Folder of the data shipped in the wheel."""
    return Path(str(files("mvplatform").joinpath("builtin")))


def sandbox_root_for(sandbox: bool, data_root: str | None, base_dir: Path | None) -> Path | None:
    """The folder data paths must stay in (``data.sandbox``/``data.data_root``), or None when not sandboxed.

    ``data_root`` is relative to ``base_dir`` (the spec's folder); by default the root is the spec's
    folder itself, or the working directory for a spec that has no file.
    """
    if not sandbox:
        return None
    base = base_dir if base_dir is not None else Path.cwd()
    if data_root is None:
        return base.resolve()
    root = Path(data_root).expanduser()
    return (root if root.is_absolute() else base / root).resolve()


def check_inside(path: Path, root: Path | None, field: str = "data.dataset") -> None:
    """Refuse ``path`` when it is outside ``root`` once resolved (``..`` and symlinks followed).

    A shared spec must not read arbitrary files of the machine it runs on (issue 9); ``root=None``
    means no sandbox.
    """
    if root is None:
        return
    resolved, allowed = path.resolve(), root.resolve()
    if not resolved.is_relative_to(allowed):
        raise DataError(f"{field}: {path} resolves to {resolved}, outside the sandbox {allowed} (data.sandbox is "
                        "true). Move the data under that folder, set data.data_root to a folder that holds it, "
                        "use a builtin: data set, or set data.sandbox: false")


def resolve_dataset(dataset: str, base_dir: Path | None = None, sandbox_root: Path | None = None,
                    field: str = "data.dataset") -> Path:
    """``builtin:NAME`` -> the packaged folder; anything else -> a directory (relative to ``base_dir``).

    With ``sandbox_root`` (see :func:`sandbox_root_for`), a directory outside it is refused before it is
    even looked at; ``builtin:`` data is always allowed. ``field`` names the spec field in errors.
    """
    if dataset.startswith(BUILTIN_PREFIX):
        name = dataset.removeprefix(BUILTIN_PREFIX)
        root = builtin_root() / name
        if not name or not root.is_dir():
            available = sorted(p.name for p in builtin_root().iterdir() if p.is_dir())
            raise DataError(f"unknown built-in data set {dataset!r}; available: "
                            + ", ".join(BUILTIN_PREFIX + a for a in available))
        return root
    root = Path(dataset).expanduser()
    if not root.is_absolute() and base_dir is not None:
        root = base_dir / root
    check_inside(root, sandbox_root, field)
    if not root.is_dir() and field != "data.dataset":
        raise DataError(f"{field}: directory {root} does not exist; use a builtin: source or an existing folder")
    if not root.is_dir():
        raise DataError(f"data set directory {root} does not exist; set data.dataset to builtin:values "
                        "or to a folder holding {concept}/{concept}_{lang}.json files")
    return root


def pair_file(root: Path, concept: str, language: str) -> Path:
    return root / concept / f"{concept}_{language}.json"


@dataclass(frozen=True)
class PairFile:
    """The usable pairs of one file, and what was dropped on the way (counted, never silent)."""

    pairs: list[ContrastPair]
    empty: list[str]  # ids of pairs with a missing or empty side (the released MVALUE files have some)
    same: int  # pairs with pos == neg
    repeats: int  # pairs repeating an earlier pair's texts


def read_pair_file(root: Path, concept: str, language: str) -> PairFile:
    """All usable pairs of one concept and language, in file order, with the dropped ones counted."""
    path = pair_file(root, concept, language)
    if not path.is_file():
        present = sorted(p.stem.removeprefix(f"{concept}_") for p in (root / concept).glob(f"{concept}_*.json"))
        raise DataError(f"{path}: missing data file for concept {concept!r} and language {language!r}; "
                        f"languages present for this concept: {', '.join(present) or 'none'}")
    leaves = _leaves(read_json(path), (), path)
    empty = [key for key, pair in leaves if pair is None]
    complete = [pair for _, pair in leaves if pair is not None]
    pairs = [pair for pair in complete if pair.pos != pair.neg]
    if not pairs:
        raise DataError(f"{path}: no usable contrast pairs (every pair is missing a side or has pos == neg)")
    seen: set[tuple[str, str]] = set()
    unique = [pair for pair in pairs if not ((pair.pos, pair.neg) in seen or seen.add((pair.pos, pair.neg)))]
    if len(unique) < len(pairs):
        log.warning("%s: %d pair(s) repeat an earlier pair's texts and were dropped (a repeat could sit in both "
                    "the train and the test split)", path, len(pairs) - len(unique))
    return PairFile(unique, empty, len(complete) - len(pairs), len(pairs) - len(unique))


def read_pairs(root: Path, concept: str, language: str) -> list[ContrastPair]:
    """All usable pairs of one concept and language, in file order (see :func:`read_pair_file`)."""
    return read_pair_file(root, concept, language).pairs


def read_json(path: Path) -> Any:
    """A UTF-8 JSON data file, refusing duplicate keys (JSON would keep the last one silently) and
    nesting too deep for the parser, each with a message instead of a traceback."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 (byte offset {exc.start}); save the file as UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}); fix the syntax there") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be a data file; an MVALUE file is "
                        "{group: {id: {pos, neg}}}") from None


def _unique_keys(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise DataError(f"{path}: duplicate key {key!r} in one object; JSON would silently keep only the last "
                            "one (and drop a pair): give each group and id its own key")
        seen[key] = value
    return seen


def _leaves(node: Any, keys: tuple[str, ...], path: Path) -> list[tuple[str, ContrastPair | None]]:
    """(id, pair) of every leaf; the pair is None when a side is missing or empty."""
    where = "/".join(keys) or "(top level)"
    if not isinstance(node, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(node).__name__}")
    if "pos" in node or "neg" in node:
        return [("/".join(keys), _leaf_pair(node, keys, path))]
    return [leaf for key, child in node.items() for leaf in _leaves(child, (*keys, str(key)), path)]


def _leaf_pair(leaf: dict[str, Any], keys: tuple[str, ...], path: Path) -> ContrastPair | None:
    where = "/".join(keys)
    for side in ("pos", "neg"):
        value = leaf.get(side)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None  # dropped and counted, as the authors' reading skips such pairs
        if not isinstance(value, str):
            raise DataError(f"{path}: {where}: {side!r} must be a string, got {type(value).__name__}")
    pos, neg = leaf["pos"], leaf["neg"]
    if "scenario" in leaf:
        pos, neg = f"{leaf['scenario']} {pos}", f"{leaf['scenario']} {neg}"
    if "question" in leaf:
        pos, neg = (f"Question: {leaf['question']} Answer: {side}" for side in (pos, neg))
    return ContrastPair("/".join(keys), pos, neg)


def split_pairs(
    pairs: list[ContrastPair], test_fraction: float = 0.2, seed: int = 1, max_pairs: int | None = None
) -> PairSplit:
    """Shuffle with ``seed`` (Python's ``random``, as the paper's scripts), then train = floor((1 - f) n)."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    if max_pairs is not None:
        shuffled = shuffled[:max_pairs]
    n_train = math.floor(round((1.0 - test_fraction) * len(shuffled), 9))
    return PairSplit(shuffled[:n_train], shuffled[n_train:])


def load_split(
    dataset: str, concept: str, language: str, test_fraction: float = 0.2, seed: int = 1,
    max_pairs: int | None = None, base_dir: Path | None = None, sandbox_root: Path | None = None,
) -> PairSplit:
    """Read and split one concept x language; refuses splits with an empty side.

    With ``sandbox_root``, the data folder and the pair file itself (a symlink could point
    elsewhere) must resolve inside it.
    """
    root = resolve_dataset(dataset, base_dir, sandbox_root)
    if not dataset.startswith(BUILTIN_PREFIX):
        check_inside(pair_file(root, concept, language), sandbox_root)
    read = read_pair_file(root, concept, language)
    split = split_pairs(read.pairs, test_fraction, seed, max_pairs)
    split = PairSplit(split.train, split.test, dropped_empty=read.empty)
    if not split.train or not split.test:
        total = len(split.train) + len(split.test)
        dropped = [f"{n} {what}" for n, what in ((read.repeats, "repeating an earlier pair"),
                                                 (read.same, "with pos == neg"), (len(read.empty), "with an empty side"))
                   if n]
        raise DataError(f"{pair_file(root, concept, language)}: {total} usable pair(s)"
                        f"{' (dropped: ' + ', '.join(dropped) + ')' if dropped else ''} give "
                        f"{len(split.train)} train / {len(split.test)} test at test_fraction={test_fraction}; "
                        "add pairs or change data.test_fraction so both sides have at least one")
    return split


MIN_TEST_PAIRS = 10  # below this, one pair moves test accuracy by more than 10 points


def check_lengths(texts: dict[str, str], path: Path, max_chars: int) -> None:
    """Refuse any text longer than ``max_chars`` (``data.max_input_chars``) before a model sees it.

    A token is at least one byte and a character at most four, so the limit also bounds the tokens a
    forward pass gets: one 1M-character text once ran a worker out of memory after minutes.
    """
    for key, text in texts.items():
        if len(text) > max_chars:
            raise DataError(f"{path}: {key}: the text has {len(text):,} characters, more than "
                            f"data.max_input_chars = {max_chars:,}; shorten or drop it, or raise data.max_input_chars")


def pair_texts(split: PairSplit) -> dict[str, str]:
    """Every model input of a split, keyed ``pair-id pos|neg`` for messages."""
    return {f"pair {p.key} {side}": text for p in (*split.train, *split.test)
            for side, text in (("pos", p.pos), ("neg", p.neg))}


def split_warnings(split: PairSplit, path: Path, language: str) -> list[str]:
    """Problems that do not stop a run but make its numbers weak: a tiny test split, texts in another script."""
    from mvplatform.datacheck import script_problem  # datacheck reads files through this module

    warnings = []
    if split.dropped_empty:
        warnings.append(f"{path}: {len(split.dropped_empty)} pair(s) with an empty side dropped (first: "
                        f"{split.dropped_empty[0]}); the rest are used")
    if len(split.test) < MIN_TEST_PAIRS:
        warnings.append(f"{path}: only {len(split.test)} test pair(s) (fewer than {MIN_TEST_PAIRS}): one pair moves "
                        f"test accuracy by {100 / max(1, len(split.test)):.0f} points; raise data.test_fraction or "
                        "add pairs")
    wrong = [key for key, text in pair_texts(split).items() if script_problem(text, language)]
    if wrong:
        warnings.append(f"{path}: {len(wrong)} text(s) not written in {language}'s script (first: {wrong[0]}); "
                        "check the file is the right language (mvp data check shows each)")
    return warnings


# ---------------------------------------------------------------------------------------------
# Control instructions and judge lexicons (built-in: instructions/{lang}.json, lexicons/{name}.json)


@dataclass(frozen=True)
class InstructionSplit:
    """Harmful and matched harmless instructions of one language, split by id into search and test."""

    search: dict[str, dict[str, str]]  # kind ("harmful"/"harmless") -> id -> text
    test: dict[str, dict[str, str]]


def load_instructions(language: str, search_fraction: float = 0.5, seed: int = 1,
                      source: str = "builtin:instructions", base_dir: Path | None = None,
                      sandbox_root: Path | None = None) -> InstructionSplit:
    """``{lang}.json`` = ``{"harmful": {id: text}, "harmless": {id: text}}``; ids shared by both kinds.

    The split shuffles the ids with ``seed`` (the same ids in every language, so search and test
    sets stay parallel) and gives the first ``floor(search_fraction * n)`` to the search. With
    ``sandbox_root``, the folder and the language file must resolve inside it (builtin: exempt).
    """
    path = resolve_dataset(source, base_dir, sandbox_root, field="control.instructions") / f"{language}.json"
    if not source.startswith(BUILTIN_PREFIX):
        check_inside(path, sandbox_root, "control.instructions")
    if not path.is_file():
        raise DataError(f"{path}: no control instructions for language {language!r}")
    data = read_json(path)
    kinds = {kind: data.get(kind) if isinstance(data, dict) else None for kind in ("harmful", "harmless")}
    if not all(isinstance(items, dict) and items for items in kinds.values()):
        raise DataError(f"{path}: needs non-empty objects 'harmful' and 'harmless' of id -> instruction")
    ids = sorted(kinds["harmful"])
    random.Random(seed).shuffle(ids)
    n_search = math.floor(round(search_fraction * len(ids), 9))
    chosen = {"search": ids[:n_search], "test": ids[n_search:]}
    split = {part: {kind: {i: items[i] for i in part_ids if i in items} for kind, items in kinds.items()}
             for part, part_ids in chosen.items()}
    return InstructionSplit(split["search"], split["test"])


def load_lexicon(name: str = "refusal") -> dict[str, list[str]]:
    """Phrases per language (lower case) used by the keyword judge."""
    path = builtin_root() / "lexicons" / f"{name}.json"
    if not path.is_file():
        raise DataError(f"no built-in lexicon {name!r} ({path})")
    return {lang: [p.lower() for p in phrases] for lang, phrases in json.loads(path.read_text(encoding="utf-8")).items()}


def load_eval_pairs(dataset: str, concept: str, language: str, index: int, base_dir: Path | None = None,
                    sandbox_root: Path | None = None) -> tuple[Path, list[ContrastPair]] | None:
    """(file, every usable pair) of one concept x language of ``data.eval_datasets[index]``: all test pairs.

    The data set is resolved like ``data.dataset`` (sandbox rules included); a concept or language it
    does not have gives None (skipped and listed by the caller), a folder that does not exist an error.
    """
    root = resolve_dataset(dataset, base_dir, sandbox_root, field=f"data.eval_datasets[{index}]")
    path = pair_file(root, concept, language)
    if not path.is_file():
        return None
    pairs = read_pairs(root, concept, language)
    return (path, pairs) if pairs else None
