"""A spec's concept vectors rebuilt from the result store, for ``mvp export SPEC`` (no model, no Ray, no MLflow).

The store holds each cell's hidden states under the key a submission computes
(:func:`mvplatform.inputs.item_state_key`); the vectors come from them by the same call a submission
makes (:func:`mvplatform.extraction.recognise`, same extract settings and seed), so they equal the ones
its runs logged. Intervals and cross-validation are skipped: they change no vector.
"""

from __future__ import annotations

from pathlib import Path

from mvplatform.errors import DataError
from mvplatform.export import CellVectors
from mvplatform.extraction import recognise
from mvplatform.inputs import item_state_key, prepare_data
from mvplatform.models import model_fingerprint
from mvplatform.spec import Spec, expand
from mvplatform.statestore import StateStore
from ray_jobs.submit import local_gpus


def stored_vectors(spec: Spec, spec_path: Path, models: list[str] | None = None, concepts: list[str] | None = None,
                   languages: list[str] | None = None) -> list[CellVectors]:
    """Every cell of ``spec`` passing the filters, from its stored hidden states; refuses if any is not stored."""
    items = [item for item in expand(spec) if (not models or item.model.short_name in models)
             and (not concepts or item.concept in concepts) and (not languages or item.language in languages)]
    if not items:
        raise DataError(f"{spec_path}: no cell of the spec matches the --model/--concept/--language filters; "
                        f"its cells: {', '.join(item.label for item in expand(spec))}")
    data = prepare_data(spec, spec_path.resolve().parent)
    store = StateStore(Path(spec.results.dir))
    extract = spec.extract.model_copy(update={"intervals": False, "folds": 1})
    gpu_first = local_gpus() > 0
    cells, missing = [], []
    for item in items:
        fingerprint = model_fingerprint(item.model)
        for on_gpu in (gpu_first, not gpu_first):  # states computed on either kind of device
            states = store.get(item_state_key(spec, data, item, fingerprint, on_gpu))
            if states is not None:
                break
        if states is None:
            missing.append(item.label)
            continue
        result = recognise(states, item.model.short_name, item.concept, item.language, extract, spec.data.seed)
        cells.append(CellVectors(item.model.short_name, item.concept, item.language, result.vectors,
                                 f"result store {store.root}", {"spec": spec.name, "read": spec.extract.read,
                                                                "states": "gpu" if on_gpu else "cpu"}))
    if missing:
        raise DataError(f"the result store {store.root} has no hidden states for {', '.join(missing)}; run "
                        f"`mvp submit {spec_path}` first, or export a submission by its parent run id")
    return cells
