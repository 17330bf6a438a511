"""Ports: what the twin's side holds instead of a driver.

A port exposes exactly the methods of one interface (a ``Protocol`` of :mod:`twinsim.hal.interfaces`,
the procedure's verifier, a callable) and nothing else. It keeps no reference to the object behind
it: its only attribute is a number, looked up in this module's registry on each call. The twin's
side may not import this module or any driver (import contracts), so from the objects it is given
there is no attribute path to the simulated room, its CT or a true pose; the object-graph test in
``tests/test_truth_wall.py`` walks them to check.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_REGISTRY: dict[int, Any] = {}
_TOKENS = itertools.count(1)
_CLASSES: dict[type, type] = {}


class PortClosed(RuntimeError):
    """A port was used after its rig was closed."""


class Port:
    """Base of every port class; ``_token`` is its one attribute."""

    __slots__ = ("_token",)
    _token: int

    def __repr__(self) -> str:
        return f"<{type(self).__name__} #{self._token}>"


def _target(port: Port) -> Any:
    try:
        return _REGISTRY[port._token]
    except KeyError:
        raise PortClosed(f"{type(port).__name__}: its device was closed") from None


def _interface_methods(interface: type) -> list[str]:
    return [name for name, member in inspect.getmembers(interface)
            if not name.startswith("_") and callable(member)]


def _forward(name: str) -> Callable[..., Any]:
    def method(self: Port, *args: Any, **kwargs: Any) -> Any:
        return getattr(_target(self), name)(*args, **kwargs)

    method.__name__ = name
    return method


def _interface_attributes(interface: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(interface.__mro__):
        names += [n for n in getattr(klass, "__annotations__", {}) if not n.startswith("_") and n not in names]
    return names


def _read_only(name: str) -> property:
    return property(lambda self: getattr(_target(self), name), doc=f"the device's {name} (read only)")


def port_class(interface: type) -> type:
    """The port class of ``interface``: a forwarding method per public method, a read-only property per declared
    attribute (``name: str``)."""
    if interface not in _CLASSES:
        namespace: dict[str, Any] = {"__slots__": (), "__doc__": f"A port exposing {interface.__name__}'s methods only."}
        for name in _interface_methods(interface):
            namespace[name] = _forward(name)
        for name in _interface_attributes(interface):
            namespace[name] = _read_only(name)
        _CLASSES[interface] = type(f"{interface.__name__}Port", (Port,), namespace)
    return _CLASSES[interface]


class CallablePort(Port):
    """A function handed to the twin's side (a baseline's plan source, a phantom's mount step), as a port."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _target(self)(*args, **kwargs)


def _register(port: Port, target: Any) -> Port:
    token = next(_TOKENS)
    _REGISTRY[token] = target
    object.__setattr__(port, "_token", token)
    return port


def port(target: T, interface: type) -> T:
    """``target`` behind a port exposing only ``interface``'s methods (typed as the target for callers)."""
    missing = [n for n in _interface_methods(interface) if not callable(getattr(target, n, None))]
    missing += [n for n in _interface_attributes(interface) if not hasattr(target, n)]
    if missing:
        raise TypeError(f"{type(target).__name__} does not implement {interface.__name__}: missing {missing}")
    return _register(port_class(interface)(), target)  # type: ignore[return-value]


def callable_port(fn: Callable[..., T]) -> Callable[..., T]:
    """``fn`` behind a port."""
    return _register(CallablePort(), fn)  # type: ignore[return-value]


def release(p: object) -> None:
    """Forget what ``p`` stands for: later calls raise :class:`PortClosed`."""
    if isinstance(p, Port):
        _REGISTRY.pop(p._token, None)


def unwrap(p: T) -> T:
    """The object behind a port, for the wiring and the drivers only (the simulated operator hand-guides the arm itself)."""
    return _target(p) if isinstance(p, Port) else p
