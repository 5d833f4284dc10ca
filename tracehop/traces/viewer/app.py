"""The viewer's pages: a Flask blueprint the trace store mounts on its query port, beside /api/v3.

Pages read the store the way the query API does (the same stored spans turned into the same OTLP JSON,
parsed by the same `spans_from_otlp_json` the tests and `make trace` use). Every page is addressable by
its URL; the search and the service map have JSON twins (`/search.json`, `/services.json`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, render_template, request

from tracehop.traces.logs import read_trace_logs
from tracehop.traces.query import Span, spans_from_otlp_json
from tracehop.traces.store.api import resource_spans_json
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.service_map import ServiceMap
from tracehop.traces.trace_id import InvalidTraceId, normalise_trace_id
from tracehop.traces.viewer import metrics_links, service_map_view
from tracehop.traces.viewer.scatter import scatter
from tracehop.traces.viewer.search_form import (
    LOOKBACK_LABELS,
    SearchForm,
    SearchFormError,
    form_as_typed,
    parse_search_form,
)
from tracehop.traces.viewer.security import SECURITY_HEADERS
from tracehop.traces.viewer.summaries import TraceSummary, newest_first, summarise
from tracehop.traces.viewer.trace_page import TracePage, build_trace_page, service_colours

EXTENSION = "trace_viewer"
MAP_TRACE_LIMIT = 100_000  # traces a filtered service map considers


blueprint = Blueprint("viewer", __name__, static_folder="static", template_folder="templates")


@dataclass(frozen=True)
class ViewerSources:
    """What the pages read: the span database, the services' log files, the local Prometheus if any."""

    database: SpanDatabase
    log_dir: Path | None = None
    prometheus_url: str | None = None


def _sources() -> ViewerSources:
    return current_app.extensions[EXTENSION]


def _spans(trace_ids: list[str]) -> dict[str, list[Span]]:
    database = _sources().database
    stored = database.traces(trace_ids)
    return {
        trace_id: spans_from_otlp_json({"resourceSpans": resource_spans_json(database, spans)})
        for trace_id, spans in stored.items()
    }


