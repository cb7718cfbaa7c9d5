"""Name -> class registries for expansions, reconciliations and remainders.

Components are looked up by their registry name only; configs never name a
Python import path.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from .errors import ConfigurationError, UnknownNameError, did_you_mean, short

__all__ = ["Registry", "EXPANSIONS", "RECONCILIATIONS", "REMAINDERS", "INTERDEPENDENCES", "FUSIONS",
           "COMPRESSIONS"]


class Registry:
    """A mapping from registry names to component classes."""

    def __init__(self, kind: str, package: str | None = None,
                 also: Registry | None = None) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}
        self._package = package  # imported on the first lookup: its modules register the classes
        #: a registry whose names are also accepted by :meth:`get` / :meth:`build` (not listed
        #: by :meth:`names`): the expansion registry accepts compression names, so a head's
        #: ``expansion: pca`` works while ``rpnkit list`` shows each kind once
        self.also = also

    def _load(self) -> None:
        if self._package is not None:
            package, self._package = self._package, None  # None first: no re-entry while loading
            try:
                importlib.import_module(package)
            except BaseException:
                self._package = package
                raise

    def register(self, name: str):
        """Class decorator that registers ``cls`` under ``name``."""

        def deco(cls: type) -> type:
            if name in self._classes:
                raise ConfigurationError(f"{self.kind} {name!r} is already registered")
            self._classes[name] = cls
            cls.registry_name = name
            return cls

        return deco

    def names(self) -> list[str]:
        self._load()
        return list(self._classes)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._classes

    def get(self, name: str) -> type:
        if not isinstance(name, str):
            raise ConfigurationError(
                f"{self.kind} name must be a string, got {type(name).__name__} {short(name)}"
            )
        self._load()
        if name in self._classes:
            return self._classes[name]
        if self.also is not None and name in self.also:
            return self.also.get(name)
        extra = ""
        known = list(self._classes)
        if self.also is not None:
            known += self.also.names()
            extra = f"; or a {self.also.kind}: {', '.join(sorted(self.also.names()))}"
        raise UnknownNameError(
            f"unknown {self.kind} {short(name, 60)}{did_you_mean(name, known)}; "
            f"valid names: {', '.join(sorted(self._classes))}{extra}"
        )

    def describe(self, name: str) -> str:
        """First line of the class docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.splitlines()[0] if doc else ""

    def parameters(self, name: str) -> dict[str, Any]:
        """Constructor keyword arguments and their defaults."""
        sig = inspect.signature(self.get(name).__init__)
        out = {}
        for p in list(sig.parameters.values())[1:]:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            out[p.name] = None if p.default is inspect.Parameter.empty else p.default
        return out

    def build(self, name: str, **params: Any) -> nn.Module:
        """Instantiate ``name`` with ``params``, checking parameter names first."""
        cls = self.get(name)
        valid = self.parameters(name)
        for key in params:
            if key not in valid:
                raise ConfigurationError(
                    f"unknown parameter {short(key, 60)} for {self.kind} {short(name, 60)}"
                    f"{did_you_mean(key, valid)}; valid parameters: "
                    f"{', '.join(valid) if valid else '(none)'}"
                )
        return cls(**params)

    def resolve(self, spec: Any, params: Mapping[str, Any] | None = None) -> nn.Module:
        """Build a component from a name, a ``{"name": ..., **params}`` mapping or a module.

        Module instances are deep-copied so that each caller owns its own state.
        """
        params = dict(params or {})
        if isinstance(spec, nn.Module):
            if params:
                raise ConfigurationError(
                    f"{self.kind} parameters {short(list(params))} were given together with an "
                    "already-built module; pass the parameters to its constructor instead"
                )
            return copy.deepcopy(spec)
        if isinstance(spec, Mapping):
            spec = dict(spec)
            if "name" not in spec:
                raise ConfigurationError(
                    f"a {self.kind} given as a mapping needs a 'name' key, got keys {short(list(spec))}"
                )
            name = spec.pop("name")
            if "params" in spec and isinstance(spec["params"], Mapping):
                spec.update(spec.pop("params"))
            spec.update(params)
            return self.build(name, **spec)
        if isinstance(spec, str):
            return self.build(spec, **params)
        raise ConfigurationError(
            f"cannot build a {self.kind} from {type(spec).__name__} {short(spec)}; give a registry "
            "name, a mapping with a 'name' key, or an nn.Module"
        )


# Each registry imports its package on the first lookup, so ``import rpnkit`` stays light
# (the command line's --version / --help / list never import torch).
# compressions (κ with D <= m) are expansions registered apart; EXPANSIONS also builds them
COMPRESSIONS = Registry("compression", "rpnkit.compression")
EXPANSIONS = Registry("expansion", "rpnkit.expansion", also=COMPRESSIONS)
RECONCILIATIONS = Registry("reconciliation", "rpnkit.reconciliation")
REMAINDERS = Registry("remainder", "rpnkit.remainder")
INTERDEPENDENCES = Registry("interdependence", "rpnkit.interdependence")  # ξ (RPN 2)
FUSIONS = Registry("fusion", "rpnkit.fusion")  # channel / head fusion objects
