"""Which of a caller's W3C `baggage` entries the gateway passes on: an allow-list of keys and a size limit.

Baggage travels with every downstream call and job, and our BaggageSpanProcessor copies `tracehop.*`
entries onto every span. An outside caller must therefore not be able to send arbitrary or huge baggage
through the whole system. The grammar is the W3C Baggage one:

    list-member = key OWS "=" OWS value *( OWS ";" OWS property )
    key = token ; value = *baggage-octet ; property = key OWS "=" OWS value / key OWS

Members that do not parse are dropped one by one (the rest stay), members whose key is not allowed are
dropped, and allowed members are kept in order while they fit in `max_bytes`. A member whose value (or a
property) holds an e-mail address is dropped whatever its key: allowed `tracehop.*` entries become span
attributes on every span of the trace, and personal data must not (W3C Baggage, "Privacy Considerations").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from services.telemetry.safe_attributes import mask_emails

_OWS = " \t"
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_PROPERTY = rf"{_TOKEN}(?:[ \t]*=[ \t]*{_OCTETS})?"
_MEMBER = re.compile(rf"({_TOKEN})[ \t]*=[ \t]*{_OCTETS}(?:[ \t]*;[ \t]*{_PROPERTY})*")


@dataclass(frozen=True)
class FilteredBaggage:
    header: str  # what travels on ("" = no baggage header at all)
    kept: int
    dropped: int


@dataclass(frozen=True)
class BaggagePolicy:
    """`allowed`: exact keys, or prefixes written with a trailing `*` (`tracehop.*`)."""

    allowed: tuple[str, ...]
    max_bytes: int

    @classmethod
    def from_setting(cls, allowlist: str, max_bytes: int) -> BaggagePolicy:
        return cls(tuple(item.strip() for item in allowlist.split(",") if item.strip()), max_bytes)

    def allows(self, key: str) -> bool:
        for pattern in self.allowed:
            if pattern.endswith("*"):
                if key.startswith(pattern[:-1]):
                    return True
            elif key == pattern:
                return True
        return False

    def filter(self, header: str) -> FilteredBaggage:
        kept: list[str] = []
        dropped = 0
        size = 0
        for raw in header.split(","):
            member = raw.strip(_OWS)
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None or not self.allows(match.group(1)) or _holds_email(member):
                dropped += 1
                continue
            added = len(member.encode()) + (1 if kept else 0)  # the comma that joins it
            if size + added > self.max_bytes:
                dropped += 1
                continue
            kept.append(member)
            size += added
        return FilteredBaggage(",".join(kept), len(kept), dropped)


def _holds_email(member: str) -> bool:
    decoded = unquote(member)  # baggage values are percent-encoded: `ada%40example.org`
    return mask_emails(decoded) != decoded
