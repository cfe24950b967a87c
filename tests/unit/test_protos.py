"""The project's own protobuf contracts (protos/ -> llm_gateway.v1) and their metadata encoding."""

from __future__ import annotations

import base64
import importlib
import pkgutil
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import llm_gateway
import pytest
from google.protobuf import struct_pb2
from llm_gateway.v1 import identity_pb2, routing_pb2

from extproc import contracts
from extproc.contracts import (
    DECISION_KEY,
    IDENTITY_KEY,
    AuthMethod,
    ClientApi,
    ContractError,
    Identity,
    RouteDecision,
    client_api,
    client_api_name,
    decode_decision,
    decode_identity,
    encode_decision,
    encode_identity,
)
from extproc.headers import METADATA_NAMESPACE

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"
API_NAMES = ("completions", "messages", "embeddings", "models", "passthrough")


def decision(**overrides: object) -> RouteDecision:
    fields: dict[str, object] = {
        "request_id": "0f8c2a4e6b1d4c3a9e7f5b2d1a0c8e6f",
        "client_api": ClientApi.CLIENT_API_MESSAGES,
        "client_path": "/v1/messages?beta=true",
        "route_id": "anthropic-messages",
        "requested_model": "claude-sonnet-4-5",
        "stream": True,
    }
    fields.update(overrides)
    return RouteDecision(**fields)


def api_key_identity(**overrides: object) -> Identity:
    fields: dict[str, object] = {
        "subject": "alice",
        "api_key_id": "key-7f3a",
        "group_ids": ["eng", "ml"],
        "team": "ml-platform",
        "auth_method": AuthMethod.AUTH_METHOD_API_KEY,
        "labels": {"cost_center": "cc-42", "env": "prod"},
        "allowed_models": ["gpt-4o*", "claude-*"],
    }
    fields.update(overrides)
    return Identity(**fields)


def encode_decision_unchecked(d: RouteDecision) -> str:
    return base64.b64encode(d.SerializeToString()).decode()


# ----------------------------------------------------------------- round trips --


@pytest.mark.parametrize("api", API_NAMES)
def test_decision_round_trip_for_every_api(api: str) -> None:
    d = decision(client_api=client_api(api), stream=api == "completions")
    text = encode_decision(d)
    assert isinstance(text, str) and text.isascii()
    back = decode_decision(text)
    assert back == d
    assert client_api_name(back.client_api) == api


def test_decision_defaults_round_trip() -> None:
    """No model and no stream are the proto3 defaults: they must come back as such, not fail."""
    d = RouteDecision(request_id="r1", client_api=ClientApi.CLIENT_API_MODELS, route_id="r")
    back = decode_decision(encode_decision(d))
    assert back == d and back.requested_model == "" and back.stream is False


def test_identity_round_trip() -> None:
    i = api_key_identity()
    back = decode_identity(encode_identity(i))
    assert back == i
    assert dict(back.labels) == {"cost_center": "cc-42", "env": "prod"}
    assert list(back.allowed_models) == ["gpt-4o*", "claude-*"]


def test_jwt_identity_round_trip() -> None:
    i = Identity(subject="user-1", auth_method=AuthMethod.AUTH_METHOD_JWT, group_ids=["admins"])
    assert decode_identity(encode_identity(i)) == i


def test_anonymous_identity_is_the_empty_message() -> None:
    """Until auth policies exist every request is Identity(): it encodes to "" and back."""
    assert Identity().auth_method == AuthMethod.AUTH_METHOD_NONE
    assert encode_identity(Identity()) == ""
    assert decode_identity("") == Identity()


def test_rides_in_dynamic_metadata_struct() -> None:
    """What ext_proc sets as dynamic metadata is a Struct of strings; the values survive it."""
    d, i = decision(), api_key_identity()
    md = struct_pb2.Struct()
    md.update({METADATA_NAMESPACE: {DECISION_KEY: encode_decision(d), IDENTITY_KEY: encode_identity(i)}})
    wire = struct_pb2.Struct.FromString(md.SerializeToString())
    ns = wire.fields[METADATA_NAMESPACE].struct_value.fields
    assert decode_decision(ns[DECISION_KEY].string_value) == d
    assert decode_identity(ns[IDENTITY_KEY].string_value) == i


