"""The tail tool (tracehop/bench/tail.py): its start-up probe in a real Python process, and its analysis.

The probe must record collections from the first import on and wrap tracehop's exporter once that module
has finished importing, in a process that never mentions the probe; the analysis must say which slow
requests overlapped which stall.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tracehop.bench.tail import PROBE_DIR, Window, analyse
from tracehop.bench.tail_events import ClientRequest, ProcessEvents, Served, break_down, read_events

REPO_ROOT = Path(__file__).resolve().parents[2]

# A process that exports one batch of 40 spans through tracehop's exporter to a local HTTP server that
# accepts anything, and runs a full collection and a young one of its own.
EXPORTING_PROCESS = textwrap.dedent(
    """
    import gc, http.server, threading
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from services.telemetry.otlp_json_exporter import OTLPJsonSpanExporter

    class Accept(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gc.collect()
    gc.collect(0)
    provider = TracerProvider()
    exporter = OTLPJsonSpanExporter(f"http://127.0.0.1:{server.server_port}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    for index in range(40):
        provider.get_tracer("t").start_span(f"s{index}").end()
    assert provider.force_flush(10_000)
    provider.shutdown()
    """
)


def test_probe_records_collections_and_the_exporters_stretches(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(PROBE_DIR),
        "TRACEHOP_TAIL_PROBE_DIR": str(tmp_path),
        "OTEL_SERVICE_NAME": "probed",
    }
    subprocess.run([sys.executable, "-c", EXPORTING_PROCESS], cwd=REPO_ROOT, env=env, check=True, timeout=60)
    [process] = read_events(tmp_path)
    assert process.service == "probed"
    generations = {gc[3] for gc in process.gcs}
    assert {0, 2} <= generations, process.gcs
    assert all(gc[1] >= gc[2] * 0.5 and gc[2] > 0 for gc in process.gcs if gc[3] == 2)
    [export] = process.exports
    start, wall, cpu, spans, longest = export
    assert spans == 40
    # 40 spans: one pause after the 32nd, so the longest stretch is part of the encoding, not all of it.
    assert 0 < longest < cpu <= wall * 2, export


def _window(requests: list[tuple[int, int, str]]) -> Window:
    client = [
        ClientRequest(i, kind, due, due, due + latency, 0) for i, (due, latency, kind) in enumerate(requests)
    ]
    return Window("traced", 0, 10**9, client, {"users": 0.2}, (1.0, 1.0, 1.0))


def test_analysis_names_the_stall_the_slowest_requests_overlapped() -> None:
    ms = 10**6
    # 200 requests, one every 5 ms, taking 2 ms; two stalled behind a 40 ms full collection in users.
    requests = [(i * 5 * ms, 2 * ms, "get") for i in range(200)]
    requests[100] = (500 * ms, 45 * ms, "get")
    requests[101] = (505 * ms, 40 * ms, "get")
    users = ProcessEvents(
        1, "users", gcs=[(501 * ms, 41 * ms, 40 * ms, 2, 0), (20 * ms, ms // 2, ms // 2, 0, 0)]
    )
    gateway = ProcessEvents(2, "gateway", exports=[(300 * ms, 3 * ms, 1 * ms, 250, ms // 2)])
    # A store POST of 8 ms of CPU beside the stalled pair, and a quick one early on.
    store = ProcessEvents(
        3,
        "-",
        "tracehop/__main__.py trace-store --otlp-port",
        store_posts=[Served(502 * ms, 30 * ms, 8 * ms, 0, size=20_000), Served(51 * ms, ms, ms, 0, size=900)],
    )
    result = analyse(_window(requests), [users, gateway, store])
    overlap = result["slowest_1pct_overlap"]
    assert overlap["users gen2"] == {"all": round(9 / 200, 3), "slowest_1pct": 1.0}, overlap
    assert overlap["gateway export"]["slowest_1pct"] == 0.0
    assert result["services"]["users"]["gen2"]["per_1000_req"] == 5.0
    assert result["services"]["users"]["gen2"]["cpu_ms_max"] == 40.0
    assert result["services"]["users"]["gen0"]["per_1000_req"] == 5.0
    assert result["services"]["gateway"]["exports"]["longest_stretch_ms_max"] == 0.5
    assert result["cpu_ms_per_req"]["users"] == 1.0
    assert overlap["store POST cpu>=4ms"]["slowest_1pct"] == 1.0, overlap
    assert result["services"]["trace store"]["posts"]["per_1000_req"] == 10.0
    assert result["services"]["trace store"]["posts"]["cpu_ms_max"] == 8.0


# A Flask app served twice through Flask.__call__, and the trace store's OTLP receiver ingesting one POST:
# the probe must record both requests (with their query) and the POST, with thread CPU and run-queue wait.
SERVING_PROCESS = textwrap.dedent(
    """
    import gc, json, time, urllib.request
    import flask
    from tracehop.traces.store.server import serve_in_thread

    gc.collect()  # a collection after the imports: the probe wraps what is imported by then
    app = flask.Flask("probed")

    @app.get("/api/users/<int:user>")
    def user(user):
        deadline = time.thread_time() + 0.003
        while time.thread_time() < deadline:  # 3 ms of CPU
            pass
        return {"id": user}

    client = app.test_client()
    assert client.get("/api/users/7?tail=41").json == {"id": 7}
    assert client.get("/api/users/8").status_code == 200
    with serve_in_thread() as store:
        body = json.dumps({"resourceSpans": []}).encode()
        request = urllib.request.Request(
            store.traces_url, body, {"Content-Type": "application/json"}, method="POST"
        )
        assert urllib.request.urlopen(request, timeout=10).status == 200
    """
)


def test_probe_records_flask_requests_and_the_stores_posts(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(PROBE_DIR), "TRACEHOP_TAIL_PROBE_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", SERVING_PROCESS], cwd=REPO_ROOT, env=env, check=True, timeout=60)
    [process] = read_events(tmp_path)
    tagged, plain = process.requests
    assert (tagged.method, tagged.path, plain.path) == ("GET", "/api/users/7?tail=41", "/api/users/8")
    assert tagged.cpu >= 3 * 10**6 and tagged.wall >= tagged.cpu * 0.5 and tagged.runq >= 0
    [post] = process.store_posts
    assert post.size == len(b'{"resourceSpans": []}') and post.wall > 0 and post.cpu > 0


def test_breakdown_splits_a_request_between_generator_gateway_and_users() -> None:
    ms = 10**6
    # Due at 0, sent at 1 ms, gateway 3-20 ms, users 5-15 ms inside it, answered at 22 ms.
    client = [ClientRequest(7, "get", 0, 1 * ms, 22 * ms, 0)]
    gateway = ProcessEvents(
        1, "gateway", requests=[Served(3 * ms, 17 * ms, 2 * ms, ms, "GET", "/api/users/3?tail=7")]
    )
    users = ProcessEvents(
        2,
        "users",
        requests=[
            Served(4 * ms, 3 * ms, ms, 0, "GET", "/users/9"),  # another request's, overlapping
            Served(5 * ms, 10 * ms, ms, 2 * ms, "GET", "/users/3"),
        ],
    )
    [found] = break_down(client, [gateway, users])
    assert {part: value // ms for part, value in found.parts.items()} == {
        "send_late": 1,
        "to_gateway": 2,
        "gateway_to_users": 2,
        "users": 10,
        "gateway_after_users": 5,
        "back": 2,
    }
    assert (found.gateway_runq, found.users_runq) == (ms, 2 * ms)


def test_breakdown_takes_the_gateway_record_of_the_requests_own_window() -> None:
    """Serials restart every window and a stack's probe files hold them all: serial 7 of the window
    before (30 s earlier) must not be taken for this window's serial 7."""
    ms = 10**6
    client = [ClientRequest(7, "get", 0, 1 * ms, 22 * ms, 0)]
    gateway = ProcessEvents(
        1,
        "gateway",
        requests=[
            Served(3 * ms, 17 * ms, 2 * ms, ms, "GET", "/api/users/3?tail=7"),
            Served(-30_000 * ms, 17 * ms, 2 * ms, ms, "GET", "/api/users/3?tail=7"),  # the window before
        ],
    )
    users = ProcessEvents(
        2,
        "users",
        requests=[
            Served(-29_998 * ms, 10 * ms, ms, 0, "GET", "/users/3"),
            Served(5 * ms, 10 * ms, ms, 2 * ms, "GET", "/users/3"),
        ],
    )
    [found] = break_down(client, [gateway, users])
    assert found.parts["to_gateway"] == 2 * ms and found.parts["back"] == 2 * ms
