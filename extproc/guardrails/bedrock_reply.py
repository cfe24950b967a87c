"""An ApplyGuardrail answer as a verdict: block, mask or pass (the AWS API reference's fields).

- ``action: NONE``: pass.
- ``action: GUARDRAIL_INTERVENED`` with any assessment ``BLOCKED``: reject. The client gets
  "Request (or Response) rejected by Bedrock Guardrails: " and the guardrail's own message
  (``outputs[0].text``: its blocked messaging), as the seed's Bedrock webhook answers.
- Intervened and only ``ANONYMIZED``: the outputs' texts (one per text sent) replace the texts.
  Outputs that do not line up with the texts cannot be placed: ``Unplaceable`` carries the
  reject to answer with, and the guard first asks again one text at a time (a text is never
  sent on unmasked).

What was found is summed up from the assessments, for the log and the usage record, by
category (``pii:EMAIL``, ``content:VIOLENCE``, ``topic:<name>``, ...), never by the text
matched; ``reason`` reads like the seed's "BLOCKED: PII detected: EMAIL".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from extproc.config.guard_parts import DEFAULT_BODY, Rejection
from extproc.guardrails.base import ALLOW, MASK, Verdict, rejected

BLOCKED, ANONYMIZED = "BLOCKED", "ANONYMIZED"
_PREFIX = {"request": "Request", "response": "Response"}


class InvalidReply(Exception):
    """Not an ApplyGuardrail answer the guard can act on (the message says why)."""


class Unplaceable(Exception):
    """An anonymization whose outputs are not one per text sent; ``verdict`` rejects instead."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@dataclass
class Findings:
    """The assessments' interventions: category names, by the action taken."""

    blocked: list[str] = field(default_factory=list)
    anonymized: list[str] = field(default_factory=list)
    described: dict[str, list[str]] = field(default_factory=dict)  # action -> "PII detected: EMAIL", ...

    def add(self, action: Any, category: str, what: str, detail: str) -> None:
        if action not in (BLOCKED, ANONYMIZED):
            return  # NONE: detected but let through
        names = self.blocked if action == BLOCKED else self.anonymized
        if category not in names:
            names.append(category)
            self.described.setdefault(action, [])
            _describe(self.described[action], what, detail)

    def reason(self) -> str:
        # What blocked first: it is what decided.
        order = [a for a in (BLOCKED, ANONYMIZED) if a in self.described]
        parts = [f"{action}: {'; '.join(self.described[action])}" for action in order]
        return ". ".join(parts)[:200]


def _describe(out: list[str], what: str, detail: str) -> None:
    """A description, merged into one of the same kind: "PII detected: EMAIL, PHONE"."""
    for i, item in enumerate(out):
        if item.startswith(what + ": "):
            out[i] = f"{item}, {detail}"
            return
    out.append(f"{what}: {detail}")


def _items(policy: Any, key: str) -> list[dict[str, Any]]:
    found = policy.get(key) if isinstance(policy, dict) else None
    return [i for i in found if isinstance(i, dict)] if isinstance(found, list) else []


def findings(assessments: Any) -> Findings:
    out = Findings()
    for a in assessments if isinstance(assessments, list) else []:
        if not isinstance(a, dict):
            continue
        for t in _items(a.get("topicPolicy"), "topics"):
            out.add(t.get("action"), f"topic:{t.get('name')}", "Denied topic", str(t.get("name")))
        for f in _items(a.get("contentPolicy"), "filters"):
            out.add(f.get("action"), f"content:{f.get('type')}", "Content policy", str(f.get("type")).lower())
        words = a.get("wordPolicy")
        for w in _items(words, "customWords"):
            out.add(w.get("action"), "word:custom", "Word policy", "custom word")
        for w in _items(words, "managedWordLists"):
            out.add(w.get("action"), f"word:{w.get('type')}", "Word policy", str(w.get("type")).lower())
        sensitive = a.get("sensitiveInformationPolicy")
        for p in _items(sensitive, "piiEntities"):
            out.add(p.get("action"), f"pii:{p.get('type')}", "PII detected", str(p.get("type")))
        for r in _items(sensitive, "regexes"):
            out.add(r.get("action"), f"regex:{r.get('name')}", "Regex", str(r.get("name")))
        for g in _items(a.get("contextualGroundingPolicy"), "filters"):
            out.add(g.get("action"), f"grounding:{g.get('type')}", "Contextual grounding", str(g.get("type")))
        # Automated reasoning and policies this code does not know yet: any other BLOCKED still blocks.
        known = {"topicPolicy", "contentPolicy", "wordPolicy", "sensitiveInformationPolicy"}
        known |= {"contextualGroundingPolicy", "invocationMetrics", "appliedGuardrailDetails"}
        for name, policy in a.items():
            if name not in known and _says_blocked(policy):
                out.add(BLOCKED, name, "Policy", name)
    return out


def _says_blocked(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("action") == BLOCKED or any(_says_blocked(v) for v in value.values())
    if isinstance(value, list):
        return any(_says_blocked(v) for v in value)
    return False


def _output_texts(reply: dict[str, Any]) -> list[str]:
    outputs = reply.get("outputs")
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        raise InvalidReply("outputs is not a list")
    texts = [o.get("text") if isinstance(o, dict) else None for o in outputs]
    if not all(isinstance(t, str) for t in texts):
        raise InvalidReply("an output has no text")
    return texts  # type: ignore[return-value]


def read_reply(phase: str, reply: Any, count: int, rejection: Rejection) -> Verdict:
    """The verdict on ``count`` texts sent as ``source`` INPUT (requests) or OUTPUT (answers)."""
    if not isinstance(reply, dict):
        raise InvalidReply("the answer is not an object")
    action = reply.get("action")
    if action == "NONE":
        return Verdict(ALLOW)
    if action != "GUARDRAIL_INTERVENED":
        raise InvalidReply(f"unknown action {action!r}")
    found = findings(reply.get("assessments"))
    outputs = _output_texts(reply)
    matched = found.blocked + [c for c in found.anonymized if c not in found.blocked]
    if not found.blocked and len(outputs) == count:
        return Verdict(MASK, list(outputs), reason=found.reason() or "anonymized", matched=matched)
    reason = found.reason() or "intervened"
    if not found.blocked:
        reason = f"{reason} (the guardrail gave {len(outputs)} outputs for {count} texts: not maskable)"
    verdict = rejected(rejection, reason=reason[:200], matched=matched)
    if rejection.body == DEFAULT_BODY:  # no body configured: the guardrail's own message
        message = outputs[0] if found.blocked and outputs and outputs[0] else found.reason()
        verdict.message = f"{_PREFIX[phase]} rejected by Bedrock Guardrails: {message or 'intervened'}"
    if not found.blocked:
        raise Unplaceable(verdict)
    return verdict
