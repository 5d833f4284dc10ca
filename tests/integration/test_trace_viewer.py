"""The trace viewer in a real browser (Debian's Chromium through Playwright) against the real stack.

Each test makes its own requests through the gateway, waits until their traces are complete in the trace
store, then reads them the way a person does: on http://<query port>/. The pages make no request outside
their own origin (checked after every test) and run no script a request smuggled in.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import REPO_ROOT
from tests.integration.browser import Viewer, browser, open_viewer  # noqa: F401 - `browser` is a fixture
from tests.integration.expected_trees import CREATE_USER_SPANS, CREATE_USER_TREE, REPORT_TREE
from tests.integration.stack import RunningStack
from tracehop.traces.tree import BRANCH, LAST_BRANCH

pytestmark = pytest.mark.integration

REPORT_SPANS = 10
CHORD_SPANS = 9  # SERVER, 3 x (PRODUCER + CONSUMER), the callback's PRODUCER + CONSUMER
# A terminal waterfall line: tree prefix, service, kind, name, then `  │ ` and the duration columns.
TERMINAL_LINE = re.compile(r"^((?:[│ ]  )*(?:[├└]─ )?)(\S+) {2,}([A-Z]+) {2,}(.+?)\s*$")


@pytest.fixture
def viewer(browser: Browser, running_stack: RunningStack) -> Iterator[Viewer]:  # noqa: F811
    """A tab on the stack's viewer; after the test, it must have made no request outside its origin, no
    script from the data may have opened a dialog, and the page's own script must not have failed."""
    with open_viewer(browser, running_stack.stack.urls["query"]) as viewer:
        yield viewer
    assert viewer.foreign_requests() == [], "the page made requests outside its own origin"
    assert viewer.dialogs == [], "a script from the data ran"
    assert viewer.script_errors == [], "viewer.js failed"


def create_user(stack: RunningStack, name: str = "Ada Lovelace", baggage: str | None = None) -> dict:
    response = stack.post_user(name=name, headers={"baggage": baggage} if baggage else {})
    assert response.status_code == 201, response.text
    return response.json()


def row(page: Page, name: str):
    return page.locator(".span-row").filter(
        has=page.locator(".op", has_text=re.compile(f"^{re.escape(name)}$"))
    )


def page_rows(page: Page) -> list[tuple[str, str, str, str]]:
    return [
        tuple(item)
        for item in page.eval_on_selector_all(
            ".span-row",
            """rows => rows.map(row => ['.tree-prefix', '.svc', '.kind', '.op']
                 .map(part => row.querySelector(part).textContent))""",
        )
    ]


# ------------------------------------------------------------------------------------------------ search


def test_search_by_tenant_finds_the_trace(running_stack: RunningStack, viewer: Viewer):
    tenant = f"viewer-{uuid.uuid4().hex[:8]}"
    trace_id = create_user(running_stack, baggage=f"tracehop.tenant={tenant}")["trace_id"]
    running_stack.assert_tree(trace_id, CREATE_USER_TREE)

    page = viewer.open("/")
    page.fill("input[name=tags]", f"tracehop.tenant={tenant}")
    page.select_option("select[name=lookback]", "15m")
    page.click("button:has-text('Find traces')")

    # The query lives in the URL, and the one trace is found with its services and span counts.
    expect(page).to_have_url(re.compile(rf"tags=tracehop\.tenant%3D{tenant}.*lookback=15m"))
    results = page.locator(".trace-result")
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("data-trace-id", trace_id)
    expect(results.first.locator(".result-title")).to_have_text(re.compile(r"gateway: POST /api/users"))
    expect(results.first.locator(".result-spans")).to_have_text(f"{CREATE_USER_SPANS} spans")
    expect(results.first.locator(".badge")).to_have_text(["gateway (3)", "users (6)", "worker (2)"])

    # Back and forward work: the results page is a URL like any other.
    page.go_back()
    expect(page).to_have_url(viewer.base_url + "/")
    page.go_forward()
    expect(page).to_have_url(re.compile(rf"tags=tracehop\.tenant%3D{tenant}"))
    expect(page.locator(".trace-result")).to_have_count(1)
    page.click(f".trace-result[data-trace-id='{trace_id}'] a.result-link")
    expect(page).to_have_url(re.compile(f"/trace/{trace_id}$"))


# ------------------------------------------------------------------------------------------------- trace


