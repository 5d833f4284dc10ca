"""The gateway's public API as an OpenAPI 3.1 document, served at `GET /openapi.json`.

Written by hand, next to the routes it describes, so that it says what the API promises (statuses, error
shape, limits) rather than what a generator could infer. Two tests keep it honest: every route of the app
is documented (tests/unit/test_openapi.py), and a schemathesis run fuzzes the gateway against this very
document and fails on any 5xx or any response that does not match it (tests/unit/test_gateway_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from services.clients.user_validation import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH
from services.gateway import workflow_routes
from services.worker.workflow_tasks import MAX_CHORD_PARTS

JOB_STATE_NOTE = (
    "PENDING also for a job id the result backend does not know (never issued, or its result expired): "
    "Celery cannot tell them apart"
)
MAX_USER_ID = 2**53  # the same bound as routes.py: ids must stay exact in every JSON client

blueprint = Blueprint("openapi", __name__)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


TRACE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "the trace of this request"}
JOB_ID = {"type": "string", "format": "uuid"}
USER_ID_PARAMETER = {
    "name": "user_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
}


def _workflow(
    operation_id: str, summary: str, fields: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """A POST /api/workflows/... operation: an optional JSON object in, 202 with the final job's id out."""
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object", "properties": fields}}},
            },
            "responses": {
                "202": _json(
                    {
                        "type": "object",
                        "required": ["job_id", "trace_id", *extra],
                        "properties": {"job_id": JOB_ID, "trace_id": TRACE_ID, **extra},
                    },
                    "queued; `job_id` is the job that ends the workflow",
                ),
                "400": _error("the body is not a JSON object, or a field is invalid"),
                "413": _error("the body is larger than 16 KiB"),
                "503": _error("the job queue cannot be reached"),
            },
        }
    }


NOTE = {"type": "string", "minLength": 1, "maxLength": workflow_routes.MAX_NOTE_LENGTH}

