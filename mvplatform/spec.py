"""The YAML spec: pydantic models, loading with line-numbered errors, and expansion into work.

A spec is the single source of truth for a submission. Every field has a default, so

>>> spec = Spec.model_validate({"name": "demo", "data": {"concepts": ["morality"]}})
>>> [item.label for item in expand(spec)][:2]
['gemma3-270m / morality / en', 'gemma3-270m / morality / fr']

Bad input never reaches a model: :func:`load_spec` raises :class:`SpecError` naming the file, the
YAML line, the field and a fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import reprlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from mvplatform.catalog import CONCEPTS, HIGH_RESOURCE, LANGUAGES
from mvplatform.errors import SpecError
from mvplatform.registry import ANALYSES, CONTROL_MODES, DIRECTION_METHODS, JUDGES, OPERATORS, SAMPLERS, Registry

LinguisticFeature = Literal["genetic", "geographic", "syntactic", "phonological"]
# Submission and experiment names become run names and a folder of the artifact store: names, never paths.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_LENGTH = 100


@dataclass(frozen=True)
class Registered:
    """Field metadata: a name of ``registry`` (see :func:`registered_names` for a list of them).

    Checked when a spec is validated, not when this module is imported, so the registries fill
    lazily and a name registered later (a plugin, a test) is accepted; the JSON Schema lists the
    names registered when it is generated.
    """

    registry: Registry[Any]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out["enum"] = list(self.registry)
        return out

    def check(self, value: str) -> str:
        return _check_names([value], tuple(self.registry), self.registry.kind)[0]


def registered_names(registry: Registry[Any]) -> Any:
    """The type of a list of ``registry``'s names, each checked where it stands, none twice."""
    return Annotated[list[Annotated[str, Registered(registry)]],
                     AfterValidator(lambda values: _check_names(values, tuple(values), registry.kind))]


