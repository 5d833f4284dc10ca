"""The gateway's baggage policy: an allow-list of keys, a size limit, bad members dropped one by one."""

from __future__ import annotations

import pytest

from services.gateway.baggage_policy import BaggagePolicy

DEFAULT = BaggagePolicy.from_setting("tracehop.*", 1024)


@pytest.mark.parametrize(
    ("header", "passed_on", "dropped"),
    [
        ("tracehop.tenant=acme", "tracehop.tenant=acme", 0),
        ("tracehop.tenant=acme,unrelated=x,user.email=a%40b.org", "tracehop.tenant=acme", 2),
        # Properties and optional whitespace stay with their member; issue 6's fault grammar is a valid value.
        (
            "tracehop.a = 1;prop;p2=v , tracehop.fault=users:delay=300ms",
            "tracehop.a = 1;prop;p2=v,tracehop.fault=users:delay=300ms",
            0,
        ),
        # Malformed members go, well-formed neighbours stay.
        ('tracehop.bad="quoted",tracehop.ok=1', "tracehop.ok=1", 1),
        ("tracehop.sp=a b,tracehop.ok=1", "tracehop.ok=1", 1),
        ("=novalue,tracehop.ok=1,,  ,", "tracehop.ok=1", 1),
        ("tracehop.ünï=1,tracehop.ok=1", "tracehop.ok=1", 1),
        ("TRACEHOP.case=1", "", 1),  # keys are case-sensitive
        ("", "", 0),
    ],
)
def test_only_allowed_well_formed_members_pass(header: str, passed_on: str, dropped: int):
    filtered = DEFAULT.filter(header)
    assert (filtered.header, filtered.dropped) == (passed_on, dropped)


def test_members_are_kept_in_order_while_they_fit():
    policy = BaggagePolicy.from_setting("tracehop.*", 40)
    filtered = policy.filter(f"tracehop.a=1,tracehop.big={'x' * 50},tracehop.b=2,tracehop.c=3")
    assert filtered.header == "tracehop.a=1,tracehop.b=2,tracehop.c=3"
    assert filtered.dropped == 1
    assert len(filtered.header) <= 40


def test_exact_keys_and_prefixes():
    policy = BaggagePolicy.from_setting(" tenant , tracehop.* ,", 1024)
    assert policy.allowed == ("tenant", "tracehop.*")
    assert policy.allows("tenant") and policy.allows("tracehop.x")
    assert not policy.allows("tenant2") and not policy.allows("tracehopx")


def test_an_empty_allowlist_passes_nothing():
    assert BaggagePolicy.from_setting("", 1024).filter("tracehop.a=1").header == ""


def test_a_hostile_header_costs_linear_time_and_passes_nothing():
    filtered = DEFAULT.filter("k=v," * 2000)
    assert filtered.header == "" and filtered.dropped == 2000


@pytest.mark.parametrize("value", ["ada@example.org", "ada%40example.org", "x;y=ada%40example.org"])
def test_an_email_address_never_travels_in_baggage_even_under_an_allowed_key(value: str):
    filtered = DEFAULT.filter(f"tracehop.user={value},tracehop.ok=1")
    assert (filtered.header, filtered.dropped) == ("tracehop.ok=1", 1)
