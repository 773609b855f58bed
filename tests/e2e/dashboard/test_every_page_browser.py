"""Every page each role may see, in a real browser: it answers 200, draws without a console error or
a CSP violation, loads nothing from another host, has no serious accessibility violation and no
horizontal overflow at 1280x800, and leaves a screenshot under tests/artifacts/ for people to see."""

from __future__ import annotations

import pytest

from prediction_provider.dashboard.nav import visible_pages
from tests.conftest import Account
from tests.e2e.dashboard.conftest import Dash

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("role", ["admin", "operator", "provider", "client", "evaluator"])
def test_every_page_of_the_role_renders_clean(dash: Dash, accounts: dict[str, Account], role: str) -> None:
    dash.sign_in(accounts[role])
    pages = visible_pages(role)
    assert pages, role
    for page in pages:
        answer = dash.page.goto(page.path)
        assert answer is not None
        assert answer.status == 200, page.path
        assert answer.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        dash.page.wait_for_load_state("networkidle")
        assert dash.page.get_attribute("body", "data-page") == page.key
        assert dash.page.is_visible("time[datetime]"), f"{page.path} shows no as-of time"
        assert dash.page.inner_text("h1").strip(), page.path
        dash.shot(f"page-{page.key}-{role}")
        assert dash.axe_serious() == [], page.path
        assert dash.no_horizontal_overflow(), page.path


def test_the_sign_in_page_renders_clean(dash: Dash) -> None:
    answer = dash.page.goto("/dashboard/login")
    assert answer is not None
    assert answer.status == 200
    dash.shot("page-login")
    assert dash.axe_serious() == []
    assert dash.no_horizontal_overflow()


def test_the_dark_theme_toggle_is_kept(dash: Dash, accounts: dict[str, Account]) -> None:
    dash.sign_in(accounts["admin"])
    dash.page.goto("/dashboard/models")
    dash.page.click(".signout .theme-toggle")
    theme = dash.page.get_attribute("html", "data-theme")
    assert theme in ("dark", "light")
    dash.page.reload()
    assert dash.page.get_attribute("html", "data-theme") == theme
    background = dash.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == ("rgb(11, 17, 32)" if theme == "dark" else "rgb(248, 250, 252)")
    dash.shot(f"theme-{theme}")
    assert dash.axe_serious() == []