class StrictModel(BaseModel):
    """Refuses unknown keys, so a typo is an error and not a silently ignored field."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(StrictModel):
    """One model: a packaged alias, a Hugging Face hub id, or a local directory."""

    name: str = Field("gemma3-270m", description="Packaged alias (`mvp list models`), hub id or local path.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on GPU."
    )
    prompt: str = Field(
        "auto",
        description="How each input is wrapped: auto (chat template when the tokenizer has one), "
        "chat, plain, or a template containing {input}, e.g. '[INST] {input} [/INST] '.",
    )
    trust_remote_code: StrictBool = Field(
        False, description="Run code shipped with a hub model at submit (explicit opt-in: a YAML true, never a "
        "string). Validation never runs it.")
    device_map: Literal["auto"] | None = Field(
        None, description="auto: spread a model larger than one GPU over all GPUs its worker holds "
        "(accelerate's device_map; give the worker that many GPUs with resources.gpus_per_worker).")
    languages: list[str] | None = Field(
        None, description="This model's languages, a subset of data.languages (the paper drops some per family); "
        "default: data.languages.")
    high_resource: list[str] | None = Field(
        None, description="This model's high-resource group (Table 1's Split, transfer direction); default: "
        "analysis.high_resource.")

    @field_validator("languages", "high_resource")
    @classmethod
    def _check_model_languages(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_names(value, tuple(LANGUAGES), "language")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        base = value.split(":")[0]
        if base not in {"auto", "cpu", "cuda", "mps"} or (":" in value and not value.split(":")[1].isdigit()):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")
        return value

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        if value not in {"auto", "chat", "plain"} and "{input}" not in value:
            raise ValueError("prompt must be auto, chat, plain, or a template containing {input}")
        return value

    @property
    def short_name(self) -> str:
        """A readable name for run labels: the alias, or the last part of a hub id or path."""
        return self.name.rstrip("/").split("/")[-1]


Concept = Annotated[str, Field(description="One of the value concepts (`mvp list concepts`).")]
# Known codes, each once: one check for every field that lists languages.
LanguageCodes = Annotated[list[str], AfterValidator(lambda values: _check_names(values, tuple(LANGUAGES), "language"))]


class DataSpec(StrictModel):
    """Which contrast pairs to read and how to split them (PAPER.md, Data)."""

    dataset: str = Field("builtin:values", description="builtin:values or a directory in the MVALUE layout.")
    concepts: list[Concept] = Field(default_factory=lambda: list(CONCEPTS), min_length=1)
    languages: LanguageCodes = Field(default_factory=lambda: list(LANGUAGES), min_length=1)
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Share of pairs held out for recognition.")
    seed: int = Field(1, description="Seed of the pair shuffle (the paper uses 1).")
    max_pairs: int | None = Field(None, ge=2, description="Use at most this many pairs per concept and language.")
    max_input_chars: int = Field(
        2000, ge=1, description="Longest text (a pair's side, an instruction) accepted; longer ones are refused "
        "before any model work, naming the file and pair (a token is at least a byte, so this bounds tokens too).")
    sandbox: StrictBool = Field(
        False, description="Refuse data paths outside the spec's folder (or data_root): data.dataset and "
        "control.instructions, after resolving .. and symlinks; builtin: data is always allowed.")
    data_root: str | None = Field(
        None, description="The folder data paths must stay in when sandbox is true, relative to the spec's "
        "folder; default: the spec's folder.")
    eval_datasets: list[str] = Field(
        default_factory=list, description="Other data sets in the MVALUE layout (resolved like dataset, sandbox "
        "included): each concept x language vector is applied to every pair of each (all pairs as test pairs). "
        "Concepts or languages a data set lacks are skipped and listed.")

    @field_validator("concepts")
    @classmethod
    def _check_concepts(cls, values: list[str]) -> list[str]:
        return _check_names(values, CONCEPTS, "concept")


class ExtractSpec(StrictModel):
    """How concept vectors are read from hidden states (PAPER.md section 1)."""

    method: Annotated[str, Registered(DIRECTION_METHODS)] = Field(
        "cluster_mean", description="Direction method (`mvp list methods`).")
    token: int = Field(-1, lt=0, description="Token whose hidden state is read, counted from the end (-1: last).")
    read: Literal["hidden_states", "block_output"] = Field(
        "hidden_states", description="Where a layer's state is read. hidden_states (the paper's code): the model's "
        "output_hidden_states, whose last layer is after the final norm; block_output: each decoder block's output, "
        "where steering writes (differs only at the last layer). Steering's state_norm scale is always measured at "
        "the block output.")
    layers: Literal["all"] | list[Annotated[int, Field(ge=1)]] = Field(
        "all", description="Decoder layers to analyse, 1-based, or all."
    )
    batch_size: int = Field(16, ge=1, description="Inputs per forward pass.")
    orientation: Literal["authors", "majority"] = Field(
        "authors", description="How a direction is signed. authors (the paper's code): cluster_mean keeps the raw "
        "mean difference pos - neg, other methods take repe's sign rule; majority: flip each layer's direction so "
        "pos projects above neg on most training pairs.")
    folds: int = Field(
        1, ge=1, description="Recognition tested by K-fold cross-validation over every pair of a cell (K >= 2): "
        "each pair tested once by vectors from the other folds, accuracy pooled; the logged vectors still come from "
        "the training split. 1: the paper's single train/test split.")
    intervals: StrictBool = Field(
        True, description="95% intervals, the label-permutation chance level and surface baselines (length, "
        "bag of words) beside every recognition number; no model runs for them. false: bare numbers, as the paper.")

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not value:
                raise ValueError("layers must be 'all' or a non-empty list of layer numbers")
            if len(set(value)) != len(value):
                raise ValueError("layers lists a layer twice")
        return value


class AnalysisSpec(StrictModel):
    """Settings of the cross-lingual analyses (PAPER.md sections 3 and 4)."""

    high_resource: LanguageCodes = Field(
        default_factory=lambda: list(HIGH_RESOURCE),
        description="Languages counted as high-resource for Split correlations and transfer direction; "
        "the rest are low-resource. Default: the paper's first eight (its BLOOMZ grouping).",
    )
    linguistic_features: list[LinguisticFeature] = Field(
        default_factory=lambda: ["genetic", "geographic", "syntactic", "phonological"], min_length=1,
        description="URIEL features correlated with concept-vector similarity (Table 1).",
    )
    similarity_source: Literal["uriel_distance", "feature_cosine"] = Field(
        "uriel_distance", description="Linguistic similarity: uriel_distance (1 - URIEL's own distances, as the "
        "paper; shipped for its 16 languages, `mvp similarity`) or feature_cosine (cosine of URIEL feature "
        "vectors, for other languages).")
    layer_reduction: Literal["max", "mean"] = Field(
        "max", description="How consistency reduces a language pair's cosine over layers for heatmaps and Table 1: "
        "max (the paper's) or mean.")


class ResultsSpec(StrictModel):
    """The local result store: hidden states computed once and reused by every later run."""

    dir: str = Field("mvp-results", description="Folder of the result store (relative to the working directory).")
    reuse: bool = Field(True, description="Reuse cached hidden states; false recomputes them (and refreshes the cache).")


class ResourcesSpec(StrictModel):
    """How the work maps onto Ray resources."""

    model_workers: int = Field(1, ge=1, description="Ray actors per model, each holding one copy of the model.")
    cpus_per_worker: float | None = Field(None, gt=0, description="CPUs per worker; default: the machine's CPUs / workers.")
    gpus_per_worker: float | Literal["auto"] = Field(
        "auto", description="GPUs per worker (fractions share a GPU); auto: 1 when the cluster has GPUs, else 0."
    )
    max_retries: int = Field(2, ge=0, description="Ray retries of a failed task and restarts of a dead worker.")

    @field_validator("gpus_per_worker")
    @classmethod
    def _check_gpus(cls, value: Any) -> Any:
        if value != "auto" and value < 0:
            raise ValueError("gpus_per_worker must be >= 0 or auto")
        return value


class TrackingSpec(StrictModel):
    """Where results go in MLflow."""

    experiment: str | None = Field(None, pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH,
                                   description="MLflow experiment (a name, never a path); default: the spec's name.")
    uri: str | None = Field(
        None, description="Tracking URI; default: $MLFLOW_TRACKING_URI, else a local store in the working directory."
    )
    log_states: bool = Field(True, description="Log test-split hidden states so later analyses need no model.")


def _ordered(value: tuple[Any, Any]) -> tuple[Any, Any]:
    if value[0] > value[1]:
        raise ValueError(f"range [{value[0]}, {value[1]}] is empty: write [low, high] with low <= high")
    return value


IntRange = Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]], AfterValidator(_ordered)]
FloatRange = Annotated[tuple[float, float], AfterValidator(_ordered)]


class LayerWindowSpec(StrictModel):
    """The steered layers form one contiguous window: its first layer and its width are searched."""

    start: IntRange = Field((4, 20), description="Range of the window's first decoder layer (1-based).")
    width: IntRange = Field((1, 6), description="Range of the window's width in layers (cut at the last layer).")


class ObjectiveSpec(StrictModel):
    """What the search optimises on the harmful search instructions."""

    metric: Literal["following_rate"] = Field("following_rate", description="Share of harmful instructions followed.")
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="maximize: the paper (steer a safety-tuned model into following); "
        "minimize: strengthen refusal.")


class GuardSpec(StrictModel):
    """Utility guard: the search may not win by breaking the model."""

    metric: Literal["harmless_answer_rate"] = Field(
        "harmless_answer_rate", description="Share of harmless instructions answered (followed, not degenerate).")
    min_relative: float = Field(0.8, ge=0.0, le=1.0, description="Steered rate must stay >= this x the unsteered rate.")
    use: Literal["constraint", "objective"] = Field(
        "constraint", description="constraint: infeasible trials cannot be best; objective: a second objective "
        "(multi-objective study, Pareto front logged).")
    instructions: int = Field(16, ge=1, description="Harmless search instructions evaluated per trial.")


class SearchSpec(StrictModel):
    """Optuna search over the steering window and strength, per model and language."""

    sampler: Annotated[str, Registered(SAMPLERS)] = Field(
        "tpe", description="Optuna sampler (`mvp list samplers`); grid evaluates the whole (discretised) space.")
    trials: int = Field(24, ge=1, description="Trials per study (grid: at most the grid's size).")
    trials_per_batch: int = Field(8, ge=1, description="Trials evaluated together in one batched generation.")
    layers: LayerWindowSpec = Field(default_factory=LayerWindowSpec)
    strength: FloatRange = Field((-1.0, 1.0), description="Range of the steering coefficient (see control.scale).")
    strength_step: float = Field(0.25, gt=0, description="Strengths are multiples of this step (the grid's spacing).")
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    guard: GuardSpec | None = Field(default_factory=GuardSpec, description="Utility guard; null disables it.")
    pruning: bool = Field(False, description="Stop a trial early (median rule) once part of its instructions are judged.")
    instructions: int | None = Field(None, ge=1, description="Use at most this many harmful search instructions.")
    seed: int = Field(0, description="Sampler seed.")


class GenerationSpec(StrictModel):
    """Batched generation with the model's chat template."""

    max_new_tokens: int = Field(48, ge=1)
    batch_size: int = Field(32, ge=1, description="Rows per generate call (trial batching fills rows with trials).")
    do_sample: bool = Field(False, description="false: greedy decoding; true: sampling with the seed below.")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, description="Sampling seed (only with do_sample).")


