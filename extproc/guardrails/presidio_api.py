"""Presidio's analyzer and anonymizer REST APIs, as the presidio-analyzer and -anonymizer images serve them.

- ``POST {analyzer}/analyze`` with ``{"text", "language", "entities"?, "score_threshold"?}``
  answers a JSON list of ``{"entity_type", "start", "end", "score", "analysis_explanation"}``
  (character offsets into the text).
- ``POST {anonymizer}/anonymize`` with ``{"text", "analyzer_results": [those], "anonymizers"?:
  {ENTITY or DEFAULT: {"type": "replace", "new_value": ...}}}`` answers ``{"text", "items"}``:
  ``text`` is the anonymized text.

Anything else (no answer before the deadline, an HTTP error, a body of another shape) raises
``GuardCallError`` saying why, for the guard's fallback or failure mode.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from extproc.config.presidio import Presidio
from extproc.guardrails.http import GuardCallError, post_json


@dataclass(frozen=True)
class Entity:
    entity_type: str
    start: int
    end: int
    score: float

    def shifted(self, by: int) -> Entity:
        return Entity(self.entity_type, max(0, self.start + by), self.end + by, self.score)

    def json(self) -> dict[str, Any]:
        return {"entity_type": self.entity_type, "start": self.start, "end": self.end, "score": self.score}


def base_url(configured: str) -> str:
    url = configured.rstrip("/")
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def remaining(deadline: float) -> float:
    return max(0.05, deadline - asyncio.get_running_loop().time())


def read_entities(reply: Any, length: int) -> list[Entity]:
    """The analyzer's answer (GuardCallError: not a list of results within the text)."""
    if not isinstance(reply, list):
        raise GuardCallError("the analyzer's answer is not a list of results")
    out: list[Entity] = []
    for item in reply:
        if not isinstance(item, dict):
            raise GuardCallError("an analyzer result is not an object")
        kind, start, end, score = (item.get(k) for k in ("entity_type", "start", "end", "score"))
        if (
            not isinstance(kind, str)
            or not isinstance(start, int)
            or not isinstance(end, int)
            or not isinstance(score, int | float)
            or not 0 <= start < end <= length
        ):
            raise GuardCallError("an analyzer result has no entity_type, start, end and score in the text")
        out.append(Entity(kind, start, end, float(score)))
    return sorted(out, key=lambda e: (e.start, -e.end))


class PresidioAPI:
    def __init__(self, config: Presidio) -> None:
        self.config = config
        self.analyze_url = base_url(config.analyzer_url) + "/analyze"
        self.anonymize_url = base_url(config.anonymizer_url or config.analyzer_url) + "/anonymize"

    async def analyze(self, text: str, deadline: float) -> list[Entity]:
        if not text:
            return []  # the analyzer answers "No text provided" with HTTP 500
        body: dict[str, Any] = {"text": text, "language": self.config.language}
        if self.config.entities:
            body["entities"] = self.config.entities
        if self.config.score_threshold is not None:
            body["score_threshold"] = self.config.score_threshold
        status, reply = await post_json(self.analyze_url, body, {}, remaining(deadline))
        if status != 200:
            raise GuardCallError(f"the analyzer answered HTTP {status}{_detail(reply)}")
        return read_entities(reply, len(text))

    async def anonymize(self, text: str, found: list[Entity], deadline: float) -> tuple[str, list[str]]:
        """The anonymized text, and the entity types the anonymizer replaced (overlaps resolved)."""
        body: dict[str, Any] = {"text": text, "analyzer_results": [e.json() for e in found]}
        if self.config.anonymizers:
            body["anonymizers"] = self.config.anonymizers
        status, reply = await post_json(self.anonymize_url, body, {}, remaining(deadline))
        if status != 200:
            raise GuardCallError(f"the anonymizer answered HTTP {status}{_detail(reply)}")
        if not isinstance(reply, dict) or not isinstance(reply.get("text"), str):
            raise GuardCallError("the anonymizer's answer has no text")
        items = reply.get("items")
        applied = (
            [i.get("entity_type") for i in items if isinstance(i, dict)] if isinstance(items, list) else []
        )
        names = [n for n in applied if isinstance(n, str)]
        # The anonymizer lists its items from the end of the text: in text order, the first of each.
        return reply["text"], list(dict.fromkeys(reversed(names))) or kinds(found)


def _detail(reply: Any) -> str:
    error = reply.get("error") if isinstance(reply, dict) else None
    return f" ({error[:200]})" if isinstance(error, str) else ""


def resolved(found: list[Entity]) -> list[Entity]:
    """Without the entities inside another one scored at least as high, as the anonymizer drops them
    (a URL inside an email address)."""
    return [
        e
        for e in found
        if not any(o != e and o.start <= e.start and e.end <= o.end and o.score >= e.score for o in found)
    ]


def placeholders(text: str, found: list[Entity]) -> str:
    """``text`` with each entity as ``<ENTITY>``, for a rejected prompt in the log (no anonymizer call)."""
    parts, at = [], 0
    for e in resolved(found):
        if e.start < at:
            continue  # overlaps the one before
        parts += [text[at : e.start], f"<{e.entity_type}>"]
        at = e.end
    parts.append(text[at:])
    return "".join(parts)


def kinds(found: list[Entity]) -> list[str]:
    """The entity types found, in text order, once each (contained ones left out)."""
    out: list[str] = []
    for e in resolved(found):
        if e.entity_type not in out:
            out.append(e.entity_type)
    return out
