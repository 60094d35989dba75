"""Replacing library methods reversibly, and the instrumentor switch every transport shares."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from ._core import Hooks
from ._names import RecordMode


def bind(function: Any, instance: object) -> Any:
    """``function`` bound to ``instance`` — works for plain functions and wrapt wrappers."""
    return function.__get__(instance, type(instance))


class HandlerName(str):
    """A handler's readable name — the function's own (``charge``), or the one given to the
    hook — carrying its qualified name (``shop.billing.Billing.charge``), which the span
    records as ``code.function.name``."""

    qualified: str | None

    def __new__(cls, name: str, qualified: str | None = None) -> HandlerName:
        self = super().__new__(cls, name)
        self.qualified = qualified
        return self


def handler_name(function: Any, name: str | None = None) -> HandlerName:
    """``name`` (else the function's own name), with the function's qualified name."""
    inner = _unwrap(function)
    own = getattr(inner, "__name__", None) or type(inner).__name__
    return HandlerName(name or own, qualified_name(inner))


def caller_name(frame: Any) -> HandlerName:
    """The handler name of the function running in ``frame`` (a loop that handles messages)."""
    module = frame.f_globals.get("__name__", "")
    qualified = f"{module}.{frame.f_code.co_qualname}" if module else frame.f_code.co_qualname
    return HandlerName(frame.f_code.co_name, qualified)


def _unwrap(function: Any) -> Any:
    while True:
        function = getattr(function, "__func__", function)
        if isinstance(function, functools.partial):
            function = function.func
        elif hasattr(function, "__wrapped__"):
            function = function.__wrapped__
        else:
            return function


def qualified_name(function: Any) -> str:
    """``module.Qualified.name`` of a handler, following ``functools.wraps`` chains."""
    function = getattr(function, "__func__", function)
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    module = getattr(function, "__module__", None) or ""
    name = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{name}" if module else name


def is_stock_wrapper(function: Any, module: str) -> bool:
    """Is ``function`` a wrapt wrapper installed by the stock instrumentation ``module``?"""
    wrapper = getattr(function, "_self_wrapper", None)
    return wrapper is not None and getattr(wrapper, "__module__", "").startswith(module)


class Patch:
    """One method replaced on a class; restored on :meth:`remove`.

    If another instrumentation wrapped the method after us, restoring would drop its
    wrapper too, so the patch is switched off instead (``enabled`` goes False and the
    wrapper passes calls straight through).
    """

    __slots__ = ("enabled", "name", "original", "owner", "wrapper")

    def __init__(self, owner: type, name: str, make: Callable[[Any, Patch], Any]) -> None:
        self.owner = owner
        self.name = name
        self.original = owner.__dict__.get(name)
        current = self.original if self.original is not None else getattr(owner, name)
        self.enabled = True
        self.wrapper = make(current, self)
        self.wrapper.__wrapped__ = current
        self.wrapper.__name__ = name
        setattr(owner, name, self.wrapper)

    def remove(self) -> None:
        """Restore the original method (or switch the wrapper off; see the class doc)."""
        self.enabled = False
        if self.owner.__dict__.get(self.name) is not self.wrapper:
            return
        if self.original is None:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)


class Instrumentor:
    """OpenTelemetry-style switch for one transport: :meth:`instrument` / :meth:`uninstrument`.

    One instance per transport class (like ``BaseInstrumentor``); calling
    :meth:`instrument` twice is a no-op.
    """

    _instances: ClassVar[dict[type, Instrumentor]] = {}
    _lock: ClassVar = threading.Lock()

    hooks: Hooks | None
    _patches: list[Patch]

    def __new__(cls) -> Instrumentor:
        with cls._lock:
            instance = cls._instances.get(cls)
            if instance is None:
                instance = super().__new__(cls)
                instance.hooks = None
                instance._patches = []
                cls._instances[cls] = instance
            return instance

    @property
    def is_instrumented(self) -> bool:
        """Whether the library's methods are currently wrapped."""
        return bool(self._patches)

    def instrument(
        self,
        *,
        tracer_provider: Any = None,
        logger_provider: Any = None,
        records: RecordMode = "unsampled",
        hooks: Hooks | None = None,
    ) -> None:
        """Wrap the library. Without providers the process-wide hooks are used at call time.

        Args:
            tracer_provider, logger_provider, records: build dedicated :class:`Hooks`.
            hooks: use these hooks instead.
        """
        if self._patches:
            return
        if hooks is None and (tracer_provider or logger_provider or records != "unsampled"):
            hooks = Hooks(
                tracer_provider=tracer_provider, logger_provider=logger_provider, records=records
            )
        self.hooks = hooks
        self._patches = self._patch()

    def uninstrument(self) -> None:
        """Restore the library's methods."""
        for patch in reversed(self._patches):
            patch.remove()
        self._patches = []

    def _patch(self) -> list[Patch]:  # pragma: no cover - each transport overrides it
        raise NotImplementedError