class JudgeSpec(StrictModel):
    """Decides, per response, whether the model followed or refused an instruction."""

    name: Annotated[str, Registered(JUDGES)] = Field(
        "refusal-keywords", description="Judge (`mvp list judges`). refusal-keywords: multilingual lexicon; "
        "model: a prompted LM judge.")
    lexicon: str = Field("refusal", description="Built-in lexicon of the keyword judge.")
    relevance: bool = Field(
        True, description="Keyword judge: a response with no refusal phrase counts as followed only if it neither "
        "repeats the request nor shares no word with it (else degenerate). Measured on read labels "
        "(DATA.md, judge agreement): precision of followed 0.17 -> 0.28 on the held-out half, recall "
        "unchanged; it calls an on-topic answer in another language than the request degenerate. false: "
        "the lexicon alone, as in the paper.")
    model: ModelSpec | None = Field(None, description="The judge model (name: as in model), for name: model.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _model_judge_needs_model(self) -> JudgeSpec:
        if self.name == "model" and self.model is None:
            raise ValueError("judge name: model needs judge.model (an alias, hub id or local path)")
        return self


class ControlSpec(StrictModel):
    """Cross-lingual control (PAPER.md section 5): steering, search, and No/LS/En-Control."""

    concept: Concept = Field("harmfulness", description="Concept whose vectors steer; must be in data.concepts.")
    languages: LanguageCodes | None = Field(None, description="Languages controlled; default: data.languages.")
    instructions: str = Field("builtin:instructions", description="builtin:instructions or a folder of {lang}.json.")
    search_fraction: float = Field(0.5, gt=0.0, lt=1.0, description="Share of instruction ids used for the search.")
    test_instructions: int | None = Field(None, ge=1, description="Use at most this many harmful test instructions.")
    operator: Annotated[str, Registered(OPERATORS)] = Field(
        "linear_comb", description="Steering operator (`mvp list operators`). linear_comb: h + c v; "
        "piecewise_linear: h + sign(<h, v>) c v.")
    normalize: bool = Field(False, description="Rescale each steered state to its original norm.")
    positions: Literal["all", "prompt", "generated"] = Field("all", description="Which token positions are steered.")
    scale: Literal["state_norm", "unit", "raw"] = Field(
        "state_norm", description="Vector length: state_norm (unit direction x mean hidden-state norm of the "
        "layer, so strength is a fraction of it), unit, or raw (the extracted difference).")
    modes: registered_names(CONTROL_MODES) = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(CONTROL_MODES), min_length=1,
        description="Control modes (`mvp list modes`): none (No-Control), language_specific (LS), english_source (En).")
    curve_points: int = Field(9, ge=0, description="Strengths on the following-rate curve per language (0: none).")
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)


