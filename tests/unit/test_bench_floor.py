"""bench/floor.py's variants become the Envoy configs they name; its summary compares like with like."""

from __future__ import annotations

from bench import bare_extproc, floor

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _ext_proc(cfg: dict) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.ext_proc"
    return hcm["http_filters"][0]["typed_config"]


def _cluster(cfg: dict, name: str) -> dict | None:
    return next((c for c in cfg["static_resources"]["clusters"] if c["name"] == name), None)


def test_message_count_sets_the_processing_mode() -> None:
    cfg = floor.envoy_config(floor.VARIANTS["m3"], 1, 2, 3, 4)
    assert _ext_proc(cfg)["processing_mode"] == {
        "request_header_mode": "SEND",
        "request_body_mode": "BUFFERED",
        "response_header_mode": "SKIP",
        "response_body_mode": "BUFFERED",
    }


def test_unix_socket_variant_points_the_cluster_at_the_path() -> None:
    cfg = floor.envoy_config(floor.VARIANTS["uds"], 1, 2, 3, "unix:/tmp/x.sock")
    cluster = _cluster(cfg, "bare_extproc")
    assert cluster is not None
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/tmp/x.sock"}}


def test_google_grpc_variant_dials_the_sidecar_itself() -> None:
    cfg = floor.envoy_config(floor.VARIANTS["google"], 1, 2, 3, 4567)
    assert _ext_proc(cfg)["grpc_service"]["google_grpc"]["target_uri"] == "127.0.0.1:4567"
    assert _cluster(cfg, "bare_extproc") is None


def test_window_variant_sets_http2_options() -> None:
    cfg = floor.envoy_config(floor.VARIANTS["h2win"], 1, 2, 3, 4)
    cluster = _cluster(cfg, "bare_extproc")
    assert cluster is not None
    h2 = cluster["typed_extension_protocol_options"][_HTTP_OPTIONS]["explicit_http_config"]
    assert h2["http2_protocol_options"]["initial_stream_window_size"] == 1048576


def test_envoy_alone_has_no_ext_proc() -> None:
    cfg = floor.envoy_config(floor.VARIANTS["envoy"], 1, 2, 3, 0)
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]


def _window(p50: float, cpu: float) -> dict:
    return {
        "c1": {"p50_ms": p50, "rps": 100.0},
        "c16": {"cpu_ms_per_req": cpu, "rps": 1000.0, "messages_per_request": {"sent": 4.0}},
    }


def test_added_p50_is_against_envoy_in_the_same_round() -> None:
    rounds = {
        "envoy": [_window(0.5, 0.1), _window(1.5, 0.1), _window(0.5, 0.1)],
        "gen": [_window(2.5, 1.0), _window(3.5, 2.0), _window(2.5, 3.0)],
    }
    rows = {r["variant"]: r for r in floor.summary(rounds)}
    assert rows["gen"]["added_p50_ms_c1"] == 2.0  # 2.0 in every round, though the p50s differ
    assert rows["gen"]["cpu_ms_per_req_c16"] == 2.0
    assert "| gen | 4.00 | 2.000 | +0% |" in floor.table(list(rows.values()))


def test_bare_answer_continues_each_phase() -> None:
    pb = bare_extproc.pb
    for kind in ("request_headers", "request_body", "response_headers", "response_body"):
        msg = pb.ProcessingRequest()
        getattr(msg, kind).SetInParent()
        resp = bare_extproc.answer(msg)
        assert resp.WhichOneof("response") == kind
        assert not getattr(resp, kind).response.HasField("header_mutation")
