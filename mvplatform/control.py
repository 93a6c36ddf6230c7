"""Cross-lingual control (PAPER.md section 5): steering settings, trial-batched evaluation, the modes.

A :class:`Setting` is one point of the search space: a contiguous window of decoder layers and a
strength. The :class:`Controller` evaluates several settings on an instruction set in one batched
generation (rows = instructions x settings, each row with its own coefficients), then judges every
response. Modes (registered in :data:`mvplatform.registry.CONTROL_MODES`) say which vectors and which
setting a language is steered with: none (No-Control), its own (LS-Control), or English's (En-Control).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from pydantic import TypeAdapter

from mvplatform.concepts import ConceptVectors
from mvplatform.errors import SpecError
from mvplatform.judges import Judge, Verdict, following_rate
from mvplatform.registry import CONTROL_MODES
from mvplatform.spec import ControlSpec, ModelSpec, Spec
from mvplatform.steering import Steering

if TYPE_CHECKING:
    from mvplatform.models import LoadedModel


@dataclass(frozen=True, order=True)
class Setting:
    """Steer layers ``start .. start + width - 1`` (cut at the model's last layer) with ``strength``."""

    start: int
    width: int
    strength: float

    def layers(self, n_layers: int) -> list[int]:
        return list(range(self.start, min(self.start + self.width - 1, n_layers) + 1))

    def describe(self, n_layers: int) -> str:
        if self.strength == 0:
            return "unsteered (strength 0)"
        layers = self.layers(n_layers)
        span = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"
        return f"layers {span}, strength {self.strength:+g}"


def steering_vectors(vectors: ConceptVectors, scale: str) -> dict[int, np.ndarray]:
    """Per layer, the vector a strength of 1 adds.

    ``state_norm`` (default): the unit direction times the layer's mean norm of the block output
    (where the vector is added, whatever ``extract.read`` reads; issue 23), so a
    strength is a fraction of a typical state and comparable across layers and models (residual
    norms grow by orders of magnitude with depth). ``unit``: the unit direction (repe's
    convention). ``raw``: the extracted difference vector as is.
    """
    directions = np.asarray(vectors.directions, dtype=np.float64)
    if scale == "raw":
        out = directions
    else:
        unit = directions / np.maximum(np.linalg.norm(directions, axis=-1, keepdims=True), 1e-12)
        if scale == "unit":
            out = unit
        elif scale == "state_norm":
            if vectors.norms is None:
                raise ValueError("scale state_norm needs the hidden-state norms saved with the vectors")
            out = unit * np.asarray(vectors.norms, dtype=np.float64)[:, None]
        else:
            raise ValueError(f"unknown scale {scale!r}; use state_norm, unit or raw")
    return {layer: out[i].astype(np.float32) for i, layer in enumerate(vectors.layers)}


@dataclass
class Evaluation:
    """One setting (None: unsteered) on one instruction set, with everything needed to audit it."""

    setting: Setting | None
    instructions: list[str]
    responses: list[str]
    verdicts: list[Verdict]

    @property
    def rate(self) -> float:
        return following_rate(self.verdicts)


@dataclass
class ControllerStats:
    rows: int = 0  # generated responses
    generate_calls: int = 0
    new_tokens: int = 0
    seconds: float = 0.0


@dataclass
class Controller:
    """Generates and judges for one model: the only part of control that runs the model."""

    loaded: LoadedModel
    judge: Judge
    control: ControlSpec  # how vectors are applied (operator, scale, ...) and generation settings
    stats: ControllerStats = field(default_factory=ControllerStats)

    def evaluate(self, language: str, instructions: list[str], settings: list[Setting | None],
                 vectors: ConceptVectors | None) -> list[Evaluation]:
        """Each setting on every instruction, in one batched generation (trial batching).

        Rows are instruction-major (all settings of an instruction side by side), so rows of one
        instruction pad alike and a setting's responses do not depend on its batch companions.
        """
        if not instructions or not settings:
            return [Evaluation(s, list(instructions), [], []) for s in settings]
        n_layers = self.loaded.n_layers
        steered = [s for s in settings if s is not None and s.strength != 0]
        layers = sorted({layer for s in steered for layer in s.layers(n_layers)})
        if steered and vectors is None:
            raise ValueError("steered settings need concept vectors")
        from mvplatform.generation import generate  # torch: only when something is generated

        start = time.perf_counter()
        rows = [(i, j) for i in range(len(instructions)) for j in range(len(settings))]
        texts = [instructions[i] for i, _ in rows]
        if layers:
            assert vectors is not None
            by_layer = steering_vectors(vectors, self.control.scale)
            missing = [layer for layer in layers if layer not in by_layer]
            if missing:
                raise ValueError(f"no concept vectors for layers {missing}; extract them (extract.layers)")
            steering = Steering({layer: by_layer[layer] for layer in layers}, self.control.operator,
                                self.control.normalize, self.control.positions)
            coefficients = np.zeros((len(rows), len(layers)), dtype=np.float32)
            for r, (_, j) in enumerate(rows):
                setting = settings[j]
                if setting is not None and setting.strength != 0:  # zero strength: unsteered, no columns
                    for layer in setting.layers(n_layers):
                        coefficients[r, layers.index(layer)] = setting.strength
            out = generate(self.loaded, texts, self.control.generation, steering, coefficients)
        else:  # nothing steered: every setting gives the unsteered responses, generate them once
            once = generate(self.loaded, list(instructions), self.control.generation)
            out = once
            out.texts = [once.texts[i] for i, _ in rows]
        verdicts = self.judge.judge(language, texts, out.texts)
        self.stats.rows += len(out.per_row_tokens)
        self.stats.generate_calls += out.forward_batches
        self.stats.new_tokens += out.new_tokens
        self.stats.seconds += time.perf_counter() - start
        results = []
        for j, setting in enumerate(settings):
            picked = [r for r, (_, jj) in enumerate(rows) if jj == j]
            results.append(Evaluation(setting, list(instructions), [out.texts[r] for r in picked],
                                      [verdicts[r] for r in picked]))
        return results


# ---------------------------------------------------------------------------------------------
# Modes: which vectors and which setting steer each language (PAPER.md section 5). A mode maps the
# language steered to the language whose vectors and best setting steer it (None: unsteered); its
# help starts with its label in tables ("LS-Control: ...").


@CONTROL_MODES.register("none", help="No-Control: unsteered")
def _no_control(language: str) -> str | None:
    return None


@CONTROL_MODES.register("language_specific", help="LS-Control: own vectors, own best setting")
def _language_specific(language: str) -> str | None:
    return language


@CONTROL_MODES.register("english_source", help="En-Control: English vectors and English's best setting")
def _english_source(language: str) -> str | None:
    return "en"


class _ModeLabels(Mapping[str, str]):
    """mode -> its label in tables and run names: the part of its help before the colon."""

    def __getitem__(self, mode: str) -> str:
        return CONTROL_MODES.help(mode).split(":", 1)[0]

    def __iter__(self) -> Iterator[str]:
        return iter(CONTROL_MODES)

    def __len__(self) -> int:
        return len(CONTROL_MODES.names())


MODE_LABELS: Mapping[str, str] = _ModeLabels()


@dataclass(frozen=True)
class ModeTask:
    """Evaluate ``language``'s test instructions steered with ``vectors_from``'s vectors and ``setting``."""

    mode: str  # none | language_specific | english_source
    language: str
    vectors_from: str | None  # None: unsteered
    setting: Setting | None
    note: str = ""


def plan_modes(modes: list[str], languages: list[str], best: dict[str, Setting | None]) -> list[ModeTask]:
    """No-Control: nothing. LS-Control: own vectors, own best setting. En-Control: English's vectors
    and English's best setting, for every language (English included, where it equals LS)."""
    tasks = []
    for language in languages:
        for mode in modes:
            source = CONTROL_MODES.get(mode)(language)
            if source is None:
                tasks.append(ModeTask(mode, language, None, None))
                continue
            setting = best.get(source)
            note = "" if setting is not None else f"the {source} search found no setting that meets the guard"
            tasks.append(ModeTask(mode, language, source if setting is not None else None, setting, note))
    return tasks


def curve_strengths(bounds: tuple[float, float], points: int) -> list[float]:
    """Evenly spaced strengths over the searched range, always including 0 (the unsteered point)."""
    if points <= 0:
        return []
    values = {round(float(x), 6) for x in np.linspace(bounds[0], bounds[1], points)}
    if bounds[0] <= 0 <= bounds[1]:
        values.add(0.0)
    return sorted(values)


@dataclass
class LanguageEvaluation:
    """Every mode of one language on its test instructions, plus its following-rate curve."""

    language: str
    modes: dict[str, tuple[ModeTask, Evaluation]]
    curve: list[tuple[float, float]]  # (strength, following rate) at the language's own best window
    curve_window: Setting | None
    seconds: float


def evaluate_language(controller: Controller, language: str, tasks: list[ModeTask],
                      vectors: dict[str, ConceptVectors], harmful: list[str],
                      curve: list[float]) -> LanguageEvaluation:
    """Run a language's mode tasks and curve with as few generations as possible.

    Settings that use the same vectors share one trial-batched generation; identical
    (vectors, setting) pairs (English's LS and En modes) are generated once.
    """
    start = time.perf_counter()
    own_best = next((t.setting for t in tasks if t.mode == "language_specific" and t.setting), None)
    if own_best is None:
        own_best = next((t.setting for t in tasks if t.vectors_from == language and t.setting), None)
    curve_settings = [Setting(own_best.start, own_best.width, s) for s in curve] if own_best else []
    wanted: dict[str | None, list[Setting | None]] = {}
    for task in tasks:
        source = task.vectors_from if task.setting is not None else language  # unsteered rides with its own
        wanted.setdefault(source, [])
        if task.setting not in wanted[source]:
            wanted[source].append(task.setting)
    for setting in curve_settings:
        if setting not in wanted.setdefault(language, []):
            wanted[language].append(setting)
    results: dict[tuple[str | None, Setting | None], Evaluation] = {}
    for source, settings in wanted.items():
        for evaluation in controller.evaluate(language, harmful, settings, vectors.get(source) if source else None):
            results[(source, evaluation.setting)] = evaluation
    modes = {}
    for task in tasks:
        source = task.vectors_from if task.setting is not None else language
        modes[task.mode] = (task, results[(source, task.setting)])
    points = [(s.strength, results[(language, s)].rate) for s in curve_settings]
    return LanguageEvaluation(language, modes, points, own_best, time.perf_counter() - start)


@functools.cache
def _evaluation_json() -> TypeAdapter[LanguageEvaluation]:
    """pydantic's JSON mapping of the evaluation dataclasses (built on first use, not at import)."""
    return TypeAdapter(LanguageEvaluation)


def evaluation_to_json(evaluation: LanguageEvaluation) -> dict[str, object]:
    """Plain JSON of a language's evaluation, for the result store (never pickled)."""
    return _evaluation_json().dump_python(evaluation, mode="json")


def evaluation_from_json(data: dict[str, object]) -> LanguageEvaluation:
    """The evaluation back from :func:`evaluation_to_json`'s JSON; a ``ValueError`` when it is not one."""
    return _evaluation_json().validate_python(data)


# ---------------------------------------------------------------------------------------------
# What a spec's control stage asks for (checked and counted before any work)


def search_languages(control: ControlSpec, languages: list[str]) -> list[str]:
    """Languages that need a study: all for LS-Control, English alone for En-Control, none otherwise."""
    if "language_specific" in control.modes:
        return list(languages)
    return ["en"] if "english_source" in control.modes else []


def control_steps(spec: Spec) -> int:
    """Progress units of the control stage per model: studies plus per-language evaluations."""
    if spec.control is None:
        return 0
    languages = spec.control_languages
    return len(search_languages(spec.control, languages)) + len(languages)


def check_control(spec: Spec, n_layers: int, model: ModelSpec) -> None:
    """Control settings that need the model's depth: refused before any work, like extract.layers."""
    control = spec.control
    if control is None:
        return
    first = control.search.layers.start[0]
    if first > n_layers:
        raise SpecError(f"control.search.layers.start: windows start at layer {first} or later, but "
                        f"{model.name} has {n_layers} decoder layers; use a start range within 1..{n_layers}")
    if spec.extract.layers != "all":
        reach = range(first, min(n_layers, control.search.layers.start[1] + control.search.layers.width[1] - 1) + 1)
        missing = [layer for layer in reach if layer not in spec.extract.layers]
        if missing:
            raise SpecError(f"control.search.layers: windows can reach layers {missing} that extract.layers "
                            "does not extract; set extract.layers: all or narrow the window ranges")
