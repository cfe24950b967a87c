"""Secrets written in a config never show in its models' repr (a logged config, an error's context)."""

from __future__ import annotations

from extproc.config.auth import ApiKeyEntry, OpenFgaPolicy
from extproc.config.ledger import AdminApiConfig


def test_an_inline_api_key_is_not_in_the_repr() -> None:
    entry = ApiKeyEntry.model_validate({"key": "sk-inline-secret-123"})
    assert entry.key == "sk-inline-secret-123"
    assert "sk-inline-secret-123" not in repr(entry)


def test_the_openfga_token_is_not_in_the_repr() -> None:
    fga = OpenFgaPolicy.model_validate({"url": "http://127.0.0.1:8080", "storeId": "s", "apiToken": "fga-secret-456"})
    assert fga.api_token == "fga-secret-456"
    assert "fga-secret-456" not in repr(fga)


def test_the_admin_token_is_not_in_the_repr() -> None:
    admin = AdminApiConfig.model_validate({"port": 15021, "token": "admin-secret-789"})
    assert admin.token == "admin-secret-789"
    assert "admin-secret-789" not in repr(admin)
