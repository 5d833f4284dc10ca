"""users' HTTP API: POST /users, GET /users/<id>, GET /healthz, GET / (what it answers)."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, request
from opentelemetry import trace

from services.clients.user_validation import parse_new_user
from services.users.auth import require_service_token
from services.users.store import IdempotencyKeyReused, User, UserStore
from services.web.http_errors import ApiError
from services.web.idempotency_key import IDEMPOTENCY_HEADER, parse_idempotency_key
from services.web.json_body import read_json_body

blueprint = Blueprint("users", __name__)
tracer = trace.get_tracer(__name__)


def _store() -> UserStore:
    return current_app.extensions["user_store"]


@blueprint.post("/users")
def create_user() -> Response:
    require_service_token()
    name, email = parse_new_user(read_json_body())
    key = parse_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    if key is None:
        return _serialize(_store().create(name, email), status=201)
    try:
        user, created = _store().create_once(name, email, key)
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    response = _serialize(user, status=201 if created else 200)
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@blueprint.get("/users/<int:user_id>")
def get_user(user_id: int) -> Response:
    require_service_token()
    user = _store().get(user_id)
    if user is None:
        raise ApiError(404, "user_not_found", f"no user with id {user_id}")
    return _serialize(user, status=200)


@blueprint.get("/healthz")
def healthz() -> Response:
    return Response('{"status":"ok"}', mimetype="application/json")


@blueprint.get("/")
def index() -> Response:
    """A person who opens this internal service's address sees what it answers, not a 404."""
    routes = sorted(
        f"{method} {rule.rule}"
        for rule in current_app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
    )
    body = {"service": "users", "internal": "called by the gateway and the worker", "routes": routes}
    return Response(json.dumps(body, separators=(",", ":")), mimetype="application/json")


def _serialize(user: User, status: int) -> Response:
    """The design document's `serialize` step, as a manual span (pattern 2, like auth.py's auth_check).

    A manual span rather than `@traced`: the step is a few lines inside the request, and what is worth
    recording is what it produced (which user, how many bytes), not its arguments: `user` holds the
    e-mail address and name, which must not become attributes.
    """
    with tracer.start_as_current_span("serialize") as span:
        body = json.dumps(user.as_dict(), separators=(",", ":"))
        # Attributes describe the result: the id to find the user, the size to spot a bloated response.
        span.set_attribute("user.id", user.id)
        span.set_attribute("serialize.bytes", len(body))
        return Response(body, status=status, mimetype="application/json")
