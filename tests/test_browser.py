"""The monitoring pages in a real browser: headless Chromium, a live server, a real worker.

Chromium is Debian's package (``apt-get install -y chromium``), driven by Playwright's Python
package; the live server and the worker share the test database, so what the worker records
shows on the pages. Screenshots go to ``artifacts/screenshots/`` at the repository root.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from django.core.cache import cache
from django.urls import reverse

from jobs.models import JobRecord, Message, States
from project.demo import jobs as demo
from tests.conftest import IN_CI, ROOT, wait_for
from tests.jobs_app import jobs as testjobs

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
WORKER = "browser@e2e"
#: Milliseconds the browser waits for something to show: a few dashboard polls.
SHOWS_WITHIN = 15_000


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(what)
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _missing(f"Chromium is not installed at {CHROMIUM}; install it with: "
                 "apt-get update && apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed; install it with: pip install -e '.[test]'")
    # Playwright's sync API keeps an event loop in this thread, which Django takes for async
    # code; the database calls of these tests and their fixtures are plain synchronous ones.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server, admin_user):
    """A page of the live server, logged in as a superuser."""
    cache.clear()  # counts of past minutes that other tests left
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280,
                                                                       "height": 900})
    context.set_default_timeout(SHOWS_WITHIN)
    page = context.new_page()
    page.goto(reverse("admin:login"))
    page.fill("#id_username", admin_user.username)
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.wait_for_url(re.compile(r"/admin/$"))
    yield page
    context.close()


@pytest.fixture
def worker(start_worker):
    return start_worker("django://", "-c", "2", "--hostname", WORKER)


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def open_job(page, job_id: str, state: str) -> None:
    """Open a job's page, again until it shows ``state`` (the page itself doesn't poll)."""
    deadline = time.monotonic() + SHOWS_WITHIN / 1000
    while True:
        page.goto(reverse("admin:jobs_jobrecord_job", args=[job_id]))
        badge = page.locator(".field-state_label .jobs-badge")
        if badge.count() and badge.inner_text() == state:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never showed {state}")
        time.sleep(0.3)


def test_the_dashboard_shows_the_worker_and_counts_a_job_as_it_finishes(page, worker):
    from playwright.sync_api import expect

    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#jobs-workers")).to_contain_text(WORKER)
    succeeded = page.locator("#jobs-total-succeeded")
    expect(succeeded).to_have_text("0")
    page.evaluate("window.notReloaded = true")

    assert demo.add.delay(2, 3).get(timeout=20) == 5

    expect(succeeded).to_have_text("1")
    expect(page.locator("#jobs-slowest")).to_contain_text("project.demo.jobs.add")
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "dashboard")


def test_a_failed_job_retried_from_its_page_succeeds(page, worker):
    from playwright.sync_api import expect

    # Cut short by a per-call time limit; run again from the admin without it.
    failed = demo.sleep_then_add.apply_async((1, 20, 22), soft_time_limit=0.2)
    failed.get(timeout=20, propagate=False)
    assert failed.state == States.FAILURE

    open_job(page, failed.id, "FAILURE")
    expect(page.locator(".field-traceback_block pre")).to_contain_text("SoftTimeLimitExceeded")
    screenshot(page, "job-failed")
    page.get_by_role("button", name="Retry").click()

    notice = page.locator(".messagelist .success")
    expect(notice).to_contain_text(f"Retried: {failed.id} as")
    retried = notice.get_by_role("link").inner_text()
    open_job(page, retried, "SUCCESS")
    expect(page.locator(".field-result_block pre")).to_have_text("42")
    expect(page.locator(".field-parent_link")).to_contain_text(failed.id)
    screenshot(page, "job-retried")


def test_a_delayed_job_revoked_from_its_list_never_runs(page, worker):
    from playwright.sync_api import expect

    delayed = demo.add.apply_async((1, 1), countdown=5)

    page.goto(reverse("admin:jobs_message_changelist") + "?status=delayed")
    row = page.locator("#result_list tbody tr", has_text=delayed.id)
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "revoke")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist .success")).to_contain_text(f"Revoked: {delayed.id}")
    assert JobRecord.objects.get(job_id=delayed.id).state == States.REVOKED

    wait_for(lambda: not Message.objects.exists(), timeout=20,
             message="the worker never took the delayed job when it was due")
    row = JobRecord.objects.get(job_id=delayed.id)
    assert (row.state, row.date_started, row.result["exc_type"]) == (
        States.REVOKED, None, "JobRevoked")
    assert f"[{delayed.id}] succeeded" not in worker.output
    open_job(page, delayed.id, "REVOKED")
    expect(page.locator(".field-result_block pre")).to_contain_text("JobRevoked")


def test_a_job_in_progress_shows_a_live_bar_on_the_dashboard_and_its_page(page, worker,
                                                                          tmp_path):
    from playwright.sync_api import expect

    handle = testjobs.step_by_step.delay(str(tmp_path), 4)
    wait_for(lambda: handle.state == "PROGRESS", message="no progress reported")

    page.get_by_role("link", name="Dashboard").click()
    running = page.locator("#jobs-running")
    expect(running).to_contain_text("0 / 4 (0 %)")
    expect(page.locator("#jobs-total-running")).to_have_text("1")
    page.evaluate("window.notReloaded = true")
    (tmp_path / "go-0").touch()
    expect(running).to_contain_text("1 / 4 (25 %)")
    expect(running.locator(".jobs-progress > span")).to_have_attribute("style", "width:25%")
    assert page.evaluate("window.notReloaded") is True
    screenshot(page, "dashboard-progress")

    open_job(page, handle.id, "PROGRESS")
    bar = page.locator("#jobs-job-progress")
    expect(bar).to_contain_text("1 / 4 (25 %)")
    page.evaluate("window.notReloaded = true")
    (tmp_path / "go-1").touch()
    expect(bar).to_contain_text("2 / 4 (50 %)")
    expect(bar.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "2")
    screenshot(page, "job-progress")
    (tmp_path / "go-2").touch()
    (tmp_path / "go-3").touch()
    expect(page.locator(".field-state_label .jobs-badge")).to_have_text("SUCCESS")
    expect(bar).to_contain_text("finished")
    assert page.evaluate("window.notReloaded") is True


def test_the_results_list_reads_at_a_glance_at_1400_pixels(page, worker):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 1400, "height": 900})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    handles = [demo.add.delay(i, i) for i in range(3)]
    failed = demo.fail.delay("bad input")
    for handle in handles:
        handle.get(timeout=20)
    failed.get(timeout=20, propagate=False)

    page.goto(reverse("admin:jobs_jobrecord_changelist"))
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(4)
    short = page.locator(f"#result_list a.jobs-id[title='{failed.id}']")  # whole id on hover
    assert short.bounding_box()["width"] < 100  # a short id on screen
    one_line = page.evaluate("parseFloat(getComputedStyle(document.body).lineHeight) || 20")
    for i in range(4):
        assert rows.nth(i).bounding_box()["height"] < 1.5 * one_line + 16  # one line each
    results = page.locator("#changelist .results")
    assert page.evaluate("(el) => el.scrollWidth <= el.clientWidth", results.element_handle())
    assert (results.bounding_box()["x"] + results.bounding_box()["width"]
            <= page.locator("#changelist-filter").bounding_box()["x"] + 1)
    screenshot(page, "results-list-1400")

    page.get_by_role("button", name=f"Copy job id {failed.id}").click()
    wait_for(lambda: page.evaluate("navigator.clipboard.readText()") == failed.id, timeout=5,
             message="the whole id was not copied")
    short.click()
    expect(page.locator(".field-job_id .readonly")).to_have_text(failed.id)


def test_a_queue_paused_from_the_dashboard_runs_nothing_until_resumed(page, worker):
    from playwright.sync_api import expect

    from tests.jobs_app import jobs as testjobs

    page.goto(reverse("admin:jobs_jobrecord_dashboard"))
    page.locator("#jobs-queues tr", has_text="other").get_by_role("button", name="Pause").click()
    notice = page.locator(".messagelist .success")
    expect(notice).to_have_text(f"Pause other: {WORKER}: no longer consuming from other")
    paused = testjobs.on_other_queue.delay(1)
    assert demo.add.delay(1, 1).get(timeout=20) == 2
    assert paused.state == States.PENDING
    screenshot(page, "queue-paused")

    page.locator("#jobs-queues tr", has_text="other").get_by_role("button", name="Resume").click()
    expect(notice).to_have_text(f"Resume other: {WORKER}: consuming from other")
    assert paused.get(timeout=20) == 2
