"""Page sizes of keel's list calls: what ``page_size = 0`` means and the cap above which the
server answers with a smaller page, as each request message documents them.

The server enforces these (``keel_server.common.pagination.page_size(requested, *limits)``);
the SDK reads them to ask for whole pages (``min(wanted, limits.maximum)``), so both sides read
one table and a changed cap cannot leave the SDK asking for pages the server no longer serves.
"""

from __future__ import annotations

from typing import NamedTuple


class PageLimits(NamedTuple):
    """``default``: the page a request with page_size 0 gets; ``maximum``: the largest page."""

    default: int
    maximum: int


# keel.tracking.v1
SEARCH_EXPERIMENTS = PageLimits(100, 1000)
SEARCH_RUNS = PageLimits(1000, 50_000)
METRIC_HISTORY = PageLimits(25_000, 25_000)
# keel.registry.v1
REGISTERED_MODELS = PageLimits(100, 1000)
MODEL_VERSIONS = PageLimits(100, 10_000)
MODEL_HISTORY = PageLimits(100, 1000)
TRANSITION_REQUESTS = PageLimits(100, 1000)
# keel.artifacts.v1
LIST_ARTIFACTS = PageLimits(1000, 10_000)
# keel.auth.v1 (ListUsers, ListGroups) and keel.audit.v1 (ListEvents)
USERS_AND_GROUPS = PageLimits(100, 1000)
AUDIT_EVENTS = PageLimits(100, 1000)
