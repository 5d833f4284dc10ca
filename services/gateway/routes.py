"""The gateway's public API."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from opentelemetry import trace

from services.clients.user_validation import parse_new_user
from services.clients.users_client import UsersClient, UsersRejected, UsersUnavailable
from services.demo import fault_injection
from services.gateway.idempotency import (
    IdempotencyKeyMismatch,
    IdempotencyStore,
    IdempotencyUnavailable,
    fingerprint,
)
from services.gateway.job_queue import JobQueue, QueueUnavailable, is_valid_job_id
from services.telemetry.setup import current_trace_id
from services.web.http_errors import ApiError, error_response
from services.web.idempotency_key import IDEMPOTENCY_HEADER, parse_idempotency_key
from services.web.json_body import read_json_body

blueprint = Blueprint("gateway", __name__)

MAX_USER_ID = 2**53  # ids travel through JSON: keep them exact in every client


def _users() -> UsersClient:
    return current_app.extensions["users_client"]


def _jobs() -> JobQueue:
    return current_app.extensions["job_queue"]


def _idempotency() -> IdempotencyStore:
    return current_app.extensions["idempotency"]


@blueprint.post("/api/users")
def create_user() -> tuple[Response, int]:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    name, email = parse_new_user(read_json_body())
    key = parse_idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
    if key is None:
        user = _call_users(lambda: _users().create_user(name, email))
        fault_injection.kill_point("gateway", "user_created")
        job_id = _jobs().queue_welcome_email(user["id"], email)
        return jsonify(user=user, job_id=job_id, trace_id=current_trace_id()), 201
    # Idempotent creation (services/gateway/idempotency.py): a retry returns the same user and job id,
    # and queues the job if the first attempt died before doing so.
    try:
        reservation = _idempotency().reserve(key, fingerprint(name, email))
    except IdempotencyKeyMismatch as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except IdempotencyUnavailable as exc:
        raise ApiError(503, "queue_unavailable", str(exc)) from exc
    span = trace.get_current_span()
    span.set_attribute("idempotency.replay", reservation.replay)
    user = _call_users(lambda: _users().create_user(name, email, idempotency_key=key))
    fault_injection.kill_point("gateway", "user_created")
    if not reservation.queued:
        _jobs().queue_welcome_email(user["id"], email, job_id=reservation.job_id)
        _idempotency().mark_queued(key)
    span.set_attribute("idempotency.job_queued_now", not reservation.queued)
    response = jsonify(user=user, job_id=reservation.job_id, trace_id=current_trace_id())
    if reservation.replay:
        response.headers["Idempotent-Replayed"] = "true"
    return response, 201


@blueprint.get("/api/users/<user_id>")
def get_user(user_id: str) -> Response:
    user = _call_users(lambda: _users().get_user(_parse_user_id(user_id)))
    return jsonify(user=user, trace_id=current_trace_id())


@blueprint.post("/api/users/<user_id>/report")
def queue_report(user_id: str) -> tuple[Response, int]:
    job_id = _jobs().queue_report(_parse_user_id(user_id))
    return jsonify(job_id=job_id, trace_id=current_trace_id()), 202


@blueprint.get("/api/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    if not is_valid_job_id(job_id):
        raise ApiError(400, "invalid_job_id", "a job id is a UUID, as returned when the job was queued")
    status = _jobs().job_status(job_id)
    return jsonify(**status, trace_id=current_trace_id())


@blueprint.get("/healthz")
def healthz() -> Response:
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks = {"users": _users().is_healthy(), "redis": _jobs().is_healthy()}
    missing = sorted(name for name, ok in checks.items() if not ok)
    if missing:
        body = {
            "error": "not_ready",
            "message": f"unreachable: {', '.join(missing)}",
            "checks": checks,
            "trace_id": current_trace_id(),
        }
        return jsonify(body), 503
    return jsonify(status="ready", checks=checks), 200


def _parse_user_id(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit()):
        raise ApiError(400, "invalid_user_id", "a user id is a positive integer")
    # The length before int(): int() of thousands of digits is slow, and past 4300 digits a ValueError.
    significant = raw.lstrip("0")
    if len(significant) > len(str(MAX_USER_ID)) or int(significant or "0") > MAX_USER_ID:
        raise ApiError(400, "invalid_user_id", f"a user id is at most {MAX_USER_ID}")
    if not significant:
        raise ApiError(400, "invalid_user_id", "a user id is a positive integer (0 is not)")
    return int(significant)


def _call_users(call):
    try:
        return call()
    except UsersUnavailable as exc:
        raise ApiError(503, "users_unavailable", str(exc)) from exc
    except UsersRejected as exc:
        raise ApiError(exc.status, exc.error, exc.message) from exc


@blueprint.app_errorhandler(QueueUnavailable)
def _queue_unavailable(exc: QueueUnavailable) -> tuple[Response, int]:
    # The one place a broker that cannot be reached becomes a 503 (jobs and workflows alike).
    return error_response(503, "queue_unavailable", str(exc))
