"""The viewer's pages without a browser (werkzeug's test client): what they show, what they refuse, that
everything from a request is escaped and the security headers are there. The browser tests
(tests/integration/test_trace_viewer.py) drive the same pages in Chromium against the real stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from werkzeug.test import Client

from tests.unit.test_trace_store_search import CLIENT, CONSUMER, PRODUCER, SERVER, export, span, tid
from tracehop.traces.query import spans_from_otlp_json
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.query_app import create_query_app
from tracehop.traces.tree import build_tree, tree_lines
from tracehop.traces.viewer.security import CONTENT_SECURITY_POLICY

HOSTILE = "<script>alert(1)</script>\"'&"


@pytest.fixture
def client(tmp_path: Path):
    database = SpanDatabase(tmp_path / "traces.sqlite3")
    export(
        database,
        "gateway",
        span(1, 11, name="POST /api/users", kind=SERVER, duration_ms=30, **{"tracehop.tenant": "acme"}),
        span(1, 12, 11, name="POST", kind=CLIENT, start_ms=1, duration_ms=20),
        span(1, 14, 11, name="apply_async/send_welcome_email", kind=PRODUCER, start_ms=22),
        span(9, 91, name=f"GET {HOSTILE}", kind=SERVER, **{"user.name": HOSTILE}),
    )
    export(database, "users", span(1, 13, 12, name="POST /users", kind=SERVER, start_ms=2, duration_ms=15))
    export(database, "worker", span(1, 15, 14, name="run/send_welcome_email", kind=CONSUMER, start_ms=25))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    line = {
        "ts": "2027-01-15T08:00:00.026Z",
        "level": "INFO",
        "service": "worker",
        "trace_id": tid(9),
        "span_id": f"{91:016x}",
        "message": f"hello {HOSTILE}",
        "note": HOSTILE,
    }
    (log_dir / "worker.log").write_text(json.dumps(line) + "\n")
    app = create_query_app(database, log_dir, "http://127.0.0.1:9090")
    yield Client(app)
    database.close()


def test_every_page_forbids_inline_scripts(client):
    for path in ("/", f"/trace/{tid(1)}", "/services", "/search.json", "/api/v3/services", "/nowhere"):
        response = client.get(path)
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert (
            "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        )
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_hostile_names_values_and_log_lines_are_escaped(client):
    page = client.get(f"/trace/{tid(9)}").get_data(as_text=True)
    detail = client.get(f"/trace/{tid(9)}/span/{91:016x}").get_data(as_text=True)
    assert "<script>alert(1)" not in page + detail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page  # the name, the log line
    assert page.count("&lt;script&gt;alert(1)") >= 3
    assert detail.count("&lt;script&gt;alert(1)") >= 2  # the name, the attribute
    # The panel is fetched when a row is clicked, or rendered into the page with ?span=<id>.
    assert f'id="detail-{91:016x}"' not in page and f'id="detail-{91:016x}"' in detail
    opened = client.get(f"/trace/{tid(9)}?span={91:016x}").get_data(as_text=True)
    assert f'id="detail-{91:016x}"' in opened and "<script>alert(1)" not in opened
    assert client.get(f"/trace/{tid(9)}/span/{'0' * 16}").status_code == 404
    results = client.get("/?tags=user.name%3D%22%3Cscript%3Ealert(1)%3C/script%3E%22").get_data(as_text=True)
    assert "<script>alert" not in results


def test_trace_page_rows_are_the_tree_make_trace_prints(client):
    page = client.get(f"/trace/{tid(1)}").get_data(as_text=True)
    otlp = client.get(f"/api/v3/traces/{tid(1)}").get_json()
    expected = [line.text for line in tree_lines(build_tree(spans_from_otlp_json(otlp)))]
    ids = [line.node.span.span_id for line in tree_lines(build_tree(spans_from_otlp_json(otlp)))]
    positions = [page.index(f'id="span-{span_id}"') for span_id in ids]
    assert positions == sorted(positions) and len(expected) == 5


def test_search_by_tag_and_its_json_twin(client):
    found = client.get("/search.json?tags=tracehop.tenant%3Dacme&lookback=all").get_json()
    assert [trace["traceId"] for trace in found["traces"]] == [tid(1)]
    assert found["traces"][0]["services"] == {"gateway": 3, "users": 1, "worker": 1}
    assert found["traces"][0]["root"] == {"service": "gateway", "kind": "SERVER", "name": "POST /api/users"}
    page = client.get("/?tags=tracehop.tenant%3Dacme&lookback=all").get_data(as_text=True)
    assert f'href="/trace/{tid(1)}"' in page and f'href="/trace/{tid(9)}"' not in page
    # Over several results, Jaeger's scatter plot: a dot per trace, linking to it.
    everything = client.get("/?lookback=all").get_data(as_text=True)
    assert 'id="scatter"' in everything and 'id="scatter"' not in page
    scatter = everything[
        everything.index('id="scatter"') : everything.index("</svg>", everything.index('id="scatter"'))
    ]
    assert scatter.count("<circle") == 2 and f'<a href="/trace/{tid(9)}">' in scatter


def test_bad_search_input_is_a_clear_400(client):
    for query, words in (
        ("lookback=3d", "lookback"),
        ("limit=0", "limit"),
        ("minDuration=fast", "minDuration"),
        ("tags=novalue", "key=value"),
        ("tags=a%3D%22open", "quotes"),
    ):
        response = client.get(f"/search.json?{query}")
        assert response.status_code == 400, query
        assert response.get_json()["error"] == "invalid_search" and words in response.get_json()["message"]
        page = client.get(f"/?{query}")
        assert page.status_code == 400 and words in page.get_data(as_text=True)
    # What was typed stays in the form, to be corrected.
    page = client.get("/?tags=novalue&minDuration=fast").get_data(as_text=True)
    assert 'value="novalue"' in page and 'value="fast"' in page


def test_trace_ids_pasted_as_traceparent_or_traceresponse_open_the_trace(client):
    traceparent = f"00-{tid(1)}-{11:016x}-01"
    for pasted in (traceparent, f"traceresponse: {traceparent}", tid(1).upper(), f'"{traceparent}"'):
        response = client.get("/trace", query_string={"id": pasted})
        assert response.status_code == 303 and response.headers["Location"] == f"/trace/{tid(1)}", pasted
    response = client.get(f"/trace?id={traceparent}")
    assert response.status_code == 303 and response.headers["Location"] == f"/trace/{tid(1)}"
    refused = client.get("/trace?id=%3Cb%3Enonsense")
    assert refused.status_code == 400 and "is not a trace id" in refused.get_data(as_text=True)
    assert "<b>nonsense" not in refused.get_data(as_text=True)
    assert client.get(f"/trace/{'f' * 32}").status_code == 404
    assert client.get("/trace/not-hex").status_code == 400


def test_service_map_json(client):
    service_map = client.get("/services.json?lookback=all").get_json()
    assert {(e["parent"], e["child"], e["callCount"], e["errorCount"]) for e in service_map["edges"]} == {
        ("gateway", "users", 1, 0),
        ("gateway", "worker", 1, 0),
    }
    page = client.get("/services?lookback=all").get_data(as_text=True)
    assert 'href="/?service=users&amp;lookback=all&amp;parent=gateway"' in page


def test_prometheus_links_for_services_with_metrics(client):
    page = client.get(f"/trace/{tid(1)}").get_data(as_text=True)
    assert page.count('class="metrics-link" href="http://127.0.0.1:9090/graph?g0.expr=') == 3
    assert "tracehop_job_duration_seconds_bucket" in page.replace("%5F", "_")


def test_query_api_answers_beside_the_viewer_are_jaegers(client):
    response = client.get("/api/v3/services")
    assert response.get_data() == b'{"services":["gateway","users","worker"]}'
    assert response.headers["Content-Type"] == "application/json"
    # No route: Go's plain 404, as Jaeger's /api/ fallback answers (not the viewer's page).
    missing = client.get("/api/v3/nothing")
    assert missing.status_code == 404
    assert missing.get_data() == b"404 page not found\n"
    assert missing.headers["Content-Type"] == "text/plain; charset=utf-8"
