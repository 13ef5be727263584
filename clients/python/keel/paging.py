"""Lazy pagers over keel's List/Search RPCs.

``Pager`` iterates items across pages, fetching the next page only when needed.
``PagedList`` is one page as a list with the ``token`` of the next (MLflow's shape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from keel.exceptions import InvalidArgument

T = TypeVar("T")

# fetch(page_token) -> (items of that page, next_page_token)
PageFetcher = Callable[[str], tuple[list[T], str]]


class PagedList(list[T], Generic[T]):
    """One page of results; ``token`` is the next page's token (None at the end)."""

    def __init__(self, items: list[T], token: str | None) -> None:
        super().__init__(items)
        self.token = token or None


class Pager(Generic[T]):
    """Iterates every item of a paginated RPC lazily; ``limit`` stops after that many items."""

    def __init__(self, fetch: PageFetcher[T], limit: int | None = None, page_token: str = "") -> None:
        self._fetch = fetch
        self._limit = limit
        self._first_token = page_token

    def __iter__(self) -> Iterator[T]:
        token = self._first_token
        produced = 0
        while True:
            items, token = self._fetch(token)
            for item in items:
                if self._limit is not None and produced >= self._limit:
                    return
                produced += 1
                yield item
            if not token:
                return

    def pages(self) -> Iterator[PagedList[T]]:
        token = self._first_token
        while True:
            items, next_token = self._fetch(token)
            yield PagedList(items, next_token)
            if not next_token:
                return
            token = next_token

    def to_list(self) -> list[T]:
        return list(self)


def collect_pages(
    fetch: Callable[[str, int], tuple[list[T], str]], max_results: int, page_token: str | None = None
) -> PagedList[T]:
    """Up to ``max_results`` items across server pages, as one PagedList with the next token.

    ``fetch(token, wanted)`` returns one server page of at most ``wanted`` items and its token;
    this lets an SDK call ask for more than a server page holds (MLflow's max_results).
    """
    if max_results < 1:
        raise InvalidArgument(
            f"max_results must be >= 1, got {max_results}", reason="INVALID_PAGE_SIZE", field="max_results"
        )
    items: list[T] = []
    token = page_token or ""
    while True:
        batch, token = fetch(token, max_results - len(items))
        items.extend(batch)
        if not token or len(items) >= max_results:
            return PagedList(items, token)