WORKFLOW_PATHS: dict[str, Any] = {
    "/api/workflows/etl": _workflow(
        "queueEtl",
        "A chain: extract -> transform -> load",
        {"source": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}},
        {"steps": {"type": "integer"}},
    ),
    "/api/workflows/wordcount": _workflow(
        "queueWordCount",
        "A chord: count_words in parallel, then sum_counts",
        {
            "text": {"type": "string", "minLength": 1, "maxLength": workflow_routes.MAX_TEXT_LENGTH},
            "parts": {"type": "integer", "minimum": 1, "maximum": MAX_CHORD_PARTS},
        },
        {"parts": {"type": "integer"}},
    ),
    "/api/workflows/reminder": _workflow(
        "queueReminder",
        "One job with a countdown (an ETA)",
        {"note": NOTE, "delay_s": {"type": "number", "minimum": 0, "maximum": workflow_routes.MAX_DELAY_S}},
        {"eta": {"type": "string"}},
    ),
    "/api/workflows/followup": _workflow(
        "queueFollowup", "A job that queues another job", {"note": NOTE}, {}
    ),
    "/api/workflows/by-name": _workflow(
        "queueByName",
        "A job sent by name (send_task) that queues one through a second Celery app",
        {"note": NOTE},
        {},
    ),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "tracehop gateway",
        "version": "1.0.0",
        "description": (
            "Every response carries a W3C `traceresponse` header; every error is "
            '{"error", "message", "trace_id"}. Request bodies are limited to 16 KiB (413 beyond).'
        ),
    },
    "paths": {
        "/api/users": {
            "post": {
                "operationId": "createUser",
                "summary": "Create a user (through the users service) and queue its welcome e-mail",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": (
                            "A unique key (a UUID) per user to create. Sent again with the same body, the "
                            "request answers the same user and job id (header `Idempotent-Replayed: true`) "
                            "and queues the job if the first attempt died before; remembered 24 h."
                        ),
                        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewUser"}}},
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["user", "job_id", "trace_id"],
                            "properties": {
                                "user": {"$ref": "#/components/schemas/User"},
                                "job_id": JOB_ID,
                                "trace_id": TRACE_ID,
                            },
                        },
                        "created; the welcome e-mail job is queued",
                    ),
                    "400": _error(
                        "the body is not JSON, not an object, or a field is missing or invalid; "
                        "or the Idempotency-Key is malformed"
                    ),
                    "413": _error("the body is larger than 16 KiB"),
                    "415": _error("the body is not sent as application/json"),
                    "422": _error("the Idempotency-Key was used before with another body"),
                    "503": _error("the users service or the job queue cannot be reached"),
                },
            }
        },
        "/api/users/{user_id}": {
            "get": {
                "operationId": "getUser",
                "parameters": [USER_ID_PARAMETER],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["user", "trace_id"],
                            "properties": {
                                "user": {"$ref": "#/components/schemas/User"},
                                "trace_id": TRACE_ID,
                            },
                        },
                        "the user",
                    ),
                    "400": _error("the id is not a positive integer, or larger than 2^53"),
                    "404": _error("no user with this id"),
                    "503": _error("the users service cannot be reached"),
                },
            }
        },
        "/api/users/{user_id}/report": {
            "post": {
                "operationId": "queueReport",
                "parameters": [USER_ID_PARAMETER],
                "responses": {
                    "202": _json(
                        {
                            "type": "object",
                            "required": ["job_id", "trace_id"],
                            "properties": {"job_id": JOB_ID, "trace_id": TRACE_ID},
                        },
                        "the report job is queued",
                    ),
                    "400": _error("the id is not a positive integer, or larger than 2^53"),
                    "503": _error("the job queue cannot be reached"),
                },
            }
        },
        "/api/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": JOB_ID}],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["job_id", "state", "result", "trace_id"],
                            "properties": {
                                "job_id": JOB_ID,
                                "state": {
                                    "description": JOB_STATE_NOTE,
                                    "enum": [
                                        "PENDING",
                                        "RECEIVED",
                                        "STARTED",
                                        "RETRY",
                                        "FAILURE",
                                        "SUCCESS",
                                        "REVOKED",
                                    ],
                                },
                                "result": {"description": "the result, or {error, message} after a failure"},
                                "trace_id": TRACE_ID,
                            },
                        },
                        "the job's state (PENDING also for an id nobody queued)",
                    ),
                    "400": _error("the id is not a UUID"),
                    "503": _error("the result backend cannot be reached"),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "responses": {
                    "200": _json(
                        {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                        "the process answers",
                    )
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "checks"],
                            "properties": {
                                "status": {"const": "ready"},
                                "checks": {"$ref": "#/components/schemas/Checks"},
                            },
                        },
                        "users and Redis answer",
                    ),
                    "503": _json(
                        {
                            "allOf": [{"$ref": "#/components/schemas/Error"}],
                            "required": ["checks"],
                            "properties": {"checks": {"$ref": "#/components/schemas/Checks"}},
                        },
                        "a dependency does not answer; `checks` says which",
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        **WORKFLOW_PATHS,
        "/": {
            "get": {
                "operationId": "index",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["service", "routes", "openapi"],
                            "properties": {
                                "service": {"const": "gateway"},
                                "routes": {"type": "array", "items": {"type": "string"}},
                                "openapi": {"const": "/openapi.json"},
                            },
                        },
                        "what this service answers: its routes and where their description is",
                    )
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "responses": {"200": _json({"type": "object"}, "this document")},
            }
        },
    },
    "components": {
        "schemas": {
            "NewUser": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "email"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH},
                    "email": {"type": "string", "format": "email", "maxLength": MAX_EMAIL_LENGTH},
                },
            },
            "User": {
                "type": "object",
                "required": ["id", "name", "email"],
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "email": {"type": "string"},
                },
            },
            "Checks": {
                "type": "object",
                "properties": {"users": {"type": "boolean"}, "redis": {"type": "boolean"}},
            },
            "Error": {
                "type": "object",
                "required": ["error", "message", "trace_id"],
                "properties": {
                    "error": {"type": "string", "description": "a short machine-readable code"},
                    "message": {"type": "string"},
                    # Empty only where no span exists: tracing switched off, or /readyz (not traced).
                    "trace_id": {"type": "string", "pattern": "^([0-9a-f]{32})?$"},
                },
            },
        }
    },
}


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(DOCUMENT)


@blueprint.get("/")
def index() -> Response:
    """A person who opens the gateway's address sees what it answers, not a 404."""
    routes = [
        f"{method.upper()} {path}" for path, operations in DOCUMENT["paths"].items() for method in operations
    ]
    return jsonify(service="gateway", routes=routes, openapi="/openapi.json")
