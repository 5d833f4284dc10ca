"""The gateway as a trust boundary: which incoming trace context and baggage travel on to users and jobs.

users runs for real over HTTP in a thread and the broker is a real Redis-protocol server; what users
receives is read from its SERVER span (the Flask instrumentation records chosen request headers), what a
job would receive from the queued Celery message.
"""

from __future__ import annotations

import pytest

from tests.unit.conftest import queued_messages

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
CALLER = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
NEW_USER = {"name": "Ada", "email": "ada@example.org"}


@pytest.fixture(autouse=True)
def _record_trace_headers(monkeypatch):
    # What users received, as attributes of its SERVER span (http.request.header.<name>).
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "baggage,tracestate")


@pytest.fixture
def edge(make_gateway, broker):
    """`edge(trust=..., allowlist=..., max_bytes=...)`: a gateway client with these trust settings."""

    def make(trust: bool = True, allowlist: str = "tracehop.*", max_bytes: int = 1024):
        config = {
            "TRUST_INCOMING_TRACE": trust,
            "BAGGAGE_ALLOWLIST": allowlist,
            "BAGGAGE_MAX_BYTES": max_bytes,
        }
        return make_gateway(**config).test_client()

    return make


def server_span(spans, route: str):
    (span,) = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER" and s.name == f"POST {route}"]
    return span


def test_trusted_caller_continues_its_trace_and_tracestate_members_survive(edge, broker, spans):
    response = edge().post(
        "/api/users",
        json=NEW_USER,
        headers={"traceparent": CALLER, "tracestate": "a@b@c=1,foo=3,foo=4"},
    )
    assert response.status_code == 201
    assert response.get_json()["trace_id"] == CALLER_TRACE
    root = server_span(spans, "/api/users")
    assert f"{root.parent.span_id:016x}" == CALLER_SPAN and not root.links
    # The library's parser would have dropped all of it (a duplicate and a new-grammar key).
    assert server_span(spans, "/users").attributes["http.request.header.tracestate"] == ("a@b@c=1,foo=3",)
    (message,) = queued_messages(broker)
    assert message["headers"]["tracestate"] == "a@b@c=1,foo=3"


def test_untrusted_caller_starts_a_new_trace_linked_to_its_own(edge, broker, spans):
    response = edge(trust=False).post(
        "/api/users", json=NEW_USER, headers={"traceparent": CALLER, "tracestate": "vendor=secret"}
    )
    assert response.status_code == 201
    trace_id = response.get_json()["trace_id"]
    assert trace_id != CALLER_TRACE and response.headers["traceresponse"].split("-")[1] == trace_id
    root = server_span(spans, "/api/users")
    assert root.parent is None
    (link,) = root.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (CALLER_TRACE, CALLER_SPAN)
    assert link.attributes["link.reason"] == "trust_boundary_restart"
    assert root.attributes["edge.trace_restarted"] is True
    # "Vendors SHOULD clean up tracestate collection on traceparent restart."
    assert "http.request.header.tracestate" not in server_span(spans, "/users").attributes
    assert "tracestate" not in queued_messages(broker)[0]["headers"]


def test_untrusted_mode_without_a_caller_context_has_no_link(edge, broker, spans):
    assert edge(trust=False).post("/api/users", json=NEW_USER).status_code == 201
    root = server_span(spans, "/api/users")
    assert not root.links and "edge.trace_restarted" not in root.attributes


def test_only_allowed_baggage_within_the_limit_travels_on(edge, broker, spans):
    baggage = f"tracehop.tenant=acme,user.email=ada%40example.org,tracehop.big={'x' * 600},session=s3cr3t"
    response = edge(max_bytes=256).post("/api/users", json=NEW_USER, headers={"baggage": baggage})
    assert response.status_code == 201
    assert server_span(spans, "/users").attributes["http.request.header.baggage"] == ("tracehop.tenant=acme",)
    assert queued_messages(broker)[0]["headers"]["baggage"] == "tracehop.tenant=acme"
    assert server_span(spans, "/api/users").attributes["edge.baggage_dropped"] == 3


def test_baggage_that_is_all_disallowed_is_not_sent_at_all(edge, broker, spans):
    response = edge().post("/api/users", json=NEW_USER, headers={"baggage": "k=v,session=x"})
    assert response.status_code == 201
    assert "http.request.header.baggage" not in server_span(spans, "/users").attributes
    assert "baggage" not in queued_messages(broker)[0]["headers"]


VALID = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
# (headers, whether a trusting gateway continues the caller's trace)
HOSTILE_HEADERS = [
    ({"traceparent": "00-" + "0" * 32 + "-" + CALLER_SPAN + "-01"}, False),  # all-zero trace id
    ({"traceparent": f"00-{CALLER_TRACE}-{'0' * 16}-01"}, False),  # all-zero parent id
    ({"traceparent": f"ff-{CALLER_TRACE}-{CALLER_SPAN}-01"}, False),  # forbidden version
    ({"traceparent": f"{VALID}-extra"}, False),  # version 00 with extra fields
    ({"traceparent": VALID.upper()}, False),  # upper-case hex
    ({"traceparent": f"{VALID},{VALID}"}, False),  # two headers, joined
    ({"traceparent": "00-" + "a" * 8000}, False),  # over-long
    ({"traceparent": "\x00\x01garbage"}, False),
    ({"traceparent": VALID.replace("-", "\u2013")}, False),  # look-alike dashes
    # A valid traceparent with a hostile tracestate: the trace goes on, the tracestate is cut or dropped.
    ({"traceparent": VALID, "tracestate": "x=" + "y" * 8000}, True),
    ({"traceparent": VALID, "tracestate": ",".join(["k=v"] * 2000)}, True),
    ({"traceparent": VALID, "tracestate": "=,=,\t,@@@=@"}, True),
    ({"traceparent": VALID, "tracestate": "ok=1,BAD=2"}, True),  # one invalid member: all of it goes
    ({"baggage": "tracehop.a=" + "%" * 7000}, False),
    ({"baggage": ";;;,,,===,tracehop.x"}, False),
    ({"baggage": "tracehop.k=v;" + "p;" * 3000}, False),
]


@pytest.mark.parametrize(("headers", "continued"), HOSTILE_HEADERS)
@pytest.mark.parametrize("trust", [True, False])
def test_hostile_trace_headers_never_break_a_request(edge, broker, spans, headers, continued, trust):
    response = edge(trust=trust).post("/api/users", json=NEW_USER, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    trace_id = response.get_json()["trace_id"]
    assert len(trace_id) == 32 and trace_id != "0" * 32
    assert (trace_id == CALLER_TRACE) == (continued and trust)
    users_headers = server_span(spans, "/users").attributes
    for sent in users_headers.get("http.request.header.baggage", ()):
        assert len(sent) <= 1024
    for sent in users_headers.get("http.request.header.tracestate", ()):
        assert len(sent) <= 512
        assert "ok=1" not in sent and "k=v" not in sent  # discarded whole, not member by member
