"""`glo dashboard` in headless Chromium: a real server on a free port, a real database that a real `glo run`
(fake worker) is writing.  The counts change without a reload, the leaderboard, a candidate and a held
job's reason are reached by clicking, and names with markup stay text.

Screenshots of the pages land in $GLO_SCREENSHOTS (default out/screenshots/).
Skipped without Chromium (`make test` installs it), failed instead when $CI is set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import Dashboard, chrome, console_errors, full_screenshot, missing_reason
from tests.dashboard_data import build_database
from tests.orch_helpers import REPO, glo_env, glo_popen, write_config
from tests.test_dashboard import HOLD_REASON, XSS_NAME, add_held_run

pytestmark = pytest.mark.slow
SHOTS = Path(os.environ.get("GLO_SCREENSHOTS") or REPO / "out" / "screenshots")
HTML_IN_CONFIG = '<img src=x onerror="window.__xss=1">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = missing_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}", pytrace=False)
        pytest.skip(reason)
    with chrome() as driver:
        yield driver


def wait_for(fn: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - the page is still drawing: try again
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def text(driver: Any, css: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, css).text


def click(driver: Any, css: str) -> None:
    from selenium.webdriver.common.by import By

    el = wait_for(lambda: driver.find_element(By.CSS_SELECTOR, css), what=css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()


def no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no alert() ran
    assert driver.execute_script("return window.__xss === undefined")


def test_live_run_page_clicks_and_escaping(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    db = tmp_path / "live.db"
    cfg = write_config(tmp_path / "c.toml", population=16, generations=3, cma_iterations=3, per_job=1, in_flight=2)
    cfg.write_text(cfg.read_text().replace('name = "test"', f"name = {json.dumps(XSS_NAME)}")
                   .replace("steps = 10", f"steps = 10\ndata_path = {json.dumps(HTML_IN_CONFIG)}"))
    run = glo_popen("run", str(cfg), "--db", str(db), "--run-id", "live", "--no-progress",
                    env=glo_env(sleep=0.4))
    try:
        wait_for(lambda: db.exists() and run.poll() is None, what="the run to create its database")
        time.sleep(1.0)
        with Dashboard(db) as server:
            browser.get(server.url)
            click(browser, "a.run-link")
            wait_for(lambda: text(browser, "#count-done") != "", what="the counts")
            assert browser.current_url.startswith(server.url + "run?")
            browser.execute_script("window.__sameDocument = 'yes'")  # gone if the page reloaded
            seen = {text(browser, "#count-done")}
            wait_for(lambda: seen.add(text(browser, "#count-done")) or len(seen) >= 3, timeout=120,
                     what="the trained count to change twice while the run goes on")
            assert browser.execute_script("return window.__sameDocument") == "yes"
            assert run.poll() is None or len(seen) >= 3
            # the run's name and the config's HTML are text on the page, never markup
            assert text(browser, "#run-name") == XSS_NAME
            # generation 0's trainable share (#16): its 16 members, counted once each
            wait_for(lambda: text(browser, "#count-gen0").endswith(" of 16"), what="generation 0's trainable share")
            click(browser, "details[data-key=config] summary")
            assert json.dumps(HTML_IN_CONFIG) in text(browser, "#config")  # the config as JSON: quotes escaped
            assert not browser.find_elements(By.CSS_SELECTOR, "main img, main script")
            no_alert(browser)
            # the leaderboard's first loss -> its candidate page
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#leaderboard a.cand-link"), what="leaderboard")
            formula = browser.find_element(By.CSS_SELECTOR, "#leaderboard a.cand-link").get_attribute("textContent")
            click(browser, "#leaderboard a.cand-link")
            wait_for(lambda: text(browser, "#cand-formula"), what="the candidate page")
            assert browser.current_url.startswith(server.url + "candidate?")
            assert text(browser, "#cand-key").startswith("s1:") or text(browser, "#cand-key")
            assert "def glo_loss(y_true, y_pred):" in text(browser, "#keras")
            assert text(browser, "#cand-fitness") and text(browser, "#cand-origin")
            assert formula.split(" ")[0].split("(")[0] in text(browser, "#cand-formula")
            assert console_errors(browser) == []
            browser.get("about:blank")  # stop polling before the server goes
    finally:
        if run.poll() is None:
            run.terminate()
        run.wait(timeout=60)


def test_held_job_reachable_by_clicking_and_screenshots(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    db = tmp_path / "shots.db"
    build_database(db, run_id="mnist-search", evaluations=2500, per_generation=100, curves_every=3,
                   name="MNIST, paper settings")
    job_id = add_held_run(db, run_id=XSS_NAME)  # a run whose id itself is markup
    SHOTS.mkdir(parents=True, exist_ok=True)
    with Dashboard(db) as server:
        browser.get("about:blank")
        console_errors(browser)  # drop what an earlier test's page logged
        browser.get(server.url)
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#runs-table a.run-link")) == 2, what="runs")
        time.sleep(0.5)
        full_screenshot(browser, SHOTS / "runs.png")
        links = {a.text: a for a in browser.find_elements(By.CSS_SELECTOR, "#runs-table a.run-link")}
        assert set(links) == {"mnist-search", XSS_NAME}
        no_alert(browser)
        links[XSS_NAME].click()
        wait_for(lambda: text(browser, "#run-id") == XSS_NAME, what="the pool run's page")
        click(browser, "#held-jobs a.job-link")
        wait_for(lambda: text(browser, "#job-hold-reason") == HOLD_REASON, what="the hold reason")
        assert browser.current_url == server.url + f"job?id={job_id}"
        assert not browser.find_elements(By.CSS_SELECTOR, "main b")  # the <b> in the reason is text
        attempts = text(browser, "#job-attempts")  # every attempt with its reasons (issue #18)
        assert "4711.0" in attempts and f"held: {HOLD_REASON} (code 13/2)" in attempts, attempts
        full_screenshot(browser, SHOTS / "job.png")
        browser.get(server.url + "run?id=mnist-search")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#leaderboard svg.shape polyline"), what="shapes")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".uplot")) == 2, what="the two charts")
        time.sleep(0.5)
        full_screenshot(browser, SHOTS / "run.png")
        click(browser, "#leaderboard a.cand-link")
        wait_for(lambda: text(browser, "#keras"), what="the candidate page")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#tree li"), what="the tree")
        time.sleep(0.5)
        full_screenshot(browser, SHOTS / "candidate.png")
        browser.get(server.url + "evaluations")
        wait_for(lambda: "trainings in the database" in text(browser, "main"), what="the evaluations page")
        full_screenshot(browser, SHOTS / "evaluations.png")
        errors = [e for e in console_errors(browser) if "favicon" not in e]
        assert errors == [], errors
    for name in ("runs", "run", "candidate", "job"):
        assert (SHOTS / f"{name}.png").stat().st_size > 10_000


def test_a_steady_state_run_shows_its_progress_in_trainings(browser: Any, tmp_path: Path) -> None:
    """Issue 21: a steady-state run has no generations to count; its run page and the run list say
    'N of M' discovery trainings instead."""
    from tests.orch_helpers import glo

    db = tmp_path / "steady.db"
    cfg = write_config(tmp_path / "c.toml", population=6, generations=1, cma_iterations=1, per_job=1, in_flight=2)
    cfg.write_text(cfg.read_text().replace("[search.ga]\n", '[search.ga]\nmode = "steady-state"\n'
                                           "max_trainings = 12\nmax_in_flight = 3\n", 1))
    r = glo("run", str(cfg), "--db", str(db), "--run-id", "steady")
    assert r.returncode == 0, r.stderr
    browser.get("about:blank")
    console_errors(browser)  # forget what pages of earlier tests logged (a stopped server's refused polls)
    with Dashboard(db) as server:
        browser.get(server.url)
        wait_for(lambda: "12 of 12 trainings" in text(browser, "tr[data-run=steady]"), what="the run list's trainings")
        click(browser, "a.run-link")
        wait_for(lambda: "12 of 12" in text(browser, "#count-phase"), what="the run page's trainings")
        assert "steady-state" in text(browser, "#count-phase")
        assert console_errors(browser) == []
        browser.get("about:blank")
