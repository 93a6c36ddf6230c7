"""Concept vectors in the file formats other steering tools read (issue 20): no MLflow, no Ray.

Two writers, one cell (model x concept x language) per file:

- :func:`write_gguf`: a llama.cpp control vector, the file ``llama-cli --control-vector FILE`` reads
  (the layout of repeng's ``export_gguf``: architecture ``controlvector``, keys
  ``controlvector.model_hint`` and ``controlvector.layer_count``, one F32 tensor ``direction.N`` per layer).
- :func:`write_safetensors`: the ``{layer: vector}`` mapping of the ``steering-vectors`` library's
  ``SteeringVector(layer_activations=..., layer_type="decoder_block")``, with the metadata in the file's
  header and beside it as JSON.

**Layer numbers.** mvp layer ``L`` (1-based) is the output of the ``L``-th decoder block, the hidden state
``hidden_states[L]`` of transformers, where mvp's steering adds its vector. Both formats count blocks from 0:

- llama.cpp adds ``direction.N`` to the output of block ``N`` counted from 0 (``build_cvec(cur, il)`` at the
  end of block ``il``; ``common_control_vector_load`` puts ``direction.1`` first because block 0 has no slot
  and a ``direction.0`` makes it skip the whole file). So mvp layer ``L`` is written as ``direction.{L-1}``,
  and mvp layer 1 cannot be exported to llama.cpp: it is left out and named in ``mvp.skipped_layers``.
  A window of mvp layers ``a..b`` is ``--control-vector-layer-range {a-1} {b-1}``.
- steering-vectors indexes the model's list of decoder blocks from 0: mvp layer ``L`` is key ``L - 1``.

Both add at the block output, as mvp's steering does; the metadata's ``read`` says where the vectors were
read (``extract.read``: with ``hidden_states`` the last layer was read after the model's final norm).

**Scale.** A file holds the vectors exactly as mvp steers with them: per layer, the vector that strength 1
adds (:func:`mvplatform.control.steering_vectors` with the spec's ``control.scale``, ``state_norm`` unless
the spec says otherwise: the unit direction times the layer's mean hidden-state norm). So a strength found
by an mvp study carries over: ``--control-vector-scaled FILE 0.25`` in llama.cpp, or
``multiplier=0.25`` in steering-vectors, is mvp's ``linear_comb`` at strength 0.25 on every token
(mvp's ``normalize``, ``positions`` and ``piecewise_linear`` have no counterpart there).

>>> import numpy as np
>>> gguf_names({2: np.zeros(3), 3: np.zeros(3)})
{'direction.1': 2, 'direction.2': 3}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from mvplatform import __version__
from mvplatform.concepts import ConceptVectors
from mvplatform.errors import SpecError
from mvplatform.spec import Spec

FORMATS: tuple[str, ...] = ("gguf", "safetensors")
SCALES: tuple[str, ...] = ("state_norm", "unit", "raw")
GGUF_ARCH = "controlvector"


@dataclass(frozen=True)
class CellVectors:
    """One cell's concept vectors and where they came from (a run id or a spec's result store)."""

    model: str
    concept: str
    language: str
    vectors: ConceptVectors
    source: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # anything else worth keeping in the metadata

    @property
    def stem(self) -> str:
        """File name without suffix: ``{model}_{concept}_{language}``, the model's path characters made safe."""
        model = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.model).strip("-.") or "model"
        return f"{model}_{self.concept}_{self.language}"


def spec_scale(spec: Spec) -> str:
    """The scale a spec steers with: ``control.scale``, or its default when the spec has no control."""
    return spec.control.scale if spec.control is not None else "state_norm"


def steered(cell: CellVectors, scale: str) -> dict[int, np.ndarray]:
    """``{mvp layer: float32 [H]}``: the vector strength 1 adds at each layer, as mvp steers."""
    from mvplatform.control import steering_vectors

    if scale not in SCALES:
        raise SpecError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
    try:
        return steering_vectors(cell.vectors, scale)
    except ValueError as exc:  # state_norm without the norms (vectors saved before norms were kept)
        raise SpecError(f"{cell.stem}: {exc}; export with --scale unit or raw") from None


def metadata(cell: CellVectors, scale: str, layers: list[int]) -> dict[str, object]:
    """What a file says about itself: model, cell, method, scale and the layer numbering."""
    return {"format": "mvp concept vectors", "mvp_version": __version__, "model": cell.model,
            "concept": cell.concept, "language": cell.language, "method": cell.vectors.method, "scale": scale,
            "layers": layers, "hidden_size": int(np.asarray(cell.vectors.directions).shape[-1]),
            "source": cell.source, **cell.extra}


def gguf_names(vectors: dict[int, np.ndarray]) -> dict[str, int]:
    """llama.cpp tensor name -> mvp layer, for every layer llama.cpp can steer (all but mvp layer 1)."""
    return {f"direction.{layer - 1}": layer for layer in sorted(vectors) if layer >= 2}


def write_gguf(cell: CellVectors, folder: Path, scale: str) -> Path:
    """``{folder}/{stem}.gguf``: a llama.cpp control vector (see the module docstring for the layers)."""
    import gguf

    vectors = steered(cell, scale)
    names = gguf_names(vectors)
    if not names:
        raise SpecError(f"{cell.stem}: only mvp layer 1 was extracted, and llama.cpp cannot steer it (its "
                        "direction.0 has no slot); extract more layers or export --format safetensors")
    path = folder / f"{cell.stem}.gguf"
    writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
    writer.add_string(f"{GGUF_ARCH}.model_hint", cell.model)
    writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(names))
    for key, value in metadata(cell, scale, list(names.values())).items():  # llama.cpp ignores keys it does not know
        writer.add_string(f"mvp.{key}", value if isinstance(value, str) else json.dumps(value))
    writer.add_string("mvp.skipped_layers", json.dumps(sorted(set(vectors) - set(names.values()))))
    for name, layer in names.items():
        writer.add_tensor(name, np.ascontiguousarray(vectors[layer], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_safetensors(cell: CellVectors, folder: Path, scale: str) -> tuple[Path, Path]:
    """``{stem}.safetensors`` (tensor ``"N"`` = steering-vectors layer N = mvp layer N + 1) and ``{stem}.json``.

    Example (with torch and steering-vectors installed)::

        from safetensors.torch import load_file
        from steering_vectors import SteeringVector
        vector = SteeringVector({int(k): v for k, v in load_file(path).items()}, "decoder_block")
    """
    vectors = steered(cell, scale)
    meta = metadata(cell, scale, sorted(vectors))
    meta["layer_index"] = "tensor N is steering-vectors' decoder block N (0-based) = mvp layer N + 1"
    path = folder / f"{cell.stem}.safetensors"
    save_file({str(layer - 1): np.ascontiguousarray(v, dtype=np.float32) for layer, v in sorted(vectors.items())},
              str(path), metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    sidecar = folder / f"{cell.stem}.json"
    sidecar.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return path, sidecar


def export_cells(cells: list[CellVectors], folder: Path, fmt: str, scale: str) -> list[Path]:
    """Every cell in ``fmt`` under ``folder`` (created); returns the files written."""
    if fmt not in FORMATS:
        raise SpecError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    if not cells:
        raise SpecError("no concept vectors to export")
    stems = [cell.stem for cell in cells]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise SpecError(f"two cells would write the same file ({', '.join(clash)}); export one model at a time")
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for cell in cells:
        files += [write_gguf(cell, folder, scale)] if fmt == "gguf" else list(write_safetensors(cell, folder, scale))
    return files