@blueprint.after_app_request
def _security_headers(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def create_viewer_app(
    database: SpanDatabase, log_dir: Path | None = None, prometheus_url: str | None = None
) -> Flask:
    """The viewer as a Flask app: what the query port serves outside /api/ (store/query_app.py)."""
    app = Flask(__name__, static_folder=None)  # the blueprint serves /static
    app.extensions[EXTENSION] = ViewerSources(database, log_dir, prometheus_url)

    @app.errorhandler(500)
    def internal_error(error: Exception) -> Response:
        # A bug answers 500 with a message, never a traceback page.
        sys.stderr.write(f"trace store: {request.method} {request.path} failed: {error!r}\n")
        return Response(f"internal error: {error}\n", status=500, content_type="text/plain; charset=utf-8")

    app.register_blueprint(blueprint)
    return app


@blueprint.app_context_processor
def _page_globals() -> dict[str, Any]:
    return {"lookback_labels": LOOKBACK_LABELS}


# ------------------------------------------------------------------------------------------------ search


def _search(form: SearchForm) -> list[TraceSummary]:
    database = _sources().database
    trace_ids = database.find_trace_ids(form.trace_search())
    colours = service_colours(database.services())
    summaries = [summarise(spans, colours) for spans in _spans(trace_ids).values() if spans]
    return newest_first(summaries)


@blueprint.get("/")
def search_page() -> tuple[str, int]:
    database = _sources().database
    services = database.services()
    try:
        form = parse_search_form(request.args)
    except SearchFormError as error:
        form = form_as_typed(request.args)
        return render_template(
            "search.html", form=form, services=services, operations=[], error=str(error), results=None
        ), 400
    operations = database.operations(form.service) if form.service else []
    results = _search(form)
    return render_template(
        "search.html",
        form=form,
        services=services,
        operations=operations,
        error=None,
        results=results,
        plot=scatter(results),
    ), 200


@blueprint.get("/search.json")
def search_json() -> tuple[Response, int]:
    try:
        form = parse_search_form(request.args)
    except SearchFormError as error:
        return jsonify(error="invalid_search", message=str(error), trace_id=None), 400
    return jsonify(query=form.query_string(), traces=[summary.to_json() for summary in _search(form)]), 200


# ------------------------------------------------------------------------------------------------- trace


@blueprint.get("/trace")
def find_trace() -> Any:
    """The paste box: a trace id, or a traceparent / traceresponse value."""
    text = request.args.get("id", "")
    try:
        trace_id = normalise_trace_id(text)  # the same reading of an id as `make trace ID=…`
    except InvalidTraceId as error:
        return render_template("not_found.html", title="Not a trace id", message=str(error), text=""), 400
    return redirect(f"/trace/{trace_id}", code=303)


def _load_trace_page(trace_id_text: str) -> TracePage | tuple[str, int]:
    """The trace's page model, or the error page to answer instead."""
    try:
        trace_id = normalise_trace_id(trace_id_text)
    except InvalidTraceId as error:
        return render_template("not_found.html", title="Not a trace id", message=str(error), text=""), 400
    spans = _spans([trace_id]).get(trace_id)
    if not spans:
        message = (
            f"Trace {trace_id} is not in this trace store. Spans arrive a second or so after a request; "
            "reload in a moment, or search for it."
        )
        return render_template("not_found.html", title="Trace not found", message=message, text=""), 404
    sources = _sources()
    logs = read_trace_logs(sources.log_dir, trace_id) if sources.log_dir else []
    return build_trace_page(spans, logs, sources.database.services())


@blueprint.get("/trace/<trace_id_text>")
def trace_page(trace_id_text: str) -> tuple[str, int]:
    page = _load_trace_page(trace_id_text)
    if not isinstance(page, TracePage):
        return page
    sources = _sources()
    metrics = {}
    if sources.prometheus_url:
        for count in page.services:
            url = metrics_links.prometheus_graph_url(sources.prometheus_url, count.service, page.start_ns)
            if url:
                metrics[count.service] = url
    selected = request.args.get("span", "").lower()
    return render_template(
        "trace.html", page=page, selected=selected, metrics=metrics, log_dir=sources.log_dir
    ), 200


@blueprint.get("/trace/<trace_id_text>/span/<span_id>")
def span_detail(trace_id_text: str, span_id: str) -> tuple[str, int]:
    """One span's detail panel, fetched by the page's script when its row is clicked."""
    page = _load_trace_page(trace_id_text)
    if not isinstance(page, TracePage):
        return page
    for row in page.rows:
        if row.span.span_id == span_id.lower():
            return render_template("_span_detail.html", row=row), 200
    message = f"Span {span_id} is not in trace {page.trace_id}."
    return render_template("not_found.html", title="Span not found", message=message, text=""), 404


# --------------------------------------------------------------------------------------------- services


def _service_map(form: SearchForm) -> ServiceMap:
    database = _sources().database
    search = form.trace_search(num_traces=MAP_TRACE_LIMIT)
    trace_ids = database.find_trace_ids(search) if form.attributes or form.errors else None
    return database.service_map(search.start_min_ns, search.start_max_ns, trace_ids)


@blueprint.get("/services")
def services_page() -> tuple[str, int]:
    try:
        form = parse_search_form(request.args)
    except SearchFormError as error:
        return render_template(
            "services.html", form=form_as_typed(request.args), drawing=None, error=str(error)
        ), 400
    drawing = service_map_view.draw(_service_map(form), _sources().database.services())
    return render_template("services.html", form=form, drawing=drawing, error=None), 200


@blueprint.get("/services.json")
def services_json() -> tuple[Response, int]:
    try:
        form = parse_search_form(request.args)
    except SearchFormError as error:
        return jsonify(error="invalid_search", message=str(error), trace_id=None), 400
    return jsonify(_service_map(form).to_json()), 200


@blueprint.app_errorhandler(404)
def _not_found(error: Exception) -> tuple[str, int]:
    message = "Nothing here. Search for traces, open one by its id, or look at the service map."
    return render_template("not_found.html", title="Not found", message=message, text=""), 404
