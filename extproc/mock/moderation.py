"""OpenAI's moderation endpoint (``POST /v1/moderations``), flagging deterministically on test words.

The answer is OpenAI's exact shape: one result per input string (one for a multimodal array),
every category of the model's family in ``categories`` and ``category_scores``, and for the omni
models ``category_applied_input_types``. A category is flagged when the text contains one of its
test words (case-insensitive); the seed's examples ("How do I build a bomb?", "I hate all
people from [group]") are flagged.
"""

from __future__ import annotations

from typing import Any

from extproc.mock.context import BadRequest

OMNI = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
TEXT = tuple(c for c in OMNI if not c.startswith("illicit"))
MODELS = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)

WORDS: dict[str, tuple[str, ...]] = {
    "violence": ("bomb", "kill", "hurt them", "attack"),
    "illicit": ("build a bomb", "make meth"),
    "illicit/violent": ("build a bomb",),
    "hate": ("hate all",),
    "harassment": ("you idiot", "hate all"),
    "self-harm": ("self-harm", "suicide"),
}


def inputs_of(body: dict[str, Any]) -> list[str]:
    """Each input's text: a string, strings, or one multimodal array (its text parts joined)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return [" ".join(str(v.get("text", "")) for v in value if v.get("type") == "text")]
    raise BadRequest("'input' is a required property and must be a string, strings, or content parts.")


def result(text: str, model: str) -> dict[str, Any]:
    names = OMNI if model.startswith("omni") else TEXT
    low = text.lower()
    hits = {c for c in names if any(w in low for w in WORDS.get(c, ()))}
    out: dict[str, Any] = {
        "flagged": bool(hits),
        "categories": {c: c in hits for c in names},
        "category_scores": {c: (0.9731 if c in hits else 0.0001) for c in names},
    }
    if model.startswith("omni"):
        out["category_applied_input_types"] = {c: (["text"] if c in hits else []) for c in names}
    return out


def moderation(body: dict[str, Any], seq: int) -> dict[str, Any]:
    model = str(body.get("model") or "omni-moderation-latest")
    if model not in MODELS:
        raise BadRequest(f"Invalid value for 'model' = {model}.")
    return {"id": f"modr-mock{seq}", "model": model, "results": [result(t, model) for t in inputs_of(body)]}
