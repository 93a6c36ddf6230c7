"""A spec's inputs read and checked up front: every data split, control instruction set and eval
data set, with the file digests their result-store keys hash (no model, no Ray).

A bad file stops a submission before any work; ``mvp validate`` reads the same.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mvplatform.data import (
    InstructionSplit,
    PairSplit,
    check_lengths,
    load_eval_pairs,
    load_instructions,
    load_split,
    pair_file,
    pair_texts,
    resolve_dataset,
    sandbox_root_for,
    split_warnings,
)
from mvplatform.spec import ExtractionItem, Spec, expand
from mvplatform.statestore import file_digest, state_key


@dataclass(frozen=True)
class PreparedData:
    splits: dict[tuple[str, str], PairSplit]
    digests: dict[tuple[str, str], str]  # sha256 of each data file: part of the state cache key
    instructions: dict[str, InstructionSplit] = field(default_factory=dict)  # control languages
    warnings: list[str] = field(default_factory=list)  # weak but usable data: printed, never fatal
    dropped_empty: int = 0  # pairs with an empty side, over all files (logged as data_pairs_dropped_empty)
    # (concept, language) -> [(data set name, all its pairs as test pairs, file digest)]: data.eval_datasets
    evals: dict[tuple[str, str], list[tuple[str, PairSplit, str]]] = field(default_factory=dict)
    eval_skipped: list[str] = field(default_factory=list)  # "name: concept/language" an eval data set lacks
    files: dict[tuple[str, str], str] = field(default_factory=dict)  # (concept, language) -> its data file


def prepare_data(spec: Spec, base_dir: Path | None) -> PreparedData:
    """Every split and control instruction set, read up front: a bad file stops the run before any work."""
    sandbox = sandbox_root_for(spec.data.sandbox, spec.data.data_root, base_dir)
    root = resolve_dataset(spec.data.dataset, base_dir, sandbox)
    splits, digests, warnings, dropped_empty, files = {}, {}, [], 0, {}
    for concept in spec.data.concepts:
        for language in spec.data.languages:
            splits[(concept, language)] = load_split(spec.data.dataset, concept, language, spec.data.test_fraction,
                                                     spec.data.seed, spec.data.max_pairs, base_dir, sandbox)
            path = pair_file(root, concept, language)
            digests[(concept, language)] = file_digest(path)
            files[(concept, language)] = str(path)
            check_lengths(pair_texts(splits[(concept, language)]), path, spec.data.max_input_chars)
            warnings += split_warnings(splits[(concept, language)], path, language)
            dropped_empty += len(splits[(concept, language)].dropped_empty)
    instructions = {}
    if spec.control is not None:
        for language in spec.control_languages:
            instructions[language] = load_instructions(language, spec.control.search_fraction, spec.data.seed,
                                                       spec.control.instructions, base_dir, sandbox)
            texts = {f"{kind} {i}": text for part in (instructions[language].search, instructions[language].test)
                     for kind, items in part.items() for i, text in items.items()}
            check_lengths(texts, Path(spec.control.instructions) / f"{language}.json", spec.data.max_input_chars)
    evals, skipped = prepare_evals(spec, base_dir, sandbox)
    return PreparedData(splits, digests, instructions, warnings, dropped_empty, evals, skipped, files)


def prepare_evals(spec: Spec, base_dir: Path | None, sandbox: Path | None
                  ) -> tuple[dict[tuple[str, str], list[tuple[str, PairSplit, str]]], list[str]]:
    """Every pair of every ``data.eval_datasets`` entry, per concept x language the spec extracts.

    A missing folder or a path outside the sandbox stops the run; a concept or language the data set
    lacks is skipped and listed.
    """
    evals: dict[tuple[str, str], list[tuple[str, PairSplit, str]]] = defaultdict(list)
    skipped: list[str] = []
    cells = sorted({(item.concept, item.language) for item in expand(spec)})
    names = eval_names(spec.data.eval_datasets)
    for index, (dataset, name) in enumerate(zip(spec.data.eval_datasets, names)):
        for concept, language in cells:
            found = load_eval_pairs(dataset, concept, language, index, base_dir, sandbox)
            if found is None:
                skipped.append(f"{name}: {concept}/{language}")
                continue
            path, pairs = found
            split = PairSplit([], pairs)
            check_lengths(pair_texts(split), path, spec.data.max_input_chars)
            evals[(concept, language)].append((name, split, file_digest(path)))
    return dict(evals), skipped


def eval_names(datasets: list[str]) -> list[str]:
    """A short, unique name per eval data set: its folder's name (``_2``, ``_3`` on repeats)."""
    names: list[str] = []
    for dataset in datasets:
        base = Path(dataset.removeprefix("builtin:")).name or "eval"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def item_state_key(spec: Spec, data: PreparedData, item: ExtractionItem, fingerprint: dict[str, str],
                   on_gpu: bool, digest: str | None = None) -> str:
    """The result-store key of an item's hidden states: model, data file and every setting they depend on.

    ``digest``: another data file's (an eval data set's pairs for this item), else the item's own.
    """
    d, e = spec.data, spec.extract
    params = {"test_fraction": d.test_fraction, "seed": d.seed, "max_pairs": d.max_pairs, "token": e.token,
              "read": e.read, "accelerator": "gpu" if on_gpu else "cpu"}  # "read" (issue 23) also retires pre-23 states
    if digest is not None:
        params["eval"] = True  # every pair is a test pair: a different layout from the item's split
    return state_key(fingerprint, digest or data.digests[(item.concept, item.language)], params)
