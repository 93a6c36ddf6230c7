"""Surface baselines: how far the raw texts alone tell pos from neg (issue 16).

If "the shorter side is pos" or a bag-of-words classifier already recognises a concept, a concept
vector that does so says little about the model. Each baseline is trained on the same training pairs
as the vectors and scored on the same test pairs, per pair, so its accuracy gets the same interval:

- ``length_rule``: the side whose length (in characters) is on the side the training pairs favour
  (shorter or longer) is called pos;
- ``length_lr``: logistic regression on the pair's length differences (characters, words);
- ``bow_lr``: logistic regression on bags of words of the raw texts (characters for scripts written
  without spaces), scored per pair: pos is the side with the higher probability.

A tie (equal lengths, equal scores) counts as half right: the baseline would have to guess.

>>> from mvplatform.data import ContrastPair
>>> train = [ContrastPair("a", "yes", "no, never"), ContrastPair("b", "fine", "not at all")]
>>> length_rule(train, [ContrastPair("c", "ok", "no way"), ContrastPair("d", "same", "same")]).tolist()
[1.0, 0.5]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from mvplatform.data import ContrastPair

BASELINES = ("length_rule", "length_lr", "bow_lr")
# CJK ideographs, kana and Thai are written without spaces between words: one token per character.
_TOKEN = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    """Lower-cased words; scripts without word spaces split into characters."""
    return _TOKEN.findall(text.lower())


def _score(margin: np.ndarray) -> np.ndarray:
    """1 where pos wins, 0 where neg wins, 0.5 on a tie."""
    return np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))


def _lengths(pairs: Sequence[ContrastPair]) -> np.ndarray:
    """[n, 2] (characters, words) of pos minus neg."""
    return np.array([[len(p.pos) - len(p.neg), len(tokens(p.pos)) - len(tokens(p.neg))] for p in pairs],
                    dtype=np.float64)


def _check(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> None:
    if not train or not test:
        raise ValueError(f"surface baselines need training and test pairs (got {len(train)} and {len(test)})")


def length_rule(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of "the shorter (or longer, as training says) side is pos".

    The direction is the one right on more training pairs; shorter on a tie.
    """
    _check(train, test)
    train_diff = _lengths(train)[:, 0]
    direction = -1.0 if np.sum(train_diff < 0) >= np.sum(train_diff > 0) else 1.0
    return _score(direction * _lengths(test)[:, 0])


def _symmetric_fit(x: np.ndarray) -> LogisticRegression | None:
    """Logistic regression on pair features x (pos minus neg) and their negation (neg minus pos).

    Both orders are shown so the fit has two classes and no side bias; no intercept, so the model's
    decision for a pair is the sign of w . x. None when every feature is zero (nothing to learn).
    """
    if not np.any(x):
        return None
    features = np.concatenate([x, -x])
    labels = np.concatenate([np.ones(len(x)), np.zeros(len(x))])
    return LogisticRegression(fit_intercept=False, solver="liblinear", max_iter=1000).fit(features, labels)


def length_lr(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of a logistic regression on length differences (characters, words)."""
    _check(train, test)
    train_x, test_x = _lengths(train), _lengths(test)
    scale = np.maximum(np.abs(train_x).max(axis=0), 1.0)  # comparable feature scales for the L2 penalty
    model = _symmetric_fit(train_x / scale)
    if model is None:
        return np.full(len(test), 0.5)
    return _score(model.decision_function(test_x / scale))


def bow_lr(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> np.ndarray:
    """[n_test] per-pair result of a bag-of-words logistic regression trained on the raw training texts.

    Texts are classified one by one (pos = 1, neg = 0), as a reader of single texts would; a test
    pair counts as right when its pos text gets the higher score.
    """
    _check(train, test)
    vectorizer = CountVectorizer(tokenizer=tokens, lowercase=False, token_pattern=None, binary=True)
    texts = [p.pos for p in train] + [p.neg for p in train]
    features = vectorizer.fit_transform(texts)
    labels = np.concatenate([np.ones(len(train)), np.zeros(len(train))])
    if features.shape[1] == 0:
        return np.full(len(test), 0.5)
    model = LogisticRegression(solver="liblinear", max_iter=1000).fit(features, labels)  # small data: liblinear
    pos = model.decision_function(vectorizer.transform([p.pos for p in test]))
    neg = model.decision_function(vectorizer.transform([p.neg for p in test]))
    return _score(pos - neg)


@dataclass(frozen=True)
class SurfaceBaselines:
    """Per-pair results [n_test] of each surface baseline on one concept x language's test pairs."""

    per_pair: dict[str, np.ndarray]

    def accuracy(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_pair.items()}


def surface_baselines(train: Sequence[ContrastPair], test: Sequence[ContrastPair]) -> SurfaceBaselines:
    """Every surface baseline, trained on ``train`` and scored on ``test``."""
    return SurfaceBaselines({"length_rule": length_rule(train, test), "length_lr": length_lr(train, test),
                             "bow_lr": bow_lr(train, test)})
