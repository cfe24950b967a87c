"""OPA's input document, field by field, against opa-envoy-plugin's (the envoy-primer example,
``envoyauth/request.go`` and ``protomap.go``)."""

from __future__ import annotations

import base64

import pytest

from extproc.authz.caller import Caller
from extproc.authz.opa_input import InputError, input_document, parsed_body, parsed_path_and_query
from tests.unit.policy_util import auth_request


def primer_example() -> dict:
    req = auth_request(
        "POST",
        "/people?lang=en",
        {"firstname": "Charlie"},
        headers={"authorization": "Bearer eyJ.x.y"},
        source=("172.17.0.1", 61402),
    )
    req.check.attributes.source.principal = "spiffe://cluster.local/ns/default/sa/client"
    return input_document(req)


def test_the_document_has_the_plugins_top_level_keys() -> None:
    doc = primer_example()
    assert set(doc) == {
        "attributes",
        "parsed_body",
        "parsed_path",
        "parsed_query",
        "truncated_body",
        "version",
        "source_principal",
    }
    assert doc["version"] == {"encoding": "protojson", "ext_authz": "v3"}
    assert doc["parsed_body"] == {"firstname": "Charlie"}
    assert doc["parsed_path"] == ["people"]
    assert doc["parsed_query"] == {"lang": ["en"]}
    assert doc["truncated_body"] is False
    assert doc["source_principal"] == "spiffe://cluster.local/ns/default/sa/client"


def test_attributes_use_json_names_and_plain_values() -> None:
    attrs = primer_example()["attributes"]
    assert attrs["source"]["address"] == {"socketAddress": {"address": "172.17.0.1", "portValue": 61402}}
    assert attrs["destination"]["address"]["socketAddress"]["portValue"] == 3000
    assert attrs["contextExtensions"] == {"route": "r1"}
    http = attrs["request"]["http"]
    assert http["method"] == "POST"
    assert http["path"] == "/people?lang=en"
    assert http["host"] == "gw.example.com"
    assert http["protocol"] == "HTTP/1.1"
    assert http["id"] == "4711"
    # int64 as a number (protomap's value.Interface()), not protojson's string
    assert http["size"] == len('{"firstname": "Charlie"}')
    assert http["headers"][":path"] == "/people?lang=en"
    assert http["headers"]["authorization"] == "Bearer eyJ.x.y"  # the policy's to read
    # google.protobuf.Timestamp through the reflection walk
    assert attrs["request"]["time"] == {"seconds": 1788256800, "nanos": 500000000}


def test_a_utf8_body_is_the_body_string() -> None:
    http = primer_example()["attributes"]["request"]["http"]
    assert http["body"] == '{"firstname": "Charlie"}'
    assert "rawBody" not in http


def test_other_bytes_stay_raw_body_in_base64() -> None:
    raw = b"\xff\xfe\x00binary"
    doc = input_document(auth_request("POST", "/upload", raw, content_type="application/octet-stream"))
    http = doc["attributes"]["request"]["http"]
    assert "body" not in http
    assert base64.b64decode(http["rawBody"]) == raw
    assert doc["parsed_body"] is None and doc["truncated_body"] is False


def test_unset_fields_are_absent() -> None:
    doc = input_document(auth_request("GET", "/v1/models", None, content_type=None))
    http = doc["attributes"]["request"]["http"]
    assert "body" not in http and "rawBody" not in http and "size" not in http
    assert "principal" not in doc["attributes"]["source"]
    assert "source_principal" not in doc
    assert "metadataContext" not in doc["attributes"]
    assert doc["parsed_body"] is None


def test_envoy_metadata_is_plain_objects() -> None:
    req = auth_request()
    req.check.attributes.metadata_context.filter_metadata["envoy.filters.http.rbac"].update(
        {"shadow": "x", "n": 2}
    )
    meta = input_document(req)["attributes"]["metadataContext"]["filterMetadata"]
    assert meta == {"envoy.filters.http.rbac": {"shadow": "x", "n": 2}}


def test_verified_jwt_claims_are_where_envoys_jwt_authn_puts_them() -> None:
    claims = {"sub": "ada", "groups": ["engineering"]}
    doc = input_document(auth_request(), Caller(method="jwt", subject="ada", claims=claims))
    meta = doc["attributes"]["metadataContext"]["filterMetadata"]
    assert meta["envoy.filters.http.jwt_authn"] == {"jwt_payload": claims}


def test_an_api_key_caller_adds_no_claims() -> None:
    doc = input_document(auth_request(), Caller(method="api_key", api_key_id="k1", groups=["engineering"]))
    assert "metadataContext" not in doc["attributes"]


# --- parsed_path and parsed_query, as Go's url package ------------------------------------------


@pytest.mark.parametrize(
    ("path", "parts", "query"),
    [
        ("/", [""], {}),
        ("/v1/chat/completions", ["v1", "chat", "completions"], {}),
        ("/a%20b/c%2Fd", ["a b", "c", "d"], {}),  # unescaped, then split (as the plugin)
        ("/x?a=1&a=2&b=&c", ["x"], {"a": ["1", "2"], "b": [""], "c": [""]}),
        ("/x?q=a+b%21&&z=%2B", ["x"], {"q": ["a b!"], "z": ["+"]}),
        ("//double/", ["double", ""], {}),
    ],
)
def test_parsed_path_and_query(path: str, parts: list[str], query: dict) -> None:
    assert parsed_path_and_query(path) == (parts, query)


@pytest.mark.parametrize("path", ["/x?a=1;b=2", "/bad%zz", "/x?a=%4"])
def test_what_go_refuses_is_an_input_error(path: str) -> None:
    with pytest.raises(InputError):
        parsed_path_and_query(path)


# --- parsed_body and truncated_body ----------------------------------------------------------


def test_partial_body_header_means_truncated() -> None:
    assert parsed_body(
        {"x-envoy-auth-partial-body": "true", "content-type": "application/json"}, "{}", b""
    ) == (
        None,
        True,
    )


def test_a_content_length_beyond_the_body_means_truncated() -> None:
    headers = {"content-type": "application/json", "content-length": "100"}
    assert parsed_body(headers, '{"a": 1}', b"") == (None, True)


def test_json_with_a_charset_parses() -> None:
    headers = {"content-type": "application/json; charset=utf-8"}
    assert parsed_body(headers, '{"a": [1, 2]}', b"") == ({"a": [1, 2]}, False)


def test_invalid_json_is_an_input_error() -> None:
    with pytest.raises(InputError):
        parsed_body({"content-type": "application/json"}, "{nope", b"")


def test_form_bodies_are_maps_of_lists() -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert parsed_body(headers, "a=1&a=2&b=x+y", b"") == ({"a": ["1", "2"], "b": ["x y"]}, False)


def test_multipart_bodies() -> None:
    body = (
        "--XYZ\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        "fine-tune\r\n"
        "--XYZ\r\n"
        'Content-Disposition: form-data; name="meta"\r\n'
        "Content-Type: application/json\r\n\r\n"
        '{"k": 1}\r\n'
        "--XYZ--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=XYZ"}
    assert parsed_body(headers, body, b"") == ({"purpose": ["fine-tune"], "meta": [{"k": 1}]}, False)


def test_no_content_type_parses_nothing() -> None:
    assert parsed_body({}, '{"a": 1}', b"") == (None, False)
    assert parsed_body({"content-type": "text/plain"}, '{"a": 1}', b"") == (None, False)
