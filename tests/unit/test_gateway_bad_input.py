"""Bad input at the gateway: every case is a 4xx JSON error with a message and the trace id, never a 500.

The basic cases are in test_gateway_service.py; these are the ones that used to escape as a 500 (deeply
nested JSON, a user id of thousands of digits, a lone surrogate that cannot be stored) and the unicode,
content-type and method edge cases around them. Names that are merely unusual must still be accepted.
"""

from __future__ import annotations

import io

import pytest
import redis

JSON = "application/json"


def assert_json_error(response, status: int, error: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "message", "trace_id"} and body["message"]
    assert len(body["trace_id"]) == 32
    assert "Traceback" not in response.get_data(as_text=True)
    if error:
        assert body["error"] == error
    return body


def body(name: str = "Ada", email: str = "ada@example.org") -> str:
    # Written by hand, not json.dumps: some cases are escapes json.dumps would never produce.
    return f'{{"name": "{name}", "email": "{email}"}}'


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ("[" * 5000 + "]" * 5000, "invalid_body"),  # RecursionError in the decoder, under the size limit
        ('{"a":' * 2000 + "1" + "}" * 2000, "invalid_body"),
        ("9" * 5000, "invalid_body"),  # over Python's int-string limit: ValueError in the decoder
        (b"\xff\xfe{bad utf", "invalid_body"),
        ("", "invalid_body"),
        ("null", "invalid_body"),
        ("[]", "invalid_body"),
        ('"just a string"', "invalid_body"),
        ('{"name": "Ada"}', "invalid_email"),  # missing field
        ('{"email": "ada@example.org"}', "invalid_name"),
        ('{"name": null, "email": "ada@example.org"}', "invalid_name"),
        ('{"name": ["Ada"], "email": "ada@example.org"}', "invalid_name"),
        ('{"name": "Ada", "email": 12}', "invalid_email"),
        ('{"name": "Ada", "email": "ada@example.org", "admin": true}', "invalid_body"),
        (body(name="   "), "invalid_name"),
        (body(name="x" * 101), "invalid_name"),
        (body(email="a@" + "b" * 250 + ".org"), "invalid_email"),
        (body(email="not-an-address"), "invalid_email"),
        (body(name="\\ud800"), "invalid_name"),  # a lone surrogate: cannot be encoded, stored or logged
        (body(name="Ada\\udfff"), "invalid_name"),
        (body(name="A\\u0000B"), "invalid_name"),  # NUL
        (body(name="Ada\\u0007"), "invalid_name"),  # a control character (BEL)
        (body(name="Ada\\u2028Lovelace"), "invalid_name"),  # line separator
        (body(name="\\u202eecalevoL adA"), "invalid_name"),  # right-to-left OVERRIDE ("Trojan Source")
        (body(name="Ada\\u2066x\\u2069"), "invalid_name"),  # bidi isolate
        (body(email="ada\\u0000@example.org"), "invalid_email"),
        (body(email="\\ud83d@example.org"), "invalid_email"),  # half an emoji
    ],
)
def test_bad_bodies_are_400(client, data, error):
    assert_json_error(client.post("/api/users", data=data, content_type=JSON), 400, error)


@pytest.mark.parametrize(
    "name",
    [
        "Ada \U0001f469\u200d\U0001f4bb",  # emoji with a zero-width joiner
        "\u05e2\u05d3\u05d4 \u200f",  # Hebrew with a right-to-left MARK (allowed: real names need it)
        "Zoë Ångström-Øster",
        "李小龍",
    ],
)
def test_unusual_but_valid_names_are_accepted_and_round_trip(client, name):
    response = client.post("/api/users", json={"name": name, "email": "u@example.org"})
    assert response.status_code == 201, response.get_data(as_text=True)
    user_id = response.get_json()["user"]["id"]
    assert client.get(f"/api/users/{user_id}").get_json()["user"]["name"] == name


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        (None, 415),
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/json; charset=utf-8", 201),
        ("application/merge-patch+json", 201),  # a +json type is JSON (werkzeug's is_json)
    ],
)
def test_content_types(client, content_type, status):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/api/users", data=body(), headers=headers)
    if status == 201:
        assert response.status_code == 201
    else:
        assert_json_error(response, status, "unsupported_media_type")


def test_body_over_the_limit_is_413_even_without_a_content_length(client):
    # Chunked transfer: no Content-Length to refuse up front, so the limit must hold while reading.
    response = client.post(
        "/api/users",
        input_stream=io.BytesIO(b"x" * 40_000),
        content_type=JSON,
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_json_error(response, 413)


@pytest.mark.parametrize(
    "user_id",
    [
        "9" * 5000,
        "9" * 17,
        str(2**53 + 1),
        "0",
        "00",
        "-1",
        "+1",
        "1.0",
        "1e3",
        " 1",
        "%00",
        "１",
        "١٢",
        "0x1",
    ],
)
def test_invalid_user_ids_are_400(client, user_id):
    assert_json_error(client.get(f"/api/users/{user_id}"), 400, "invalid_user_id")
    assert_json_error(client.post(f"/api/users/{user_id}/report"), 400, "invalid_user_id")


@pytest.mark.parametrize(
    ("user_id", "message"),
    [
        ("99999999999999999999999999", "a user id is at most 9007199254740992"),  # too large, not negative
        (str(2**53 + 1), "a user id is at most 9007199254740992"),
        ("0" * 5000 + "7" * 20, "a user id is at most 9007199254740992"),
        ("0", "a user id is a positive integer (0 is not)"),
        ("-1", "a user id is a positive integer"),
        ("abc", "a user id is a positive integer"),
    ],
)
def test_an_invalid_user_id_is_told_what_is_wrong(client, user_id, message):
    assert (
        assert_json_error(client.get(f"/api/users/{user_id}"), 400, "invalid_user_id")["message"] == message
    )


def test_leading_zeros_are_the_same_user_id(client):
    assert_json_error(client.get("/api/users/" + "0" * 5000 + "987654321"), 404, "user_not_found")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"name": "Ada"}', "missing field(s): email"),
        ('{"email": "ada@example.org"}', "missing field(s): name"),
        ("{}", "missing field(s): name, email"),
        ('{"name": "Ada", "email": 12}', "'email' must be a string, an address like someone@example.org"),
        (body(email="not-an-address"), "'email' must be an address like someone@example.org"),
    ],
)
def test_a_bad_body_is_told_what_is_wrong(client, data, message):
    response = client.post("/api/users", data=data, content_type=JSON)
    assert assert_json_error(response, 400)["message"] == message


@pytest.mark.parametrize("job_id", ["x" * 5000, "00000000-0000-0000-0000-00000000000g", "%00", "{}"])
def test_invalid_job_ids_are_400(client, job_id):
    assert_json_error(client.get(f"/api/jobs/{job_id}"), 400, "invalid_job_id")


def test_wrong_method_is_405_json_and_says_what_is_allowed(client):
    response = client.put("/api/users", json={})
    assert_json_error(response, 405, "method_not_allowed")
    # Exactly what the route answers to (Flask adds OPTIONS to every route).
    assert sorted(response.headers["Allow"].split(", ")) == ["OPTIONS", "POST"]


def test_users_service_refuses_deep_json_too(users_client):
    response = users_client.post(
        "/users", data="[" * 5000, content_type=JSON, headers={"X-Service-Token": "test-token"}
    )
    assert_json_error(response, 400, "invalid_body")


def test_nothing_was_queued_for_refused_bodies(client, valkey_url):
    client.post("/api/users", data=body(name="\\ud800"), content_type=JSON)
    assert redis.Redis.from_url(valkey_url).llen("celery") == 0
