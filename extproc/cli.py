"""``python -m extproc`` / ``gateway``: run, check, render, and each sidecar."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

from extproc import gateway
from extproc.admin import quotas_cli
from extproc.authz import keys_cli
from extproc.config.loader import ConfigError, LoadedConfig, load
from extproc.ledger import cli as usage_cli
from extproc.render import SidecarAddresses, dump, render


def _load_or_exit(path: str) -> LoadedConfig:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"config error{'s' if len(exc.issues) > 1 else ''}:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        sys.exit(2)


def cmd_check(args: argparse.Namespace) -> int:
    loaded = _load_or_exit(args.config)
    gw = gateway.build(loaded.config)
    opa = [(r.id, r.policies.opa) for r in gw.routes if r.policies.opa is not None]
    if opa:  # Rego compiles only with its files: the config alone cannot say
        from extproc.authz.opa import policy_file_problems

        problems = policy_file_problems(opa, Path(args.config).resolve().parent)
        if problems:
            print(f"policy error{'s' if len(problems) > 1 else ''}:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 2
    limit_problems = _rate_limit_file_problems(gw, Path(args.config).resolve().parent)
    if limit_problems:
        print(f"policy error{'s' if len(limit_problems) > 1 else ''}:", file=sys.stderr)
        for problem in limit_problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    missing = sorted({m for up in gw.upstreams_by_id.values() if (m := up.secret()[1])})
    print(f"{args.config}: ok ({len(gw.routes)} routes, {len(gw.upstreams_by_id)} provider endpoints)")
    # The ids Envoy's access log and the sidecars use (an unnamed route's is derived: see gateway.py).
    for route in gw.routes:
        where = f":{route.port}" + (f" {route.hostname}" if route.hostname else "")
        endpoints = ", ".join(u.id for b in route.backends for u in b.upstreams)
        print(f"  route {route.id} on {where}: {endpoints}")
    for name in missing:
        print(f"  warning: environment variable {name} is not set; requests to its provider will fail")
    return 0


def _rate_limit_file_problems(gw: gateway.Gateway, config_dir: Path) -> list[str]:
    """Every ``rateLimits`` and ``budgets`` file must load, as extproc will load it."""
    from extproc.limits.context import LimitsContext
    from extproc.limits.store import MemoryStore

    limits = LimitsContext(gw, config_dir, store=MemoryStore())  # no Redis connection for a check
    problems: list[str] = []
    for route in gw.routes:
        rl = route.policies.rate_limits
        if rl is not None:
            try:
                limits.policy(rl.file, rl.domain)
            except ConfigError as exc:
                problems += [str(i) for i in exc.issues]
        budgets = route.policies.budgets
        if budgets is not None:
            try:
                limits.budgets(budgets.file)
            except ConfigError as exc:
                problems += [str(i) for i in exc.issues]
    return problems


def cmd_render(args: argparse.Namespace) -> int:
    loaded = _load_or_exit(args.config)
    addrs = SidecarAddresses(
        extproc=args.extproc_addr,
        authz=args.authz_addr,
        listen_host=args.listen_host,
        admin_host=args.admin_host,
        metrics=args.metrics_addr,
        relay=args.relay_addr,
    )
    text = dump(render(gateway.build(loaded.config), addrs), args.format)
    if args.output:
        out = Path(args.output)
        out.write_text(text)
        out.chmod(0o644)  # Envoy's container user must be able to read it
    else:
        sys.stdout.write(text)
    return 0


def _serve(args: argparse.Namespace, which: str) -> int:
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {which} %(levelname)s %(message)s")
    gw = gateway.build(_load_or_exit(args.config).config)
    if which == "extproc":
        from extproc import cpu_affinity, schema, tokens, usage_log

        if args.cpu is not None:  # first: the threads started below inherit it
            try:
                cpu_affinity.pin(args.cpu)
            except cpu_affinity.AffinityError as exc:
                print(f"error: --cpu {exc}", file=sys.stderr)
                return 2

        usage_log.start()
        tokens.warm_up()  # the tokenizer loads its encodings now, not on a request
        schema.warm_up()  # and the request validators are built
        if not _start_telemetry(args, gw) or not _start_ledger(args, gw):
            return 2
    else:
        from extproc.authz.server import serve
    from extproc import grpc_serve

    grpc_serve.share_port(getattr(args, "reuseport", False))
    from extproc.pipeline.answer_log import PARKED

    PARKED.one_worker = not getattr(args, "reuseport", False)  # log entries reach any worker
    try:
        with contextlib.suppress(KeyboardInterrupt):
            config_dir = Path(args.config).resolve().parent  # policy files are relative to it
            if which == "extproc":
                grpc_serve.run(_extproc_main(gw, args, config_dir))
            else:
                grpc_serve.run(serve(gw, args.listen, config_dir))
    except grpc_serve.BindError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:  # a policy file the config points at (rateLimits.file)
        for issue in exc.issues:
            print(f"config error: {issue}", file=sys.stderr)
        return 2
    finally:
        if which == "extproc":  # what is queued is written before the process ends
            from extproc import usage_log
            from extproc.ledger import runtime as ledger

            ledger.stop()
            usage_log.stop()
    return 0


def _start_ledger(args: argparse.Namespace, gw: gateway.Gateway) -> bool:
    """The usage ledger's writer (extproc/ledger/); False: config.ledger.url cannot be resolved."""
    from extproc.ledger import runtime as ledger
    from extproc.telemetry import runtime

    cfg = gw.config.config
    try:
        url = ledger.url_of(cfg.ledger, Path(args.config).resolve().parent, _data_dir(args))
    except ledger.LedgerConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    if url is not None:
        ledger.start(url, cfg.ledger, runtime.current().metrics.registry, cfg.metrics.prefix)
    return True


