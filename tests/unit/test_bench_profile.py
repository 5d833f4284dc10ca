"""Reading py-spy's collapsed stacks and deciding who is responsible for each sample."""

from __future__ import annotations

import pytest

from tracehop.bench.profile import attribute, parse_collapsed, parse_frame, summarise_collapsed

SP = "/work/main/.venv/lib/python3.11/site-packages"
STD = "/root/.local/share/uv/python/cpython-3.11.14-linux-x86_64-gnu/lib/python3.11"


def frames(*paths: str):
    return [parse_frame(f"f{i} ({path}:{i + 1})") for i, path in enumerate(paths)]


def test_frame_text_is_split_into_function_and_path():
    frame = parse_frame(f"dumps ({STD}/json/__init__.py:231)")
    assert (frame.function, frame.path) == ("dumps", f"{STD}/json/__init__.py")
    assert frame.label == "dumps (json/__init__.py)"
    header = parse_frame('process 4242:"python -m gunicorn services.gateway:create_app()"')
    assert header.path == ""


def test_stdlib_work_is_charged_to_the_library_that_asked_for_it():
    stack = frames(
        f"{SP}/gunicorn/workers/gthread.py",
        f"{SP}/flask/app.py",
        "/work/main/services/gateway/routes.py",
        f"{SP}/requests/sessions.py",
        f"{STD}/json/encoder.py",
    )
    assert attribute(stack) == "requests"


def test_opentelemetry_is_split_into_instrumentation_sdk_and_export():
    assert (
        attribute(frames(f"{SP}/opentelemetry/instrumentation/flask/__init__.py")) == "otel instrumentation"
    )
    assert attribute(frames(f"{SP}/opentelemetry/sdk/trace/__init__.py")) == "otel sdk/api"
    assert attribute(frames(f"{SP}/opentelemetry/exporter/otlp/proto/common/_internal/__init__.py")) == (
        "otel export"
    )


def test_everything_the_batch_thread_does_is_export_work():
    stack = frames(
        f"{STD}/threading.py",
        f"{SP}/opentelemetry/sdk/_shared_internal/__init__.py",
        f"{SP}/google/protobuf/internal/encoder.py",
    )
    assert attribute(stack) == "otel export (batch thread)"


def test_our_code_and_pure_stdlib_stacks():
    assert attribute(frames(f"{SP}/flask/app.py", "/work/main/services/users/routes.py")) == "services (ours)"
    assert attribute(frames(f"{STD}/threading.py", f"{STD}/selectors.py")) == "stdlib selectors"


def test_collapsed_profile_is_summarised_per_request():
    text = "\n".join(
        [
            f'process 1:"gunicorn";f ({SP}/flask/app.py:1);g ({STD}/json/encoder.py:2) 30',
            f"f ({SP}/opentelemetry/sdk/trace/__init__.py:1) 10",
            "garbage line",
        ]
    )
    assert [count for _, count in parse_collapsed(text)] == [30, 10]
    summary = summarise_collapsed(text)
    assert summary.samples == 40
    assert summary.categories == {"flask": 30, "otel sdk/api": 10}
    document = summary.as_dict(requests=100)
    # 40 samples at 100 Hz = 400 ms of CPU over 100 requests.
    assert document["cpu_ms_per_req"] == pytest.approx(4.0)
    assert document["categories"][0] == {"category": "flask", "share": 0.75, "cpu_ms_per_req": 3.0}
    assert document["top_functions"][0]["function"] == "g (json/encoder.py)"


def test_paths_as_py_spy_shortens_them_are_classified_too():
    assert attribute(frames("gunicorn/workers/gthread.py", "kombu/messaging.py", "socket.py")) == "kombu"
    assert attribute(frames("threading.py", "<frozen importlib._bootstrap>")) == "stdlib threading"
    assert attribute(frames("/work/main/services/gateway/routes.py")) == "services (ours)"


def test_measured_cpu_is_split_by_the_sample_shares():
    text = f"f ({SP}/flask/app.py:1) 30\nf ({SP}/opentelemetry/sdk/trace/__init__.py:1) 10\n"
    document = summarise_collapsed(text).as_dict(requests=100, measured_ms_per_req=2.0)
    assert document["sampled_ms_per_req"] == pytest.approx(4.0)  # what the wall-clock samples suggest
    assert document["cpu_ms_per_req"] == 2.0
    assert [c["cpu_ms_per_req"] for c in document["categories"]] == pytest.approx([1.5, 0.5])
