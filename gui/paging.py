"""Which slice of a long list is on screen: the activations view shows a model's nodes a page at a time (no Qt).

A graph of 20,000 nodes would otherwise mean 20,000 widgets built, laid out and kept alive; a page bounds the
widget count whatever the model.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 100


@dataclass
class Pages:
    """``total`` items in pages of ``size``; ``page`` is 0-based and always valid (0 when empty)."""

    total: int = 0
    size: int = PAGE_SIZE
    page: int = 0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"page size must be positive, not {self.size}")
        self.total = max(0, self.total)
        self.page = self._clamp(self.page)

    @property
    def count(self) -> int:
        """Number of pages (1 for an empty list, so there is always a current page)."""
        return max(1, -(-self.total // self.size))

    def _clamp(self, page: int) -> int:
        return min(max(0, page), self.count - 1)

    def bounds(self) -> tuple[int, int]:
        """``(start, stop)`` of the current page, as for ``range`` / slicing."""
        start = self.page * self.size
        return start, min(start + self.size, self.total)

    def set_page(self, page: int) -> bool:
        """Go to ``page`` (clamped); returns whether the page changed."""
        page = self._clamp(page)
        changed = page != self.page
        self.page = page
        return changed

    def set_total(self, total: int) -> None:
        """A new list length; the current page is kept when it still exists."""
        self.total = max(0, total)
        self.page = self._clamp(self.page)

    def page_of(self, index: int) -> int:
        return self._clamp(index // self.size)

    def has_previous(self) -> bool:
        return self.page > 0

    def has_next(self) -> bool:
        return self.page < self.count - 1

    def label(self, noun: str = "nodes") -> str:
        """``"nodes 101–200 of 20,000"``; ``"no nodes"`` when empty."""
        if self.total == 0:
            return f"no {noun}"
        start, stop = self.bounds()
        return f"{noun} {start + 1:,}–{stop:,} of {self.total:,}"