def _data_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.data_dir).resolve() if args.data_dir else None


async def _extproc_main(gw: gateway.Gateway, args: argparse.Namespace, config_dir: Path) -> None:
    """The gRPC server, and the admin API beside it on this loop when configured (and not
    --no-admin-api: the supervisor serves it from worker 0 only), sharing its limit store and
    policy files (quotas). SIGTERM ends both cleanly, so the ledger's queue is written before the
    process exits."""
    import signal

    from extproc.limits.context import LimitsContext
    from extproc.server import serve

    limits = LimitsContext(gw, config_dir)
    task = asyncio.ensure_future(serve(gw, args.listen, config_dir, limits))
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    admin_cfg = gw.config.config.admin_api
    runner = None
    if admin_cfg is not None and not args.no_admin_api:
        from extproc.admin import server as admin
        from extproc.ledger import runtime as ledger

        url = ledger.url_of(gw.config.config.ledger, config_dir, _data_dir(args))
        ctx = admin.AdminContext(gw, config_dir, url, limits)
        runner = await admin.start(ctx, admin_cfg)
    relay = None
    if gw.limits.stream_relay and args.relay_listen:  # streams' provider leg (extproc/stream_relay.py)
        from extproc import stream_relay

        relay = await stream_relay.start(gw, args.relay_listen, reuse_port=getattr(args, "reuseport", False))
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        if runner is not None:
            await runner.cleanup()
        if relay is not None:
            await relay[0].cleanup()
            await relay[1].close()


def _start_telemetry(args: argparse.Namespace, gw: gateway.Gateway) -> bool:
    """Prices, CEL fields and the /metrics server (extproc/telemetry/); False: cannot start."""
    from extproc.telemetry import metrics_http, runtime

    try:
        telemetry = runtime.start(gw, Path(args.config).resolve().parent)
    except runtime.PricesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    if args.metrics_listen:
        try:
            metrics_http.serve_metrics(
                args.metrics_listen,
                telemetry.metrics.exposition,
                metrics_http.EnvoyStats(args.envoy_stats),
                reuse_port=args.reuseport,
            )
        except OSError as exc:  # metrics are not the data path: serve requests without them
            logging.getLogger("gateway.metrics").error(
                "cannot serve /metrics on %s (%s); requests are served, metrics are not",
                args.metrics_listen,
                exc,
            )
    return True


def cmd_run(args: argparse.Namespace) -> int:
    from extproc import cpu_affinity
    from extproc.ports import PortInUse
    from extproc.supervisor import Stack

    # The supervisor's own lines (restarts, warnings) beside the children's output.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    loaded = _load_or_exit(args.config)
    try:
        cpus = cpu_affinity.parse(args.extproc_cpus)
    except cpu_affinity.AffinityError as exc:
        print(f"gateway: --extproc-cpus {exc}", file=sys.stderr)
        return 2
    stack = Stack(
        config_path=args.config,
        workdir=Path(args.workdir),
        extproc_port=args.extproc_port,
        authz_port=args.authz_port,
        mock_port=None if args.no_mock else args.mock_port,
        extproc_workers=args.extproc_workers,
        extproc_cpus=cpus,
        metrics_port=args.extproc_metrics_port,
        relay_port=args.relay_port,
    )
    try:
        stack.start(timeout=60)
    except PortInUse as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    ports = ", ".join(str(b.port) for b in loaded.config.binds)
    cfg = loaded.config.config
    print(
        f"gateway ready: listening on {ports}; ready on :{cfg.readiness_port}/ready, "
        f"metrics on :{cfg.metrics_port}/metrics; what exits is restarted; Ctrl-C stops",
        flush=True,
    )
    return stack.wait()


