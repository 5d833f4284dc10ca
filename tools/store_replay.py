"""The trace store's CPU under the services' real export POSTs: record them once, replay them at will.

    python -m tools.store_replay record tracehop var/exports-tracehop.pkl [--duration 15]
    python -m tools.store_replay replay var/exports-tracehop.pkl [--transcode protobuf] [--regroup 292]

`record` starts a private embedded stack with one `make bench` mode's settings (tracehop.bench.runner
MODE_ENV), points the services' exporters at a recording HTTP server instead of the trace store, and keeps
every POST (time, Content-Type, Content-Encoding, the exporting connection, body) of a fixed-rate window
of the bench's mix (100 req/s by default). `replay` starts `python -m tracehop trace-store` in a process
of its own and sends the recorded POSTs at their recorded times, one keep-alive connection per exporting
connection, and prints the store's CPU (utime+stime from /proc) per span and per POST — optionally with
the same spans re-encoded (`--transcode`) or re-batched (`--regroup N` spans per POST), which is how
docs/performance.md ("The trace store's CPU per span, under the services' real exports") told the
encoding's share of the store's CPU from the POST count's. Why not `make bench`: one replay takes half a
minute, and the same input every time makes a before/after comparable on a busy machine.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from services.metrics import proc_stat
from tracehop.stack.config import free_ports
from tracehop.traces.store.otlp import decode_export_request, decompress

# (seconds since the window started, path, Content-Type, Content-Encoding, client port, body)
Post = tuple[float, str, str, str, int, bytes]
PROTOBUF, JSON = "application/x-protobuf", "application/json"
# The store builds its viewer 2 s after starting (retention.FIRST_PRUNE_DELAY_S) and imports Flask then:
# about a second of CPU that must not land in the measured window.
STORE_SETTLE_S = 8.0


# ------------------------------------------------------------------------------------------- recording


def record(mode: str, out: Path, duration_s: float, rate: float) -> None:
    import requests

    from tracehop.bench.load import BuiltinLoad, UserMix
    from tracehop.bench.runner import MODE_ENV
    from tracehop.stack.config import free_stack_ports
    from tracehop.stack.runner import LocalStack

    posts: list[Post] = []
    window_start: list[float] = []

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            content_type = self.headers.get("Content-Type", "").split(";")[0]
            if window_start:  # the seed requests' and warm-up's spans are not part of the window
                encoding = self.headers.get("Content-Encoding", "")
                at = time.monotonic() - window_start[0]
                posts.append((at, self.path, content_type, encoding, self.client_address[1], body))
            answer = b"{}" if content_type == JSON else b""
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = Path(tempfile.mkdtemp(prefix="store-replay-"))
    env = {**MODE_ENV[mode], "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"}
    stack = LocalStack(root / "var", root / "logs", free_stack_ports(), env, prometheus=False, beat=False)
    stack.start(timeout=120)
    try:
        gateway = stack.urls["gateway"]
        session = requests.Session()
        session.trust_env = False
        for index in range(20):  # the users the GETs ask for
            body = {"name": "Seed", "email": f"seed-{index}@example.org"}
            session.post(f"{gateway}/api/users", json=body, timeout=10).raise_for_status()
        BuiltinLoad(gateway, UserMix(0.5, 20), 3.0, connections=4).run()
        time.sleep(7)  # longer than stock's 5 s batch delay: the warm-up's spans are out
        window_start.append(time.monotonic())
        load = BuiltinLoad(gateway, UserMix(0.5, 20), duration_s, connections=8, rate=rate).start()
        result = load.result()
        time.sleep(7)  # the window's last batches
    finally:
        stack.stop()
        server.shutdown()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as file:
        pickle.dump({"mode": mode, "duration_s": duration_s, "posts": posts}, file)
    print(f"{mode}: {result.created + result.fetched} requests, {len(posts)} export POSTs -> {out}")


# ------------------------------------------------------------------------------------------- replaying


def _to_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: hex ids, enums as integers (json_format writes base64 ids)."""
    document = json_format.MessageToDict(request, use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for item in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            item[key] = base64.b64decode(item[key]).hex()
    return json.dumps(document, separators=(",", ":")).encode()


def _encode(request: ExportTraceServiceRequest, content_type: str) -> bytes:
    return request.SerializeToString() if content_type == PROTOBUF else _to_json(request)


def _span_count(request: ExportTraceServiceRequest) -> int:
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def _regroup(posts: list[Post], size: int) -> list[Post]:
    """Each connection's spans in batches of `size`, sent at the times its recorded POSTs spread over."""
    regrouped: list[Post] = []
    by_connection: dict[int, list[Post]] = {}
    for post in posts:
        by_connection.setdefault(post[4], []).append(post)
    for port, own in by_connection.items():
        content_type = own[0][2]
        spans = [
            (resource, scope, span)
            for post in own
            for resource in decode_export_request(post[5], post[2]).resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]
        for start in range(0, len(spans), size):
            request = ExportTraceServiceRequest()
            scopes: dict[tuple[bytes, bytes], Any] = {}
            for resource, scope, span in spans[start : start + size]:
                key = (resource.resource.SerializeToString(), scope.scope.SerializeToString())
                if key not in scopes:
                    added = request.resource_spans.add(
                        resource=resource.resource, schema_url=resource.schema_url
                    )
                    scopes[key] = added.scope_spans.add(scope=scope.scope, schema_url=scope.schema_url)
                scopes[key].spans.append(span)
            at = own[min(len(own) - 1, start * len(own) // len(spans))][0]
            regrouped.append((at, "/v1/traces", content_type, "", port, _encode(request, content_type)))
    return sorted(regrouped, key=lambda post: post[0])


def replay(path: Path, transcode: str | None, regroup: int | None) -> None:
    with path.open("rb") as file:
        recording = pickle.load(file)
    posts: list[Post] = []
    for at, url_path, content_type, encoding, port, body in recording["posts"]:
        body = decompress(body, encoding)
        if transcode:
            request = decode_export_request(body, content_type)
            content_type = PROTOBUF if transcode == "protobuf" else JSON
            body = _encode(request, content_type)
        posts.append((at, url_path, content_type, "", port, body))
    if regroup:
        posts = _regroup(posts, regroup)
    spans = sum(_span_count(decode_export_request(post[5], post[2])) for post in posts)
    directory = Path(tempfile.mkdtemp(prefix="store-replay-"))
    otlp_port, query_port = free_ports(2)
    store = subprocess.Popen(
        [sys.executable, "-m", "tracehop", "trace-store", "--otlp-port", str(otlp_port)]
        + ["--query-port", str(query_port), "--db", str(directory / "traces.sqlite3")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert store.stderr is not None
        if "OTLP/HTTP on" not in (line := store.stderr.readline()):
            raise RuntimeError(f"the trace store did not start: {line}")
        time.sleep(STORE_SETTLE_S)
        by_connection: dict[int, list[Post]] = {}
        for post in posts:
            by_connection.setdefault(post[4], []).append(post)
        before = proc_stat.cpu_seconds(store.pid)
        started = time.monotonic()

        def send(own: list[Post]) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", otlp_port)
            for at, url_path, content_type, _, _, body in own:
                time.sleep(max(0.0, started + at - time.monotonic()))
                connection.request("POST", url_path, body, {"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"the store answered {response.status}")

        senders = [threading.Thread(target=send, args=(own,)) for own in by_connection.values()]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        time.sleep(0.5)
        used = proc_stat.cpu_seconds(store.pid) - before
    finally:
        store.terminate()
        store.wait()
    print(
        f"{path.stem} {posts[0][2].split('/')[-1]}: {len(posts)} POSTs, {spans} spans"
        f" ({spans / len(posts):.0f} per POST); store CPU {used * 1000:.0f} ms ="
        f" {used * 1e6 / spans:.1f} µs per span, {used * 1000 / len(posts):.2f} ms per POST"
        f" (load average {os.getloadavg()[0]:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    recording = commands.add_parser("record")
    recording.add_argument("mode", choices=["stock", "tracehop"])
    recording.add_argument("out", type=Path)
    recording.add_argument("--duration", type=float, default=15.0)
    recording.add_argument("--rate", type=float, default=100.0)
    replaying = commands.add_parser("replay")
    replaying.add_argument("recording", type=Path)
    replaying.add_argument("--transcode", choices=["protobuf", "json"])
    replaying.add_argument("--regroup", type=int, metavar="N", help="N spans per POST")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.mode, args.out, args.duration, args.rate)
    else:
        replay(args.recording, args.transcode, args.regroup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
