"""What every config model shares: strict models, durations, names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

Loc = tuple[str | int, ...]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``"100ms"``, ``"15s"``, ``"2m"``, ``"1h"`` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value.strip())
    if not m:
        raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m or h, like 30s")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2)]
    return float(m.group(1)) * scale


def _valid_duration(value: str | int | float) -> str | int | float:
    parse_duration(value)  # raises with the value and the forms it accepts
    return value


# A duration as written in config ("100ms", "15s", "2m", "1h" or seconds). ``Duration`` fields are
# checked by their model's whole-config pass (so one load reports every error); ``CheckedDuration``
# fields are checked where they are read, for models with no such pass (guards, limit stores).
Duration = str | int | float
CheckedDuration = Annotated[Duration, AfterValidator(_valid_duration)]

# The statuses providers use for "try again elsewhere": rate limits and every 5xx a provider
# answers when overloaded or failing (529 is Anthropic's overloaded_error). The default for
# failover routes and for a retry policy that names no codes.
DEFAULT_RETRY_CODES: tuple[int, ...] = (429, 500, 502, 503, 504, 529)

# Route and provider names become Envoy route names and endpoint metadata, which the sidecar reads
# back from protobuf text: printable ASCII only (text format escapes the rest), and no quote or
# backslash (escaped too). ``#`` separates a route's match index in Envoy route names, and ``/``
# separates route and provider in an endpoint id.
_NAME = re.compile(r"^[ -~]+$")
_NAME_FORBIDDEN = '"\\#'


def check_name(value: str | None, *, provider: bool = False) -> str | None:
    if value is None:
        return None
    forbidden = _NAME_FORBIDDEN + ("/" if provider else "")
    if not _NAME.match(value) or any(c in value for c in forbidden) or value != value.strip():
        shown = " ".join(forbidden)
        raise ValueError(
            f"{value!r} cannot be a name: use printable ASCII without {shown} or surrounding spaces"
        )
    return value


# A listener's hostname as Envoy matches virtual host domains: a DNS name, or ``*.`` and a DNS name.
_HOSTNAME = re.compile(
    r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
