"""A small name -> factory registry, as timm's ``create_model`` (one instance per component kind).

Example::

    MODELS = Registry("model")

    @MODELS.register("unet")
    def unet(**kwargs): ...

    model = MODELS.create("unet", out_channels=2)
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Iterator

from medseg.errors import UserError


class RegistryError(UserError, KeyError):
    """Unknown name in a registry; the message lists the valid names and the nearest one (a user error:
    the CLI prints it as one line)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class Registry:
    """Maps names to factories (classes or functions) of one component kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._alias_of: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable:
        """Decorator registering a factory under ``name`` (default: its ``__name__``)."""

        def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
            primary = (name or factory.__name__).lower()
            for key in (primary, *aliases):
                key = key.lower()
                if key != primary:
                    self._alias_of[key] = primary
                if key in self._entries and self._entries[key] is not factory:
                    raise ValueError(f"{self.kind} '{key}' is registered twice")
                self._entries[key] = factory
            return factory

        return wrap

    def get(self, name: str) -> Callable[..., Any]:
        key = name.lower()
        if key not in self._entries:
            raise RegistryError(unknown_name_message(self.kind, name, sorted(self._entries)))
        return self._entries[key]

    def create(self, name: str, **kwargs: Any) -> Any:
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} '{name}'")
        return factory(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> first docstring line, for ``medseg models`` / ``medseg losses``."""
        out = {}
        for key in self.names():
            if key in self._alias_of:
                out[key] = f"alias of '{self._alias_of[key]}'"
                continue
            doc = inspect.getdoc(self._entries[key]) or ""
            out[key] = doc.splitlines()[0] if doc else ""
        return out

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean '{near[0]}'?" if near else ""
    plural = f"{kind}es" if kind.endswith("s") else f"{kind}s"
    return f"unknown {kind} '{name}'.{hint} Valid {plural}: {', '.join(valid)}"


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Raise a TypeError naming the bad keyword and the valid ones (before building anything)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in kwargs:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise TypeError(f"{what} has no option '{key}'.{hint} Valid options: {', '.join(valid)}")


def import_submodules(package: str, path: list[str]) -> None:
    """Import every public module of a package so that their ``@register`` decorators run."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(path):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")
