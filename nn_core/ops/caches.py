"""The bounded per-shape caches the kernels keep (runners, plans, layouts, constant columns).

A kernel remembers what it prepared for an input shape so the next call of that shape skips the preparation. A
caller cycling through many shapes (a file's dynamic axes, a test sweeping sizes) must not grow such a cache
without bound, so each holds at most KEPT_ENTRIES + 1 entries and starts afresh when full: the window runs one
or two shapes, which stay, and anything else costs one preparation again.
"""

from __future__ import annotations

from typing import TypeVar

KEPT_ENTRIES = 16

Value = TypeVar("Value")


def keep(cache: dict, key: object, value: Value) -> Value:
    """Store ``value`` under ``key`` in ``cache`` (emptied first when it already holds more than KEPT_ENTRIES);
    returns ``value``."""
    if len(cache) > KEPT_ENTRIES:
        cache.clear()
    cache[key] = value
    return value