def test_unknown_fields_from_a_newer_writer_are_ignored() -> None:
    """v1 only grows: a reader must accept a message with a field it does not know yet."""
    newer = decision().SerializeToString() + b"\xf8\x06\x01"  # field 111, varint 1
    back = decode_decision(base64.b64encode(newer).decode())
    assert back.request_id == decision().request_id


# ------------------------------------------------------------ garbage rejected --


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"CgJyMQ==",  # bytes, not str
        42,
        "",  # the empty message: no ids
        "not base64!",
        "abc",  # bad padding
        "Y2xpZW50\n",  # base64 with a newline is not strict base64
        # A valid value with a stray character: lenient base64 would drop it and succeed.
        encode_decision(decision())[:12] + "*" + encode_decision(decision())[12:],
        "ümlaut",
        base64.b64encode(b"\xff\xff\xff\xff").decode(),  # not protobuf
        base64.b64encode(b"\x0a\x10short").decode(),  # truncated field
        base64.b64encode(b"hello world, this is text").decode(),
        base64.b64encode(RouteDecision(request_id="r", route_id="x").SerializeToString()).decode(),  # no api
        base64.b64encode(
            RouteDecision(request_id="r", route_id="x", client_api=99).SerializeToString()
        ).decode(),  # an enum number no build knows
        base64.b64encode(
            RouteDecision(client_api=ClientApi.CLIENT_API_COMPLETIONS, route_id="x").SerializeToString()
        ).decode(),  # no request id
    ],
)
def test_decode_decision_rejects_garbage(value: object) -> None:
    with pytest.raises(ContractError, match=r"llm_gateway\.v1\.RouteDecision"):
        decode_decision(value)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "not base64!",
        base64.b64encode(b"\xff\xff\xff\xff").decode(),
        base64.b64encode(Identity(auth_method=AuthMethod.AUTH_METHOD_API_KEY).SerializeToString()).decode(),
        base64.b64encode(Identity(auth_method=AuthMethod.AUTH_METHOD_JWT).SerializeToString()).decode(),
        base64.b64encode(Identity(subject="mallory").SerializeToString()).decode(),  # a claim, unproven
        base64.b64encode(Identity(auth_method=9, subject="x").SerializeToString()).decode(),
    ],
)
def test_decode_identity_rejects_garbage(value: object) -> None:
    with pytest.raises(ContractError, match=r"llm_gateway\.v1\.Identity"):
        decode_identity(value)


def test_one_contract_is_not_read_as_the_other() -> None:
    """The metadata keys could be mixed up; the field checks catch it either way."""
    with pytest.raises(ContractError):
        decode_identity(encode_decision(decision()))
    jwt = Identity(subject="user-1", auth_method=AuthMethod.AUTH_METHOD_JWT)
    with pytest.raises(ContractError):
        decode_decision(encode_identity(jwt))


def test_contract_error_is_a_value_error_with_the_reason() -> None:
    with pytest.raises(ValueError, match="no request_id; no route_id"):
        decode_decision(encode_decision_unchecked(RouteDecision(client_api=ClientApi.CLIENT_API_MODELS)))


@pytest.mark.parametrize(
    "bad",
    [
        RouteDecision(),
        RouteDecision(request_id="r", route_id="x"),
        RouteDecision(client_api=ClientApi.CLIENT_API_COMPLETIONS, route_id="x"),
        RouteDecision(request_id="r", client_api=ClientApi.CLIENT_API_COMPLETIONS),
    ],
)
def test_encode_refuses_what_the_reader_would_reject(bad: RouteDecision) -> None:
    with pytest.raises(ContractError, match="refusing to write"):
        encode_decision(bad)


@pytest.mark.parametrize(
    "bad",
    [
        Identity(auth_method=AuthMethod.AUTH_METHOD_API_KEY, subject="alice"),
        Identity(auth_method=AuthMethod.AUTH_METHOD_JWT, api_key_id="k"),
        Identity(api_key_id="k"),
    ],
)
def test_encode_identity_refuses_inconsistent_claims(bad: Identity) -> None:
    with pytest.raises(ContractError, match="refusing to write"):
        encode_identity(bad)


