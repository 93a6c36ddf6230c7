"""The spec reference (``docs/spec.md``), generated from the pydantic models so it cannot drift.

``mvp schema --markdown -o docs/spec.md`` writes it; a test fails when the shipped file is stale.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from mvplatform.catalog import CONCEPTS, LANGUAGES
from mvplatform.models import PACKAGED
from mvplatform.spec import Registered, Spec

# Names that come from catalogues rather than from the type (registry names: see _allowed).
ALLOWED: dict[str, str] = {
    "model.name": "packaged: " + ", ".join(PACKAGED) + "; or a local directory; or a hub id",
    "data.concepts": ", ".join(CONCEPTS),
    "data.languages": ", ".join(LANGUAGES),
    "analysis.high_resource": ", ".join(LANGUAGES),
}
EXAMPLES: dict[str, str] = {
    "name": "control-harmfulness",
    "model": "[gemma3-270m, ./my-model]",
    "model.name": "gemma3-270m",
    "model.revision": "main",
    "model.device": "cuda:0",
    "model.dtype": "bfloat16",
    "model.prompt": "'[INST] {input} [/INST] '",
    "model.trust_remote_code": "true",
    "data.dataset": "./my-mvalue-data",
    "data.concepts": "[morality, toxicity]",
    "data.languages": "[en, fr, zh, sw]",
    "data.test_fraction": "0.25",
    "data.seed": "7",
    "data.max_pairs": "20",
    "extract.method": "pca",
    "extract.token": "-2",
    "extract.layers": "[6, 9, 12]",
    "extract.batch_size": "32",
    "analyses": "[recognition, transferability]",
    "analysis.high_resource": "[en]",
    "analysis.linguistic_features": "[syntactic, genetic]",
    "resources.model_workers": "2",
    "resources.cpus_per_worker": "4",
    "resources.gpus_per_worker": "0.5",
    "resources.max_retries": "3",
    "results.dir": "/scratch/mvp-results",
    "results.reuse": "false",
    "tracking.experiment": "my-study",
    "tracking.uri": "http://127.0.0.1:5000",
    "tracking.log_states": "false",
}


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + (
            " \\| null" if type(None) in args else "")
    if origin is list:
        return f"list[{_type_name(args[0])}]"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "(see below)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return f"`{json.dumps([v.model_dump(mode='json').get('name') for v in value])}`"
    return f"`{json.dumps(value)}`"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        inner = typing.get_args(candidate)
        if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            return inner[0]
    return None


def _allowed(path: str, info: FieldInfo) -> str:
    """The names a field may take: a registry's (the field's :class:`Registered` metadata) or a catalogue's."""
    registered = _registered([*info.metadata, info.annotation])
    return ", ".join(registered.registry) if registered is not None else ALLOWED.get(path, "")


def _registered(parts: list[Any]) -> Registered | None:
    """The :class:`Registered` marker among field metadata and annotations, however deep (list items)."""
    for part in parts:
        if isinstance(part, Registered):
            return part
        found = _registered([*getattr(part, "__metadata__", ()), *typing.get_args(part)])
        if found is not None:
            return found
    return None


def _section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    title = f"`{prefix}`" if prefix else "top level"
    out += [f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], "",
            "| field | type | default | meaning | allowed | example |", "|---|---|---|---|---|---|"]
    nested = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        sub = _submodel(info.annotation)
        if sub is not None:
            nested.append((sub, path))
        kind = "mapping (or a list of them)" if path == "model" else _type_name(info.annotation)
        example = EXAMPLES.get(path, "")
        meaning = info.description or ((sub.__doc__ or "").strip().splitlines()[0] if sub else "")
        out.append(f"| `{path}` | {kind} | {_default(info)} | {meaning} | "
                   f"{_allowed(path, info)} | {f'`{example}`' if example else ''} |")
    out.append("")
    for sub, path in nested:
        _section(sub, path, out)


def spec_reference() -> str:
    """Markdown reference of every spec field: type, default, meaning, allowed values, an example."""
    out = ["# Spec reference", "",
           "Generated from `mvplatform/spec.py` by `mvp schema --markdown -o docs/spec.md`; do not edit by hand.",
           "Every field has a default. `model:` takes a name, a mapping, or a list of either.", ""]
    _section(Spec, "", out)
    return "\n".join(out).rstrip() + "\n"