def cmd_mock(args: argparse.Namespace, rest: list[str]) -> int:
    from extproc.mock.server import main as mock_main

    mock_main(rest)
    return 0


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mock"]:
        sys.exit(cmd_mock(argparse.Namespace(), argv[1:]))
    parser = argparse.ArgumentParser(prog="gateway", description="LLM gateway on Envoy")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("run", help="start Envoy, both sidecars and the mock provider")
    p.add_argument("--config", default="policies/gateway.yaml")
    p.add_argument("--workdir", default=".run")
    p.add_argument("--extproc-port", type=int, default=9001)
    p.add_argument("--authz-port", type=int, default=9002)
    p.add_argument("--mock-port", type=int, default=9100)
    p.add_argument("--no-mock", action="store_true", help="do not start the built-in mock provider")
    p.add_argument(
        "--extproc-workers", type=int, default=1, help="extproc processes sharing a port (see supervisor.py)"
    )
    p.add_argument(
        "--extproc-cpus",
        default=os.environ.get("GATEWAY_EXTPROC_CPUS", "off"),
        help="keep each extproc worker on one CPU: off (default), auto, or a list such as 0,2-3 "
        "(worker n gets the n-th; env GATEWAY_EXTPROC_CPUS; see extproc/cpu_affinity.py)",
    )
    p.add_argument("--extproc-metrics-port", type=int, default=9464, help="the sidecar's /metrics port")
    p.add_argument("--relay-port", type=int, default=9003, help="the sidecar's stream relay port")

    p = sub.add_parser("check", help="validate a gateway config")
    p.add_argument("config")

    p = sub.add_parser("render", help="print the Envoy config for a gateway config")
    p.add_argument("config", nargs="?")
    p.add_argument("--config", dest="config_opt")
    p.add_argument("--extproc-addr", default="127.0.0.1:9001")
    p.add_argument("--authz-addr", default="127.0.0.1:9002")
    p.add_argument("--listen-host", default="0.0.0.0")
    p.add_argument("--admin-host", default="127.0.0.1")
    p.add_argument("--metrics-addr", default="127.0.0.1:9464", help="the extproc sidecar's /metrics")
    p.add_argument("--relay-addr", default="127.0.0.1:9003", help="the extproc sidecar's stream relay")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("--output", "-o")

    for name in ("extproc", "authz"):
        p = sub.add_parser(name, help=f"serve the {name} sidecar")
        p.add_argument("--config", default="policies/gateway.yaml")
        p.add_argument("--listen", default="127.0.0.1:9001" if name == "extproc" else "127.0.0.1:9002")
        if name == "extproc":
            p.add_argument(
                "--reuseport", action="store_true", help="share the port with other workers (SO_REUSEPORT)"
            )
            p.add_argument("--metrics-listen", default="127.0.0.1:9464", help="/metrics; '' for none")
            p.add_argument("--cpu", type=int, help="run on this CPU only, every thread (cpu_affinity.py)")
            p.add_argument("--envoy-stats", help="Envoy's /stats/prometheus URL, appended to /metrics")
            p.add_argument(
                "--relay-listen",
                default="127.0.0.1:9003",
                help="the stream relay (with limits.streamRelay; '' for none)",
            )
            p.add_argument("--data-dir", help="the default ledger.db's folder (default: the config's)")
            p.add_argument(
                "--no-admin-api", action="store_true", help="do not serve config.adminApi (other workers do)"
            )

    sub.add_parser("mock", help="serve the built-in mock LLM provider (see --help after mock)")
    keys_cli.add_parser(sub)
    usage_cli.add_parser(sub)
    quotas_cli.add_parser(sub)

    args = parser.parse_args(argv)
    if args.cmd == "render":
        args.config = args.config_opt or args.config or "policies/gateway.yaml"
    handlers = {
        "run": cmd_run, "check": cmd_check, "render": cmd_render, "keys": keys_cli.run,
        "usage": usage_cli.run, "quotas": quotas_cli.run,
    }  # fmt: skip
    if args.cmd in handlers:
        sys.exit(handlers[args.cmd](args))
    sys.exit(_serve(args, args.cmd))
