"""Test helper: does an object implement a device interface, method by method and parameter by parameter?

``isinstance`` against a runtime-checkable ``Protocol`` only checks that the names exist; this checks
each method's parameters too, so a driver whose ``move_joints`` lost its ``speed_factor`` fails.
"""

import inspect


def implements(obj, interface) -> list[str]:
    """What ``obj`` lacks of ``interface``: missing methods or attributes, and parameters it does not take."""
    problems = []
    for name, member in inspect.getmembers(interface):
        if name.startswith("_") or not callable(member):
            continue
        impl = getattr(obj, name, None)
        if not callable(impl):
            problems.append(f"no method {name}")
            continue
        want = [p for p in inspect.signature(member).parameters.values() if p.name != "self"]
        have = inspect.signature(impl).parameters
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in have.values())
        for p in want:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.name not in have and not takes_kwargs:
                problems.append(f"{name}() takes no {p.name!r}")
            elif p.name in have and p.default is not p.empty and have[p.name].default is p.empty:
                problems.append(f"{name}() requires {p.name!r}, which the interface makes optional")
    for name in getattr(interface, "__annotations__", {}):
        if not name.startswith("_") and not hasattr(obj, name):
            problems.append(f"no attribute {name}")
    return problems
