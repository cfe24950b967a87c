"""The benchmark's parsers: wrk output, /proc/<pid>/stat, Envoy's /stats, messages and targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench import measure, report

WRK_OUT = """Running 3s test @ http://127.0.0.1:40000/v1/chat/completions
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.10ms    1.02ms  21.43ms   90.12%
    Req/Sec     3.14k   150.00     3.40k    70.00%
  Latency Distribution
     50%  850.00us
     75%    5.20ms
     90%    6.00ms
     99%    1.20s
  9420 requests in 3.00s, 4.10MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 5
Requests/sec:   3139.42
Transfer/sec:      1.37MB
"""


def test_wrk_output_parsed_with_units() -> None:
    r = measure.parse_wrk(WRK_OUT)
    assert r["rps"] == pytest.approx(3139.42)
    assert r["p50_ms"] == pytest.approx(0.85)  # us -> ms
    assert r["p99_ms"] == pytest.approx(1200.0)  # s -> ms
    assert r["requests"] == 9420
    assert r["errors"] == 5
    assert r["socket_errors"] == 3


def test_wrk_output_without_figures_is_an_error() -> None:
    with pytest.raises(ValueError, match="Requests/sec"):
        measure.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def _stat(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # Fields 3..13 of proc(5), then utime, stime, cutime, cstime, then the rest.
    middle = f"S {ppid} 1 1 0 -1 4194560 100 0 0 0"
    return f"{pid} ({comm}) {middle} {utime} {stime} {cutime} {cstime} 20 0 3 0 12345 0 0\n"


def test_proc_stat_line_with_spaces_and_parens_in_the_name() -> None:
    line = _stat(42, "python3 (bench) x", 7, utime=150, stime=30, cutime=5, cstime=2)
    assert measure.parse_proc_stat(line) == (7, 187)


def test_proc_stat_of_this_process_is_read() -> None:
    ppid, ticks = measure.parse_proc_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert ppid == os.getppid()
    assert ticks > 0  # the interpreter has run long enough to be charged a tick


def _fake_proc(root: Path, rows: list[tuple[int, int, int]]) -> Path:
    for pid, ppid, ticks in rows:
        (root / str(pid)).mkdir()
        (root / str(pid) / "stat").write_text(_stat(pid, "p", ppid, utime=ticks, stime=0))
    (root / "self").mkdir()  # not a pid: skipped
    (root / "999").mkdir()  # a process gone between listing and reading: skipped
    return root


def test_cpu_ticks_sum_the_roots_and_their_descendants_only(tmp_path: Path) -> None:
    proc = _fake_proc(
        tmp_path,
        [
            (10, 1, 100),  # root: an Envoy
            (20, 1, 50),  # root: a sidecar
            (21, 20, 7),  # its child
            (22, 21, 3),  # its grandchild
            (30, 1, 1000),  # not ours (the upstream, wrk)
        ],
    )
    assert measure.cpu_ticks([10, 20], proc) == 160
    assert measure.cpu_ticks([10, 404], proc) == 100  # a root that has exited counts nothing


ENVOY_STATS = """cluster.gw_authz.upstream_rq_total: 12
cluster.gw_extproc.upstream_rq_total: 20
cluster.r0.0.2.b0.ext_authz.ok: 4
cluster.r0.0.2.b0.ext_proc.stream_msgs_received: 16
cluster.r0.0.2.b0.ext_proc.stream_msgs_sent: 16
cluster.r0.0.2.b0.ext_proc.streams_started: 4
cluster.gw_extproc.upstream_rq_time: P0(nan,1) P25(nan,1.03)
cluster.gw_authz.upstream_rq_per_cx: No recorded values
http.admin.downstream_rq_total: 9
http.readiness.downstream_rq_total: 30
http.bind_4000.downstream_rq_total: 12
http.bind_4000.ext_authz.ok: 12
http.bind_4000.ext_proc.stream_msgs_received: 32
http.bind_4000.ext_proc.stream_msgs_sent: 32
http.bind_4000.ext_proc.streams_closed: 12
http.bind_4000.ext_proc.streams_started: 12
"""


def test_envoy_stats_keep_integers_and_skip_histograms() -> None:
    stats = measure.parse_stats(ENVOY_STATS)
    assert stats["cluster.r0.0.2.b0.ext_proc.streams_started"] == 4
    assert stats["http.bind_4000.downstream_rq_total"] == 12
    assert "cluster.gw_extproc.upstream_rq_time" not in stats
    assert "cluster.gw_authz.upstream_rq_per_cx" not in stats


def test_messages_are_deltas_split_by_level_and_per_request() -> None:
    before = {
        "http.admin.downstream_rq_total": 2,
        "http.bind_4000.downstream_rq_total": 2,
        "http.bind_4000.ext_proc.stream_msgs_sent": 4,
        "http.bind_4000.ext_proc.streams_started": 2,
        "cluster.gw_authz.upstream_rq_total": 2,
    }
    msgs = measure.messages(before, measure.parse_stats(ENVOY_STATS), "gw_authz")
    # The admin and readiness listeners are not client requests; ext_authz's per-cluster
    # copy (cluster.*.ext_authz.ok) is not a second call.
    assert msgs == measure.Messages(
        requests=10, streams=14, router_sent=28, upstream_sent=16, received=48, authz=10
    )
    per = msgs.per_request()
    assert per["sent"] == pytest.approx(4.4)
    assert per["round_trips"] == pytest.approx(5.4)  # what the sidecars must answer
    assert per["authz"] == pytest.approx(1.0)
    assert "requests" not in per


def test_messages_of_envoy_alone_are_zero() -> None:
    stats = {"http.proxy.downstream_rq_total": 100}
    msgs = measure.messages({}, stats, "gw_authz")
    assert (msgs.requests, msgs.round_trips) == (100, 0)


def _results(openai_p50: float, translated_p50: float, cpu: float) -> dict:
    def run(p50: float, cpu_ms: float) -> dict:
        return {"p50_ms": p50, "cpu_ms_per_req": cpu_ms}

    return {
        "envoy": {"c1": run(0.2, 0.05), "c16": run(0.5, 0.07)},
        "openai": {"c1": run(openai_p50, 1.0), "c16": run(3.0, cpu)},
        "translated": {"c1": run(translated_p50, 1.0), "c16": run(3.0, 0.95)},
    }


def test_targets_are_judged_on_added_p50_and_cpu() -> None:
    results = _results(openai_p50=1.4, translated_p50=1.81, cpu=0.9)
    verdicts = {(v["path"], v["figure"]): v["verdict"] for v in report.target_verdicts(results, "c16")}
    assert verdicts == {
        ("openai", "added_p50_ms"): "PASS",  # 1.2 added: at the limit
        ("translated", "added_p50_ms"): "MISS",  # 1.61 added
        ("openai", "cpu_ms_per_req"): "PASS",
        ("translated", "cpu_ms_per_req"): "MISS",
    }


def test_a_path_not_measured_has_no_verdict() -> None:
    results = _results(1.0, 1.0, 0.5)
    del results["translated"]
    assert "translated route: not measured (target <= 1.6 ms): n/a" in report.targets(results, "c16")


def test_table_puts_ratios_messages_and_verdicts_beside_the_figures() -> None:
    def run(rps: float, p50: float, cpu: float) -> dict:
        return {
            "rps": rps,
            "p50_ms": p50,
            "p99_ms": 2 * p50,
            "errors": 0,
            "socket_errors": 0,
            "cpu_ms_per_req": cpu,
        }

    results = {
        "envoy": {"c1": run(3000, 0.2, 0.1), "c16": run(5000, 3.0, 0.1)},
        "bare": {"c1": run(500, 1.7, 2.0), "c16": run(800, 20.0, 1.0)},
        "openai": {"c1": run(300, 2.5, 2.5), "c16": run(700, 22.0, 0.8)},
    }
    counted = {
        "envoy": measure.Messages(requests=20),
        "bare": measure.Messages(requests=20, streams=20, router_sent=80, received=80),
        "openai": measure.Messages(requests=20, streams=20, router_sent=40, received=40, authz=20),
    }
    cells = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in report.table(results, counted, "c16").splitlines()
    ]
    rows = {(row[0], row[1]): row for row in cells}
    c1 = rows["gateway, OpenAI route", "1"]
    # req/s, p50, p99, +p50 vs Envoy, +p50 vs bare, req/s vs Envoy, vs bare, CPU, CPU vs Envoy, vs bare
    assert c1[2:12] == ["300", "2.50", "5.00", "+2.30", "+0.80", "0.10x", "0.60x", "2.500", "25.00x", "1.25x"]
    assert c1[12:16] == ["1.00", "2.00", "1.00", "3.00"]  # streams, ext_proc msgs, authz, all to answer
    assert c1[16] == "+p50 <= 1.2 ms MISS"
    assert rows["gateway, OpenAI route", "16"][16] == "CPU <= 0.9 ms PASS"
    assert rows["Envoy alone", "16"][16] == ""
    assert "| bare Python ext_proc | 20 | 1.00 | 4.00 | 0.00 | 4.00 | 0.00 | 4.00 |" in report.messages_table(
        counted
    )


def test_median_window_is_one_whole_window_with_the_spread_kept() -> None:
    runs = [
        {"rps": 900.0, "p50_ms": 1.0, "cpu_ms_per_req": 2.0},
        {"rps": 300.0, "p50_ms": 9.0, "cpu_ms_per_req": 6.0},  # a window the machine was busy in
        {"rps": 1000.0, "p50_ms": 0.9, "cpu_ms_per_req": 1.9},
    ]
    chosen = measure.median_window(runs)
    assert (chosen["rps"], chosen["p50_ms"], chosen["cpu_ms_per_req"]) == (900.0, 1.0, 2.0)
    assert chosen["rps_windows"] == [900.0, 300.0, 1000.0]
    assert "rps_windows" not in runs[0]  # the inputs are not changed


def test_median_window_of_an_even_count_takes_the_lower_middle() -> None:
    assert measure.median_window([{"rps": 2.0}, {"rps": 1.0}])["rps"] == 1.0
    with pytest.raises(ValueError):
        measure.median_window([])


def test_phase_log_lines_become_per_path_medians(tmp_path: Path) -> None:
    """bench/phases.py: Envoy's access-log line per request (route, Envoy's and the upstream's
    time, then each ext_proc message's) read by route; ``rest`` is Envoy's time outside them."""
    from bench import phases

    log = tmp_path / "gateway.log"
    log.write_text(
        "openai 3000 300 700 500 500 450\n"
        "openai 3200 320 760 520 540 460\n"
        "open 2900 290 700 480 - 440\n"  # Envoy writes "-" for a message it never sent
        "limited 3400 300 740 820 530 470\n"
    )
    rows = phases.read_log(log, phases._route_path)
    assert sorted(rows) == ["limited", "open", "openai"]
    m = phases.medians(rows["openai"])
    assert m["envoy_us"] == 3100 and m["req body"] == 510
    assert m["rest"] == 3100 - 310 - (730 + 510 + 520 + 455)
    assert phases.medians(rows["open"])["resp headers"] is None


def test_the_phase_log_goes_on_every_http_listener() -> None:
    from bench import envoys, phases

    cfg = envoys.bare_extproc_config(1, 2, 3, 4)
    phases.add_phase_log(cfg, Path("/tmp/x.log"))
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    fmt = hcm["access_log"][-1]["typed_config"]["log_format"]["text_format_source"]["inline_string"]
    assert "%FILTER_STATE(envoy.filters.http.ext_proc:FIELD:request_body_total_latency_us)%" in fmt
