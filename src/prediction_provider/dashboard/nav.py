"""The dashboard's pages and which roles see each: one table, read by the navigation and every page.

The table is the design's role table (``shared/design/dashboard.md``, section 5). It only decides
what a page shows; every figure on it still comes from a service call that applies the API's own
permission checks, so a page can never show what the API would refuse the same user.
"""

from __future__ import annotations

from dataclasses import dataclass

from prediction_provider.accounts.roles import Role

ADMIN, OPERATOR, PROVIDER, CLIENT, EVALUATOR = (
    Role.ADMIN, Role.OPERATOR, Role.PROVIDER, Role.CLIENT, Role.EVALUATOR
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Page:
    key: str
    title: str
    path: str
    roles: frozenset[Role]


def _page(key: str, title: str, path: str, *roles: Role) -> Page:
    return Page(key, title, path, frozenset(roles))


OVERVIEW = _page("overview", "Overview", "/dashboard", ADMIN, OPERATOR)
MODELS = _page("models", "Models", "/dashboard/models", ADMIN, OPERATOR, PROVIDER, CLIENT, EVALUATOR)
METRICS = _page("metrics", "Live metrics", "/dashboard/metrics", ADMIN, OPERATOR)
JOBS = _page("jobs", "Jobs", "/dashboard/jobs", ADMIN, OPERATOR, PROVIDER, CLIENT)
TRADING = _page("trading", "Trading", "/dashboard/trading", ADMIN, OPERATOR, CLIENT)
MARKETPLACE = _page(
    "marketplace", "Marketplace", "/dashboard/marketplace", ADMIN, PROVIDER, CLIENT, EVALUATOR
)
LEADERBOARD = _page(
    "leaderboard", "Leaderboard", "/dashboard/leaderboard", ADMIN, PROVIDER, CLIENT, EVALUATOR
)
DRIFT = _page("drift", "Drift", "/dashboard/drift", ADMIN, OPERATOR, PROVIDER)
EXPERIMENTS = _page("experiments", "Experiments", "/dashboard/experiments", ADMIN, OPERATOR, PROVIDER)
ADMIN_PAGE = _page("admin", "Admin", "/dashboard/admin", ADMIN, OPERATOR)

PAGES: tuple[Page, ...] = (
    OVERVIEW, MODELS, METRICS, JOBS, TRADING, MARKETPLACE, LEADERBOARD, DRIFT, EXPERIMENTS, ADMIN_PAGE
)  # fmt: skip


def may_see(role: Role | str, page: Page) -> bool:
    return Role(role) in page.roles


def visible_pages(role: Role | str) -> list[Page]:
    return [page for page in PAGES if may_see(role, page)]


def landing(role: Role | str) -> str:
    """The first page a role sees after sign-in."""
    pages = visible_pages(role)
    return pages[0].path if pages else "/dashboard/login"
