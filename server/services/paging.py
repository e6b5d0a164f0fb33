"""One page of a long list (customers, tasks): where it is and how many pages there are."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Paging:
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def first(self) -> int:
        """The 1-based position of the page's first item (0 when the list is empty)."""
        return 0 if not self.total else (self.page - 1) * self.per_page + 1

    @property
    def last(self) -> int:
        return min(self.total, self.page * self.per_page)
