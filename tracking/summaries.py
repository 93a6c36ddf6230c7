"""Summary metrics of a submission for its parent run, so MLflow's own compare view ranks submissions.

Per model and per model x concept: the mean test accuracy at the layer chosen on the training pairs
(no selection on the test set) and the share of cells whose chosen layer clears the chance level
(the Wilson interval's lower end above the label-permutation 95th percentile at that layer); the same
two over every cell. Cells without a training-chosen layer, or without intervals, are left out of the
numbers that need them.

>>> from types import SimpleNamespace as NS
>>> import numpy as np
>>> cell = lambda c, acc, ok: NS(model="m", concept=c, selected=(2, acc), vectors=NS(layers=[1, 2]),
...                              evidence=NS(above_chance=np.array([False, ok])))
>>> summary = parent_metrics([cell("fairness", 0.5, False), cell("fairness", 0.75, True), cell("toxicity", 1.0, True)])
>>> summary["mean_selected_accuracy/m/fairness"], summary["mean_selected_accuracy/m"], summary["share_above_chance/m"]
(0.625, 0.75, 0.6666666666666666)
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np


def _key(name: str) -> str:
    """A model or concept name as MLflow accepts it in a metric key (letters, digits, ``_-. /``)."""
    return re.sub(r"[^A-Za-z0-9_.\- /]", "_", name)


def parent_metrics(results: list[Any]) -> dict[str, float]:
    """``mean_selected_accuracy[/model[/concept]]`` and ``share_above_chance[/model]`` over extraction results."""
    accuracy: dict[str, list[float]] = defaultdict(list)
    above: dict[str, list[float]] = defaultdict(list)
    for r in results:
        if r.selected is None:
            continue
        layer, value = r.selected
        model = _key(r.model)
        for key in ("", f"/{model}", f"/{model}/{_key(r.concept)}"):
            accuracy[key].append(float(value))
        if r.evidence is not None:
            verdict = float(r.evidence.above_chance[r.vectors.layers.index(layer)])
            for key in ("", f"/{model}"):
                above[key].append(verdict)
    out = {f"mean_selected_accuracy{key}": float(np.mean(v)) for key, v in accuracy.items()}
    out.update({f"share_above_chance{key}": float(np.mean(v)) for key, v in above.items()})
    return out
