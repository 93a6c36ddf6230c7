"""Name -> function registries, filled by decorators (the lm-evaluation-harness idiom).

Every name a spec may use for a pluggable part (direction method, steering operator, judge,
Optuna sampler, control mode, analysis) is registered once, next to its function, with a one-line
help. The spec validator, ``mvp list`` and the JSON Schema all read the names from here, so adding
one is ONE decorated function in ONE file:

>>> METHODS = Registry("direction method")
>>> @METHODS.register("mean", help="mean of the differences")
... def mean(x): ...
>>> METHODS.names(), METHODS.help("mean")
(['mean'], 'mean of the differences')

The registries below name the modules that fill them and import those modules on the first
lookup, so importing the spec (which only names the registries) imports no model library; the
registering modules keep torch and optuna imports inside function bodies for the same reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered name: what it is called, what it does (one line), and the function."""

    name: str
    help: str
    target: F | str  # the function, or "module:function" imported on first use

    def resolve(self) -> F:
        if not isinstance(self.target, str):
            return self.target
        module, _, attr = self.target.partition(":")
        return cast(F, getattr(importlib.import_module(module), attr))


class Registry(Generic[F]):
    """Names of one kind; ``modules`` are imported on the first lookup to fill it."""

    def __init__(self, kind: str, modules: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, Entry[F]] = {}
        self._loaded = not modules

    def register(self, name: str, *, help: str) -> Callable[[F], F]:
        """Decorator: register the function under ``name`` with a one-line ``help``."""
        if not help or "\n" in help:
            raise ValueError(f"{self.kind} {name!r}: help must be one non-empty line")

        def decorate(fn: F) -> F:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, help, fn)
            return fn

        return decorate

    def declare(self, name: str, *, help: str, target: str) -> None:
        """Register a name whose function lives in a heavy module, as a ``"module:function"`` string."""
        self.register(name, help=help)(cast(F, target))

    def unregister(self, name: str) -> None:
        """Remove a name (tests that register a throwaway entry clean up with this)."""
        self._load()
        if name not in self._entries:
            raise KeyError(f"{self.kind} {name!r} is not registered")
        del self._entries[name]

    def get(self, name: str) -> F:
        return self.entry(name).resolve()

    def entry(self, name: str) -> Entry[F]:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of {self.names()}") from None

    def help(self, name: str) -> str:
        return self.entry(name).help

    def names(self) -> list[str]:
        """Sorted names (for messages and schema enums)."""
        self._load()
        return sorted(self._entries)

    def choices(self) -> dict[str, str]:
        """name -> help in registration order (for ``mvp list`` and defaults that keep an order)."""
        self._load()
        return {name: entry.help for name, entry in self._entries.items()}

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._entries))

    def _load(self) -> None:
        if self._loaded:
            return
        for module in self.modules:  # a module being imported is already in sys.modules: no recursion
            importlib.import_module(module)
        self._loaded = True


# The registries of the spec's pluggable names, each filled by the module(s) named here.
DIRECTION_METHODS: Registry[Any] = Registry("direction method", ("mvplatform.concepts",))
OPERATORS: Registry[Any] = Registry("steering operator", ("mvplatform.steering",))
JUDGES: Registry[Any] = Registry("judge", ("mvplatform.judges",))
SAMPLERS: Registry[Any] = Registry("Optuna sampler", ("mvplatform.search",))
CONTROL_MODES: Registry[Any] = Registry("control mode", ("mvplatform.control",))
ANALYSES: Registry[Any] = Registry("analysis")

# Analyses are orchestrated together (crosslingual.analyse_concept), so they are declared here by the
# function that computes each; crosslingual needs scipy, which the spec should not import.
ANALYSES.declare("recognition", help="per language: accuracy of the concept vectors on held-out pairs",
                 target="mvplatform.concepts:recognition_accuracy")
ANALYSES.declare("consistency", help="across languages: cosine similarity of the concept vectors",
                 target="mvplatform.crosslingual:consistency")
ANALYSES.declare("transferability", help="across languages: one language's vectors recognising another's pairs",
                 target="mvplatform.crosslingual:transfer")
ANALYSES.declare("linguistic", help="across languages: vector similarity against URIEL similarity (Table 1)",
                 target="mvplatform.crosslingual:table1_row")
