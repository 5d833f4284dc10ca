"""Property-based tests of the new-user validator shared by the gateway and users (hypothesis).

The properties a caller relies on: whatever JSON arrives, the validator either returns a name and an
address that every later step can store, log and encode, or refuses with a 400 ApiError — never anything
else. Example counts are kept small so `make test` stays quick; hypothesis shrinks any failure it finds.
"""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from services.clients.user_validation import MAX_EMAIL_LENGTH, MAX_NAME_LENGTH, parse_new_user
from services.web.http_errors import ApiError

FAST = settings(max_examples=200, deadline=None, database=None)  # no .hypothesis/ left in the tree

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Any code point, surrogates included: what a JSON `\uXXXX` escape can put into a Python string.
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=300)
names = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\u202e\u2066"
    ),
    min_size=1,
    max_size=MAX_NAME_LENGTH,
).filter(str.strip)
emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._+-", min_size=1, max_size=30),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=30),
    st.sampled_from(["org", "com", "example", "中国"]),
)


def outcome(body: object) -> tuple[str, str] | ApiError:
    try:
        return parse_new_user(body)
    except ApiError as error:
        return error


@FAST
@given(json_values)
def test_any_json_is_accepted_or_refused_with_a_400(body):
    result = outcome(body)
    if isinstance(result, ApiError):
        assert result.status == 400
        assert result.error in {"invalid_body", "invalid_name", "invalid_email"}
    else:
        assert isinstance(result, tuple)


@FAST
@given(any_text, any_text)
def test_what_is_accepted_can_be_stored_logged_and_encoded(name, email):
    result = outcome({"name": name, "email": email})
    if isinstance(result, ApiError):
        assert result.status == 400
        return
    accepted_name, accepted_email = result
    for value, limit in ((accepted_name, MAX_NAME_LENGTH), (accepted_email, MAX_EMAIL_LENGTH)):
        value.encode("utf-8")  # a lone surrogate would raise here (and in Redis, and in every log sink)
        assert 0 < len(value) <= limit and value == value.strip()
        assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
        assert "\u202e" not in value


@FAST
@given(names, emails)
def test_valid_users_are_accepted_stripped(name, email):
    assert parse_new_user({"name": f" {name} ", "email": email}) == (name.strip(), email)


@FAST
@given(names, emails, st.text(min_size=1, max_size=10).filter(lambda k: k not in ("name", "email")))
def test_any_unknown_field_is_refused(name, email, extra):
    result = outcome({"name": name, "email": email, extra: 1})
    assert isinstance(result, ApiError) and result.error == "invalid_body"


@FAST
@given(names, emails, st.integers(min_value=1, max_value=500))
def test_over_long_values_are_refused(name, email, extra):
    long_name = outcome({"name": "n" * (MAX_NAME_LENGTH + extra), "email": email})
    long_email = outcome({"name": name, "email": "e" * (MAX_EMAIL_LENGTH + extra) + "@x.org"})
    assert isinstance(long_name, ApiError) and long_name.error == "invalid_name"
    assert isinstance(long_email, ApiError) and long_email.error == "invalid_email"


@FAST
@given(names, emails, st.sampled_from(["\x00", "\ud800", "\udfff", "\u202e", "\u2066", "\u2028", "\x1b"]))
def test_refused_characters_anywhere_are_refused(name, email, bad):
    position = len(name) // 2
    result = outcome({"name": name[:position] + bad + name[position:], "email": email})
    assert isinstance(result, ApiError) and result.error == "invalid_name"
