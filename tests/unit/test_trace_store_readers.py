"""The trace store answers queries beside its writer, prunes in chunks, and starts light (issue 14).

A store restarted after a crash used to answer nothing until every service's retried backlog and its first
retention prune had been written: queries, ingest and pruning shared one SQLite connection and its lock.
Queries now read on connections of their own (SQLite's WAL lets them run beside the writer), the prune
goes chunk by chunk, and starting the store imports neither Flask nor the CLI's tooling. How fast it comes
back is measured by `python -m tools.store_restart` and tests/integration/test_store_recovery.py.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import requests
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.conftest import REPO_ROOT
from tests.unit.test_trace_store_search import NOW, export, find, span, tid
from tests.waiting import eventually
from tracehop.traces.store import database as database_module
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.retention import Retention
from tracehop.traces.store.server import serve_in_thread

MS = 1_000_000


def _export_body(trace: int, span_id: int) -> bytes:
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "users"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": tid(trace),
                                "spanId": f"{span_id:016x}",
                                "name": f"span {span_id}",
                                "kind": 2,
                                "startTimeUnixNano": str(NOW),
                                "endTimeUnixNano": str(NOW + MS),
                            }
                        ]
                    }
                ],
            }
        ]
    }
    return json.dumps(document).encode()


def test_queries_are_answered_while_the_writer_is_held_up(tmp_path: Path, http: requests.Session):
    """An export stuck in its write transaction (here: another writer holds SQLite's write lock, as a
    long ingest or prune would) does not hold up the query API: it answers from what was committed, while
    the export still waits; the export then completes."""
    path = tmp_path / "traces.sqlite3"
    with serve_in_thread(db_path=path) as store:
        post = {"headers": {"Content-Type": "application/json"}, "timeout": 30}
        assert http.post(store.traces_url, data=_export_body(1, 11), **post).status_code == 200
        other_writer = sqlite3.connect(path, isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")  # SQLite's write lock, held until ROLLBACK
        export_status: list[int] = []
        export = threading.Thread(
            target=lambda: export_status.append(
                http.post(store.traces_url, data=_export_body(2, 21), **post).status_code
            )
        )
        export.start()
        try:
            # The store's writer has taken its lock and waits for SQLite's (busy timeout, 5 s).
            eventually(lambda: store.database._lock.locked(), 10, "the export waiting to write")
            services = requests.get(f"{store.query_url}/api/v3/services", timeout=30)
            trace = requests.get(f"{store.query_url}/api/v3/traces/{tid(1)}", timeout=30)
            assert export.is_alive(), "the query was answered only after the export (behind the writer)"
            assert services.json() == {"services": ["users"]}
            assert trace.status_code == 200
        finally:
            other_writer.execute("ROLLBACK")
            other_writer.close()
            export.join(timeout=30)
        assert export_status == [200]
        assert requests.get(f"{store.query_url}/api/v3/traces/{tid(2)}", timeout=30).status_code == 200


def test_a_re_sent_span_leaves_no_attribute_rows_of_its_earlier_copy(tmp_path: Path):
    database = SpanDatabase(tmp_path / "traces.sqlite3")
    try:
        export(database, "users", span(1, 11, name="first", **{"tracehop.tenant": "acme"}))
        export(database, "users", span(1, 11, name="again", **{"tracehop.tenant": "zeta"}))
        # Twice in one request: the copy that came last is kept.
        export(
            database,
            "users",
            span(2, 21, name="first", **{"tracehop.tenant": "acme"}),
            span(2, 21, name="again", **{"tracehop.tenant": "zeta"}),
        )
        for trace in (1, 2):
            (stored,) = database.trace(tid(trace))
            assert SpanProto.FromString(stored.body).name == "again"
        assert find(database, attributes=(("tracehop.tenant", "zeta"),)) == [tid(2), tid(1)]
        assert find(database, attributes=(("tracehop.tenant", "acme"),)) == []
        assert _orphan_attribute_rows(tmp_path / "traces.sqlite3") == 0
    finally:
        database.close()


def test_a_prune_of_many_chunks_removes_whole_traces_and_their_rows(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(database_module, "PRUNE_CHUNK_TRACES", 3)
    path = tmp_path / "traces.sqlite3"
    database = SpanDatabase(path)
    try:
        # Traces 1-10 started an hour apart, two spans each; trace 7's second span is recent.
        for number in range(1, 11):
            old = span(number, number * 10 + 1, start_ms=number, **{"tracehop.tenant": f"t{number}"})
            second = span(number, number * 10 + 2, number * 10 + 1, start_ms=number)
            for item in (old, second):
                item.start_time_unix_nano -= (11 - number) * 3600 * 10**9
            if number == 7:
                second.start_time_unix_nano = NOW
            export(database, "users", old, second)
        deleted = database.prune(Retention(max_age_ns=int(4.5 * 3600 * 10**9), max_spans=0), NOW)
        # Traces 1-6 are over 4.5 h old (7 keeps its recent span): 6 traces, 12 spans, in 3 chunks.
        assert deleted == 12
        assert sorted(find(database)) == sorted(tid(n) for n in range(7, 11))
        assert find(database, attributes=(("tracehop.tenant", "t3"),)) == []
        assert find(database, attributes=(("tracehop.tenant", "t7"),)) == [tid(7)]
        assert _orphan_attribute_rows(path) == 0
        # By count: 8 spans left, over 5: the 4 newest spans (90% of 5) are kept with their whole traces
        # (7's recent one, 10's two, 9's first, so 9's second too); trace 8 goes.
        assert database.prune(Retention(max_age_ns=0, max_spans=5), NOW) == 2
        assert sorted(find(database)) == sorted([tid(7), tid(9), tid(10)])
        assert _orphan_attribute_rows(path) == 0
    finally:
        database.close()


def _orphan_attribute_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (left,) = connection.execute(
            "SELECT COUNT(*) FROM span_attributes WHERE span_rowid NOT IN (SELECT rowid FROM spans)"
        ).fetchone()
        (traces_left,) = connection.execute(
            "SELECT COUNT(*) FROM traces WHERE trace_id NOT IN (SELECT trace_id FROM spans)"
        ).fetchone()
    return left + traces_left


def test_starting_the_store_imports_neither_flask_nor_the_clis_tooling():
    """What `python -m tracehop trace-store` imports before it serves: the query API answers without the
    viewer's Flask app, and the CLI imports each command's modules when that command runs."""
    script = (
        "import sys, tracehop.cli, tracehop.traces.store.server; "
        "print(sorted(m for m in ('flask', 'jinja2', 'requests', 'rich', 'yaml', 'tracehop.stack.runner',"
        " 'tracehop.traffic', 'tracehop.traces.viewer.app') if m in sys.modules))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert imported == "[]"


def test_the_viewer_is_built_at_its_first_page(tmp_path: Path, http: requests.Session):
    with serve_in_thread(db_path=tmp_path / "traces.sqlite3") as store:
        assert http.get(f"{store.query_url}/api/v3/services", timeout=30).json() == {}
        page = http.get(f"{store.query_url}/", timeout=30)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        api = http.get(f"{store.query_url}/api/v3/services", timeout=30)
        assert api.headers["Content-Security-Policy"] == page.headers["Content-Security-Policy"]