# ------------------------------------------------------------ client API names --


def test_client_api_names_cover_the_enum() -> None:
    """Every enum value but UNSPECIFIED has a router-phase name, and back."""
    values = [v.number for v in ClientApi.DESCRIPTOR.values if v.number]
    assert sorted(client_api(n) for n in API_NAMES) == sorted(values)
    for name in API_NAMES:
        assert client_api_name(client_api(name)) == name
    with pytest.raises(ContractError, match="unknown client API 'chat'"):
        client_api("chat")
    with pytest.raises(ContractError):
        client_api_name(ClientApi.CLIENT_API_UNSPECIFIED)


# ------------------------------------------------ the generated package itself --


def test_generated_modules_are_llm_gateway_v1() -> None:
    for module, message in ((routing_pb2, RouteDecision), (identity_pb2, Identity)):
        assert module.__name__.startswith("llm_gateway.v1.")
        assert module.DESCRIPTOR.package == "llm_gateway.v1"
        assert module.DESCRIPTOR.name.startswith("llm_gateway/v1/")
        assert message.DESCRIPTOR.full_name == f"llm_gateway.v1.{message.__name__}"


def generated_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(llm_gateway.__path__, "llm_gateway.")]


def test_every_proto_has_its_module_and_none_is_envoy() -> None:
    protos = sorted(PROTOS.rglob("*.proto"))
    assert protos, "protos/ holds the project's contracts"
    modules = generated_modules()
    for proto in protos:
        rel = proto.relative_to(PROTOS)
        assert not any(part.lower().startswith("envoy") for part in rel.parts), rel
        package = re.search(r"^package\s+([\w.]+);", proto.read_text(), re.M)
        assert package and package.group(1).startswith("llm_gateway."), (rel, package)
        module = ".".join(rel.with_suffix("").parts) + "_pb2"
        assert module in modules, f"{module} was not generated: re-run `make venv`"
        assert importlib.import_module(module).DESCRIPTOR.package == package.group(1)
    assert not any(part.startswith("envoy") for m in modules for part in m.split(".")), modules


def test_gencode_and_runtime_floor_agree() -> None:
    """The pinned grpcio-tools' protoc stamps a gencode version into each module; the runtime
    must be at least that, so pyproject's protobuf floor is exactly it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tools = [r for r in project["build-system"]["requires"] if r.startswith("grpcio-tools")]
    assert len(tools) == 1 and "==" in tools[0], f"pin grpcio-tools exactly: {tools}"
    floor = [d for d in project["project"]["dependencies"] if re.match(r"protobuf\b", d)]
    assert len(floor) == 1 and (m := re.search(r">=([\d.]+)", floor[0])), floor
    source = Path(routing_pb2.__file__).read_text()
    gencode = re.search(r"^# Protobuf Python Version: ([\d.]+)$", source, re.M)
    assert gencode and gencode.group(1) == m.group(1), (gencode and gencode.group(1), floor[0])


# ----------------------------------------------------------- build inputs --


def test_generated_files_are_never_checked_in() -> None:
    git = shutil.which("git")
    assert git is not None and (ROOT / ".git").exists(), "the project and its CI run from a git checkout"
    generated = Path(routing_pb2.__file__)
    if generated.is_relative_to(PROTOS):  # an editable install generates in place
        rel = str(generated.relative_to(ROOT))
        assert subprocess.run([git, "check-ignore", "-q", rel], cwd=ROOT).returncode == 0, rel
    tracked = subprocess.run([git, "ls-files", "protos"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "_pb2" not in tracked


def test_container_build_gets_the_protos() -> None:
    """The image runs `pip install .`: it needs setup.py and protos/ in its context and copied."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    for needed in ("setup.py", "protos"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", dockerfile, re.M), needed
        assert any(line.startswith(f"!{needed}") for line in ignore), needed


def test_contracts_module_exports() -> None:
    for name in contracts.__all__:
        assert hasattr(contracts, name), name
