"""What the app remembers between runs: recent models, per-model scaling, pen width (no Qt).

``AppSettings`` wraps a key-value *store* with QSettings' small interface (``value``, ``setValue``, ``allKeys``,
``sync``): the app passes a ``QSettings``, tests and scripts a ``MemoryStore``. Window geometry (Qt bytes) is
the window's own business and goes to the store directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from nn_core.interface import SCALINGS

MAX_RECENT = 8
RECENT_KEY = "recentModels"
SCALING_GROUP = "scaling"
PEN_WIDTH_KEY = "canvas/penWidth"


class Store(Protocol):
    def value(self, key: str, default: Any = None) -> Any: ...
    def setValue(self, key: str, value: Any) -> None: ...  # noqa: N802 - QSettings' spelling
    def allKeys(self) -> list[str]: ...  # noqa: N802
    def sync(self) -> None: ...


class MemoryStore:
    """A dict with QSettings' interface: settings that last as long as the object."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        self.values: dict[str, Any] = dict(values or {})

    def value(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def setValue(self, key: str, value: Any) -> None:  # noqa: N802
        self.values[key] = value

    def allKeys(self) -> list[str]:  # noqa: N802
        return list(self.values)

    def sync(self) -> None:
        pass


class AppSettings:
    """The app's remembered choices, over any ``Store``."""

    def __init__(self, store: Store | None = None) -> None:
        self.store: Store = store if store is not None else MemoryStore()

    # --- per-model scaling ---------------------------------------------------------------------------------
    def remembered_scalings(self) -> dict[str, str]:
        """Every remembered per-model scaling: model key -> scaling code (unknown codes are ignored)."""
        prefix = SCALING_GROUP + "/"
        values = {key[len(prefix):]: self.store.value(key) for key in self.store.allKeys() if key.startswith(prefix)}
        return {key: value for key, value in values.items() if value in SCALINGS}

    def scaling_for(self, model_key: str) -> str | None:
        value = self.store.value(f"{SCALING_GROUP}/{model_key}")
        return value if value in SCALINGS else None

    def remember_scaling(self, model_key: str, code: str) -> None:
        self.store.setValue(f"{SCALING_GROUP}/{model_key}", code)

    # --- recent models -------------------------------------------------------------------------------------
    def recent_models(self) -> list[str]:
        value = self.store.value(RECENT_KEY, [])
        if isinstance(value, str):  # QSettings returns a lone string for a one-element list in INI files
            value = [value]
        return [str(v) for v in value or []]

    def remember_recent(self, path: str | Path) -> list[str]:
        entry = str(Path(path).resolve())
        recent = ([entry] + [p for p in self.recent_models() if p != entry])[:MAX_RECENT]
        self.store.setValue(RECENT_KEY, recent)
        return recent

    # --- pen -----------------------------------------------------------------------------------------------
    def pen_width(self) -> float | None:
        value = self.store.value(PEN_WIDTH_KEY)
        try:
            return float(value) if value is not None else None
        except (TypeError, ValueError):
            return None

    def set_pen_width(self, width: float) -> None:
        self.store.setValue(PEN_WIDTH_KEY, float(width))

    def sync(self) -> None:
        self.store.sync()