def test_trace_page_shows_the_tree_make_trace_prints_row_for_row(running_stack: RunningStack, viewer: Viewer):
    trace_id = create_user(running_stack)["trace_id"]
    running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    query_url = running_stack.stack.urls["query"]
    printed = subprocess.run(
        [sys.executable, "-m", "tracehop", "trace", trace_id, "--query-url", query_url, "--wait", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "COLUMNS": "240", "NO_COLOR": "1"},
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    terminal = [match.groups() for line in lines if (match := TERMINAL_LINE.match(line.rsplit("  │ ", 1)[0]))]
    assert len(terminal) == CREATE_USER_SPANS, printed.stdout
    # `make trace` says where to see the same trace in a browser.
    assert f"In a browser: {query_url}/trace/{trace_id}" in lines

    page = viewer.open(f"/trace/{trace_id}")
    assert page_rows(page) == terminal
    expect(page.locator("#trace-spans")).to_have_text(str(CREATE_USER_SPANS))
    expect(page.locator("#trace-depth")).to_have_text("5")
    expect(page.locator("#trace-services")).to_have_text("3")

    # Subtrees collapse and expand: the gateway's CLIENT span holds the whole users request.
    client = page.locator(".span-row").nth(1)
    assert page_rows(page)[1][0] in (BRANCH, LAST_BRANCH)
    client.locator(".toggle").click()
    expect(page.locator(".span-row:visible")).to_have_count(CREATE_USER_SPANS - 6)
    client.locator(".toggle").click()
    expect(page.locator(".span-row:visible")).to_have_count(CREATE_USER_SPANS)


def test_clicking_the_users_server_span_shows_its_attributes(running_stack: RunningStack, viewer: Viewer):
    trace_id = create_user(running_stack)["trace_id"]
    running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    page = viewer.open(f"/trace/{trace_id}")
    users_server = row(page, "POST /users")
    span_id = users_server.get_attribute("data-span-id")
    detail = page.locator(f"#detail-{span_id}")
    expect(detail).to_be_hidden()

    users_server.click()

    expect(detail).to_be_visible()
    route = detail.locator(".attributes tr").filter(
        has=page.locator("th", has_text=re.compile("^http.route$"))
    )
    expect(route.locator("td")).to_have_text("/users")
    expect(detail.locator(".span-facts")).to_contain_text("SERVER")
    expect(page).to_have_url(re.compile(f"span={span_id}"))
    # The OTLP JSON button gives what the query API holds for this trace.
    expect(page.locator("#otlp-json")).to_have_attribute("href", f"/api/v3/traces/{trace_id}")


def test_chord_callback_links_lead_to_the_header_task_spans(running_stack: RunningStack, viewer: Viewer):
    response = running_stack.http.post(
        f"{running_stack.gateway}/api/workflows/wordcount",
        json={"text": "one two three four five six", "parts": 3},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    running_stack.wait_for_spans(body["trace_id"], CHORD_SPANS)

    page = viewer.open(f"/trace/{body['trace_id']}")
    headers = page.locator(".span-row").filter(has=page.locator(".op", has_text="run/count_words"))
    expect(headers).to_have_count(3)
    header_ids = sorted(headers.evaluate_all("rows => rows.map(row => row.dataset.spanId)"))
    row(page, "run/sum_counts").click()
    links = page.locator(".span-detail:visible a.span-link")
    expect(links).to_have_count(3)
    assert sorted(links.evaluate_all("links => links.map(link => link.dataset.spanId)")) == header_ids

    for header_id in header_ids:
        row(page, "run/sum_counts").scroll_into_view_if_needed()
        if not page.locator(".span-detail:visible a.span-link").count():
            row(page, "run/sum_counts").click()
        page.click(f".span-detail:visible a.span-link[data-span-id='{header_id}']")
        expect(page.locator(f"#span-{header_id}")).to_have_class(re.compile(r"\bselected\b"))
        expect(page.locator(f"#detail-{header_id}")).to_be_visible()
        expect(page.locator(f"#detail-{header_id} h3")).to_contain_text("run/count_words")


def test_log_lines_are_tied_to_their_spans(running_stack: RunningStack, viewer: Viewer):
    trace_id = create_user(running_stack)["trace_id"]
    running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    assert running_stack.wait_for_log_lines(
        "worker",
        lambda line: line.get("trace_id") == trace_id and line["message"] == "welcome e-mail delivered",
    )
    page = viewer.open(f"/trace/{trace_id}")
    delivered = page.locator(".log-line").filter(
        has=page.locator(".message", has_text="welcome e-mail delivered")
    )
    expect(delivered).to_have_count(1)
    expect(delivered.locator("td").nth(2)).to_have_text("worker")
    deliver_span = row(page, "deliver_welcome_email")
    span_id = deliver_span.get_attribute("data-span-id")
    expect(delivered).to_have_attribute("data-span-id", span_id)

    # Select the line: its span is selected and opened. Select the span: its lines are highlighted.
    delivered.click()
    expect(deliver_span).to_have_class(re.compile(r"\bselected\b"))
    expect(page.locator(f"#detail-{span_id}")).to_be_visible()
    row(page, "POST /api/users").click()
    expect(delivered).not_to_have_class(re.compile("for-selected"))
    deliver_span.click()
    expect(delivered).to_have_class(re.compile(r"\bfor-selected\b"))
    # Every line of this trace in the worker's log is on the page, as `make logs` would print them.
    expect(page.locator(".log-line")).to_have_count(len(_trace_log_lines(running_stack, trace_id)))


def _trace_log_lines(stack: RunningStack, trace_id: str) -> list[dict]:
    return [
        line
        for service in ("gateway", "users", "worker")
        for line in stack.log_lines(service)
        if line.get("trace_id") == trace_id
    ]


# ---------------------------------------------------------------------------------------------- services


def test_service_map_edges_count_the_requests_sent(running_stack: RunningStack, viewer: Viewer):
    tenant = f"map-{uuid.uuid4().hex[:8]}"
    baggage = f"tracehop.tenant={tenant}"
    users = [create_user(running_stack, baggage=baggage) for _ in range(2)]
    report = running_stack.http.post(
        f"{running_stack.gateway}/api/users/{users[0]['user']['id']}/report",
        headers={"baggage": baggage},
        timeout=10,
    ).json()
    for user in users:
        running_stack.assert_tree(user["trace_id"], CREATE_USER_TREE)
    assert running_stack.wait_for_job(report["job_id"])["state"] == "SUCCESS"
    running_stack.assert_tree(report["trace_id"], REPORT_TREE)

    query = f"tags={quote(baggage)}&lookback=15m"
    service_map = running_stack.http.get(f"{running_stack.stack.urls['query']}/services.json?{query}").json()
    edges = {(e["parent"], e["child"]): (e["callCount"], e["errorCount"]) for e in service_map["edges"]}
    # 2 creations call users and queue a welcome e-mail; the report is queued and calls users from the worker.
    assert edges == {("gateway", "users"): (2, 0), ("gateway", "worker"): (3, 0), ("worker", "users"): (1, 0)}

    page = viewer.open(f"/services?{query}")
    drawn = page.locator("svg#service-map a.edge").evaluate_all(
        "edges => edges.map(e => [e.dataset.parent, e.dataset.child, +e.dataset.calls, +e.dataset.errors])"
    )
    assert {(parent, child): (calls, errors) for parent, child, calls, errors in drawn} == edges
    expect(page.locator("svg#service-map a.node")).to_have_count(3)

    # An edge leads to the traces that contain it.
    page.locator("svg#service-map a.edge[data-parent='gateway'][data-child='users'] text").click()
    expect(page).to_have_url(re.compile("parent=gateway"))
    found = page.locator(".trace-result").evaluate_all("items => items.map(item => item.dataset.traceId)")
    assert sorted(found) == sorted(user["trace_id"] for user in users)


# -------------------------------------------------------------------------------------------- safety


def test_hostile_names_render_as_text_and_run_no_script(running_stack: RunningStack, viewer: Viewer):
    script = "<script>alert(1)</script>"
    image = "<img/src/onerror=alert(2)>"
    # Baggage octets allow < > ( ) / =; the quote travels percent-encoded and arrives as a quote.
    baggage = f"tracehop.tenant={script}%22',tracehop.note={image}"
    trace_id = create_user(running_stack, name=f'{script} "O\'Brien"', baggage=baggage)["trace_id"]
    spans = running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    assert spans[0].span.attributes["tracehop.tenant"] == f"{script}\"'"

    page = viewer.open(f"/trace/{trace_id}")
    for index in range(CREATE_USER_SPANS):
        page.locator(".span-row").nth(index).click()
        expect(page.locator(".span-detail:visible")).to_have_count(1)
    detail = page.locator(".span-detail:visible")
    tenant = detail.locator(".attributes tr").filter(has=page.locator("th", has_text="tracehop.tenant"))
    expect(tenant.locator("td")).to_have_text(f"{script}\"'")
    note = detail.locator(".attributes tr").filter(has=page.locator("th", has_text="tracehop.note"))
    expect(note.locator("td")).to_have_text(image)
    assert page.locator("script:not([src])").count() == 0
    assert page.locator(".span-detail img").count() == 0

    results = viewer.open(f"/?tags={quote('tracehop.note=' + image)}&lookback=15m")
    expect(results.locator(".trace-result")).to_have_count(1)
    expect(results.locator("input[name=tags]")).to_have_value(f"tracehop.note={image}")


def test_the_pages_request_nothing_outside_their_own_origin(running_stack: RunningStack, viewer: Viewer):
    trace_id = create_user(running_stack)["trace_id"]
    running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    for path in ("/", "/?service=gateway", f"/trace/{trace_id}", "/services"):
        viewer.open(path)
        viewer.page.wait_for_load_state("networkidle")
    viewer.page.select_option("select[name=lookback]", "all")  # on the map page: nothing is fetched
    viewer.open("/")
    viewer.page.select_option("#service-select", "users")  # fills the operations from /api/v3/operations
    expect(viewer.page.locator("#operation-select option")).not_to_have_count(1)
    assert any("/static/viewer.css" in url for url in viewer.requests)
    assert any("/api/v3/operations?service=users" in url for url in viewer.requests)
    assert viewer.foreign_requests() == []
