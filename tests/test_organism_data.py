"""The refusal organism's training requests (issue 17) keep their data card's promises.

They must not leak the experiment: a model fine-tuned on the control instructions' search or test
halves would be measured on its own training data, so no training text may equal or closely
reword one of ``instructions/en.json`` (both kinds, all ids). The refusal targets must read as
refusals to the judge that scores the experiment, or the organism would learn refusals the
keyword judge counts as "followed".
"""

from __future__ import annotations

import itertools
import json
import re

import pytest

from mvplatform.data import builtin_root, load_lexicon
from mvplatform.judges import KeywordJudge, normalise

ORGANISM = builtin_root() / "organism" / "en.json"
CONTROL = builtin_root() / "instructions" / "en.json"
MIN_REQUESTS = 160
MAX_JACCARD = 0.6  # word-set similarity at or above this counts as a close paraphrase


def words(text: str) -> list[str]:
    """Lower-cased words with punctuation (apostrophes included) stripped: "Neighbour's," -> "neighbours"."""
    return re.findall(r"\w+", normalise(text).replace("'", ""))


def jaccard(a: str, b: str) -> float:
    """Word-set Jaccard similarity |A & B| / |A | B| of two texts."""
    sa, sb = set(words(a)), set(words(b))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@pytest.fixture(scope="module")
def organism() -> dict:
    return json.loads(ORGANISM.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def control_texts() -> list[str]:
    data = json.loads(CONTROL.read_text(encoding="utf-8"))
    return list(data["harmful"].values()) + list(data["harmless"].values())


def requests(organism: dict) -> list[str]:
    return list(organism["harmful"].values()) + list(organism["harmless"].values())


def test_the_helpers_measure_what_they_say():
    assert words("Hack my Neighbour's  Wi-Fi!") == ["hack", "my", "neighbours", "wi", "fi"]
    # {a, b, c} vs {b, c, d}: 2 shared of 4 distinct
    assert jaccard("a b c", "B, c d.") == pytest.approx(0.5)
    assert jaccard("Same words here.", "here words same") == 1.0


def test_shape_and_counts(organism):
    assert set(organism) == {"harmful", "harmless", "refusals"}
    assert len(organism["harmful"]) >= MIN_REQUESTS
    assert len(organism["harmless"]) >= MIN_REQUESTS
    # matched one-to-one: the same ids on both sides, numbered 001.. without gaps
    ids = [f"{i:03d}" for i in range(1, len(organism["harmful"]) + 1)]
    assert list(organism["harmful"]) == ids
    assert list(organism["harmless"]) == ids
    assert 20 <= len(organism["refusals"]) <= 30


def test_every_text_is_one_clean_line(organism):
    for text in requests(organism) + organism["refusals"]:
        assert isinstance(text, str) and text.strip(), repr(text)
        assert text == text.strip() and "\n" not in text and "\r" not in text, repr(text)
        assert "  " not in text, repr(text)


def test_requests_are_single_sentences(organism):
    for text in requests(organism):
        assert text[-1] in ".?", text
        # no sentence break inside: ". X" / "? X" only at the end
        assert not re.search(r"[.?!]\s+[A-Z]", text[:-1]), text


def test_no_duplicates(organism):
    texts = requests(organism) + organism["refusals"]
    keys = [" ".join(words(t)) for t in texts]
    assert len(set(keys)) == len(keys), [t for t, k in zip(texts, keys) if keys.count(k) > 1]
    for i in organism["harmful"]:
        assert organism["harmful"][i] != organism["harmless"][i], i


def test_every_refusal_is_a_refusal_to_the_keyword_judge(organism):
    judge = KeywordJudge(load_lexicon())
    refusals = organism["refusals"]
    verdicts = judge.judge("en", ["a request"] * len(refusals), refusals)
    assert [v.label for v in verdicts] == ["refused"] * len(refusals), \
        [r for r, v in zip(refusals, verdicts) if v.label != "refused"]


def test_no_request_holds_a_refusal_phrase(organism):
    # A request that itself contains "i cannot" etc. would blur what the judge reads; keep them apart.
    judge = KeywordJudge(load_lexicon())
    hits = [t for t in requests(organism) for p in judge.phrases("en") if p in normalise(t)]
    assert not hits, hits


def test_no_exact_match_with_the_control_instructions(organism, control_texts):
    control = {" ".join(words(t)) for t in control_texts}
    leaked = [t for t in requests(organism) if " ".join(words(t)) in control]
    assert not leaked, leaked


def test_no_close_paraphrase_of_the_control_instructions(organism, control_texts):
    pairs = itertools.product(requests(organism), control_texts)
    close = [(round(jaccard(a, b), 2), a, b) for a, b in pairs if jaccard(a, b) >= MAX_JACCARD]
    assert not close, sorted(close, reverse=True)[:10]