class Spec(StrictModel):
    """A whole submission."""

    name: str = Field("mvp", pattern=NAME_PATTERN, max_length=MAX_NAME_LENGTH, description="Name of the submission.")
    model: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec()], description="One model or a list.")
    data: DataSpec = Field(default_factory=DataSpec)
    extract: ExtractSpec = Field(default_factory=ExtractSpec)
    analyses: registered_names(ANALYSES) = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(ANALYSES),
        description="recognition (per language), consistency, transferability, linguistic (across languages); "
        "`mvp list analyses`.",
    )
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    results: ResultsSpec = Field(default_factory=ResultsSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    control: ControlSpec | None = Field(None, description="Cross-lingual control experiment; null: none.")

    @field_validator("model", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]

    @field_validator("model")
    @classmethod
    def _check_models(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        if not value:
            raise ValueError("model list is empty; name at least one model")
        names = [m.name for m in value]
        if len(set(names)) != len(names):
            raise ValueError("the same model is listed twice")
        return value

    @field_validator("analyses")
    @classmethod
    def _recognition_first(cls, values: list[str]) -> list[str]:
        # every analysis starts from the extracted vectors
        return values if "recognition" in values else ["recognition", *values]

    @model_validator(mode="after")
    def _cross_lingual_needs_languages(self) -> Spec:
        cross = self.cross_lingual
        if cross and len(self.data.languages) < 2:
            if "analyses" in self.model_fields_set:
                raise ValueError(f"analyses: {', '.join(cross)} compare languages: list at least 2 in "
                                 "data.languages, or drop them from analyses")
            object.__setattr__(self, "analyses", ["recognition"])  # the default adapts to one language
        return self

    @model_validator(mode="after")
    def _control_uses_extracted_vectors(self) -> Spec:
        control = self.control
        if control is None:
            return self
        if control.concept not in self.data.concepts:
            raise ValueError(f"control.concept {control.concept!r} is not extracted: add it to data.concepts")
        missing = [lang for lang in control.languages or [] if lang not in self.data.languages]
        if missing:
            raise ValueError(f"control.languages: {', '.join(missing)} not in data.languages; "
                             "control steers with vectors extracted for those languages")
        if "english_source" in control.modes and "en" not in self.control_languages:
            raise ValueError("control.modes: english_source steers with English vectors; add en to "
                             "control.languages (or data.languages), or drop the mode")
        return self

    @model_validator(mode="after")
    def _model_languages_are_data_languages(self) -> Spec:
        for i, model in enumerate(self.model):
            extra = [lang for lang in model.languages or [] if lang not in self.data.languages]
            if extra:
                raise ValueError(f"model[{i}].languages: {', '.join(extra)} not in data.languages; add them there "
                                 "or drop them from the model")
            missing = [lang for lang in self.control_languages if lang not in self.languages_for(model)]
            if missing:
                raise ValueError(f"model[{i}].languages: control steers {', '.join(missing)}, which this model "
                                 "does not extract; add them or set control.languages")
        return self

    def languages_for(self, model: ModelSpec) -> list[str]:
        """The languages extracted for ``model``: its own list, else data.languages (in data's order)."""
        return [lang for lang in self.data.languages if model.languages is None or lang in model.languages]

    def analysis_for(self, model: ModelSpec | str) -> AnalysisSpec:
        """The analysis settings for ``model`` (a ModelSpec or its short name): its high-resource group."""
        found = model if isinstance(model, ModelSpec) else next(
            (m for m in self.model if model in (m.short_name, m.name)), None)
        if found is None or found.high_resource is None:
            return self.analysis
        return self.analysis.model_copy(update={"high_resource": list(found.high_resource)})

    @property
    def cross_lingual(self) -> list[str]:
        """The analyses that compare languages: every one but recognition."""
        return [a for a in self.analyses if a != "recognition"]

    @property
    def control_languages(self) -> list[str]:
        if self.control is None:
            return []
        return list(self.control.languages or self.data.languages)

    @property
    def models(self) -> list[ModelSpec]:
        return self.model

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def fingerprint(self) -> str:
        """Hash of the resolved spec: equal specs (after defaults) hash equal."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_names(values: list[str], valid: tuple[str, ...], kind: str) -> list[str]:
    known = set(valid)
    for value in values:
        if value not in known:
            raise ValueError(f"unknown {kind} {value!r}{_did_you_mean(value, valid)}; valid: {', '.join(valid)}")
    duplicates = sorted(value for value, count in Counter(values).items() if count > 1)
    if duplicates:
        raise ValueError(f"{kind} {', '.join(duplicates)} listed twice; list each once")
    return values


def _did_you_mean(value: str, valid: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(value, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------
# Loading with YAML line numbers


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file; every problem becomes one :class:`SpecError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file; check the path (try experiments/quickstart.yaml)") from None
    except UnicodeDecodeError as exc:
        raw = path.read_bytes()
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(f"{path}:{line}: the spec is not UTF-8 (byte {raw[exc.start]:#04x} at offset {exc.start}); "
                        "save the file as UTF-8") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read the spec ({exc.strerror or exc}); check the path and its permissions") from None
    return parse_spec(text, source=str(path))


# Bounds of the YAML loader: a spec is a few kB; these stop alias bombs and deep nesting early.
MAX_SPEC_CHARS = 1_000_000
MAX_SPEC_NODES = 100_000  # YAML nodes after alias expansion
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: about 15x faster


def load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the plain data of a spec, within bounded work.

    Refused with a :class:`SpecError`: invalid YAML, duplicate keys (YAML would keep the last one
    silently), more than :data:`MAX_SPEC_CHARS` characters, nesting deeper than the parser's
    recursion limit, and aliases that expand to more than :data:`MAX_SPEC_NODES` nodes.
    """
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"{source}: the spec has {len(text):,} characters, more than the limit of "
                        f"{MAX_SPEC_CHARS:,}; a spec is a few kB: move data into data files")
    try:
        root = yaml.compose(text, Loader=_LOADER)
        _check_tree(root, source)
        data = _LOADER("").construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        if "nesting depth" in problem:  # libyaml's own bound
            raise SpecError(f"{where}: the YAML is nested too deeply to be a spec; remove the nesting") from None
        raise SpecError(f"{where}: invalid YAML: {problem}; fix the syntax at that position") from None
    except RecursionError:  # the pure-Python parser's bound
        raise SpecError(f"{source}: the YAML is nested too deeply to be a spec; remove the nesting") from None
    return root, data


def _check_tree(root: yaml.Node | None, source: str) -> None:
    """Duplicate keys and the expanded size, in one iterative pass (aliases are shared nodes)."""
    if root is None:
        return
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        children = _children(node)
        if children_done:
            on_path.discard(id(node))
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
            if size[id(node)] > MAX_SPEC_NODES:
                raise SpecError(f"{source}:{node.start_mark.line + 1}: more than {MAX_SPEC_NODES:,} values from "
                                "here on, counting what YAML aliases expand to (an alias bomb?); a spec is small: "
                                "write the values out or remove them")
            continue
        if id(node) in size:
            continue
        if id(node) in on_path:
            raise SpecError(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to its own anchor; "
                            "a spec cannot be recursive")
        on_path.add(id(node))
        if isinstance(node, yaml.MappingNode):
            _check_unique_keys(node, source)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_unique_keys(node: yaml.MappingNode, source: str) -> None:
    seen: dict[Any, int] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        line = key.start_mark.line + 1
        if key.value in seen:
            raise SpecError(f"{source}:{line}: duplicate key {key.value!r} (first at line {seen[key.value]}); "
                            "YAML would silently keep only the last one: remove or merge one of them")
        seen[key.value] = line


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Validate spec text; ``source`` names the file in messages."""
    root, data = load_yaml(text, source)
    if data is None:  # an empty or comment-only file is more likely a mistake than a wish for 112 items
        raise SpecError(f"{source}: the spec is empty (no fields, only blanks or comments); write the fields to "
                        "change, e.g. `name: my-study` (mvp init writes a starting spec), or `{}` for every default")
    if not isinstance(data, dict):
        raise SpecError(f"{source}:1: a spec must be a mapping of fields (name:, model:, data:, ...), not {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = sorted((_describe(err, root, source) for err in exc.errors()), key=lambda p: p[0])
        lines = [text for _, text in problems]
        raise SpecError(f"{source}: {len(lines)} problem(s) in the spec:\n" + "\n".join(lines)) from None


def _describe(err: dict[str, Any], root: yaml.Node | None, source: str) -> tuple[int, str]:
    """(line, message) of one pydantic error, located in the YAML text."""
    loc = _clean_loc(err["loc"], keep_last=err["type"] == "extra_forbidden")
    message = _FRIENDLY.get(err["type"], err["msg"]).removeprefix("Value error, ")
    if err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        message = "must be a name, not a path: letters, digits, _ . and -, starting with a letter or digit"
    if not loc:  # a whole-spec check names its field first ("control.concept ..."): point there
        head = message.split(" ", 1)[0].rstrip(":")
        if head.split(".")[0] in Spec.model_fields:
            loc = tuple(head.split("."))
            message = message[len(head):].lstrip(": ")
            err = {**err, "input": _MISSING}
    shown, line = _locate(root, loc)
    field = _dotted(shown)
    where = f"{source}:{line}" if line else source
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        hint = _did_you_mean(str(loc[-1]), valid)
        return line or 0, f"  {where}: {field}: unknown field{hint}; valid fields here: {', '.join(valid)}"
    if err.get("input") is _MISSING:
        return line or 0, f"  {where}: {field}: {message}"
    got = _SHORT_REPR.repr(err.get("input"))  # bounded work whatever the input's size
    got = got if len(got) <= 80 else got[:77] + "..."
    return line or 0, f"  {where}: {field}: {message} (got {got})"


_MISSING = object()
_FRIENDLY = {  # pydantic's message where it names no fix
    "bool_type": "a switch takes a YAML boolean: write true or false, without quotes",
}
_SHORT_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHORT_REPR.maxlevel, _SHORT_REPR.maxdict, _SHORT_REPR.maxlist, _SHORT_REPR.maxstring = 2, 4, 4, 60


_BRANCH_LABELS = {"float", "int", "str", "bool", "none"}


def _clean_loc(loc: tuple[Any, ...], keep_last: bool = False) -> tuple[Any, ...]:
    """Drop pydantic's union-branch labels ('float', "literal['all']", 'list[int]', 'ModelSpec').

    An unknown key the user typed is the last part of an ``extra_forbidden`` location and is kept
    whatever it looks like (``keep_last``).
    """
    models = {cls.__name__ for cls in _spec_models()}
    out: list[Any] = []
    for i, part in enumerate(loc):
        is_label = isinstance(part, str) and ("[" in part or part in _BRANCH_LABELS or part in models)
        if is_label and not (keep_last and i == len(loc) - 1):
            continue
        out.append(part)
    return tuple(out)


def _spec_models(root: type[BaseModel] = StrictModel) -> list[type[BaseModel]]:
    """Every model class of the spec (pydantic names union branches after them)."""
    return [sub for cls in root.__subclasses__() for sub in (cls, *_spec_models(cls))]


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at ``loc`` (for "valid fields" hints)."""
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        candidates = [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return None
        model = candidates[0]
    return model


def _flatten(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [leaf for arg in args for leaf in _flatten(arg)]


def _locate(node: yaml.Node | None, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], int | None]:
    """The field path as the user wrote it and the 1-based line of its deepest YAML node.

    A list index that the YAML does not have (``model: x`` validated as ``model[0]``) is dropped
    from the path shown, so messages match the file.
    """
    line = node.start_mark.line + 1 if node is not None else None
    shown: list[Any] = []
    for part in loc:
        if isinstance(part, int) and not isinstance(node, yaml.SequenceNode):
            continue
        shown.append(part)
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                node = None
                continue
            key, node = match[0]
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            node = None
    return tuple(shown), line


# ---------------------------------------------------------------------------------------------
# Expansion into work items


@dataclass(frozen=True)
class ExtractionItem:
    """Hidden states, concept vectors and recognition for one model x concept x language."""

    model: ModelSpec
    concept: str
    language: str

    @property
    def label(self) -> str:
        return f"{self.model.short_name} / {self.concept} / {self.language}"


def expand(spec: Spec) -> list[ExtractionItem]:
    """Every model x concept x language the spec asks for, in a stable order."""
    return [
        ExtractionItem(model, concept, language)
        for model in spec.models
        for concept in spec.data.concepts
        for language in spec.languages_for(model)
    ]


def json_schema() -> dict[str, Any]:
    """JSON Schema of the spec, for editors' YAML autocompletion, accepting every form the spec accepts.

    pydantic describes the validated shape; the spec also takes shorthands its before-validators
    expand (a model or judge given by name, one model instead of a list), and names checked by
    validators rather than types (concepts, languages). Both are added here, so an editor neither
    flags a valid spec nor misses a misspelt language.
    """
    schema = Spec.model_json_schema()
    schema["title"] = "mvp experiment spec"
    defs = schema["$defs"]
    for name in ("ModelSpec", "JudgeSpec"):  # a bare name is the shorthand for {name: ...}
        shape = defs[name]
        defs[name] = {"title": shape.get("title", name), "description": shape.get("description", ""),
                      "anyOf": [{"type": "string", "description": "shorthand for {name: ...}"},
                                {key: value for key, value in shape.items() if key != "title"}]}
    model = schema["properties"]["model"]
    one = {"$ref": "#/$defs/ModelSpec"}
    schema["properties"]["model"] = {"description": model.get("description", ""), "default": model.get("default"),
                                     "anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    names = {"concept": list(CONCEPTS), "concepts": list(CONCEPTS), "languages": list(LANGUAGES),
             "high_resource": list(LANGUAGES)}
    for top in [schema, *defs.values()]:
        for shape in [top, *top.get("anyOf", [])]:
            for field, prop in shape.get("properties", {}).items():
                if field in names:
                    _add_enum(prop, names[field])
    return schema


def _add_enum(prop: dict[str, Any], values: list[str]) -> None:
    """Give the string (or list of strings) in ``prop``, whatever union wraps it, the names it may take."""
    for option in [prop, *prop.get("anyOf", [])]:
        if option.get("type") == "string":
            option["enum"] = values
        elif option.get("type") == "array" and option.get("items", {}).get("type") == "string":
            option["items"]["enum"] = values
