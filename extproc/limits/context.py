"""What every route's rate limit and budget stages share in one extproc process: the store, the
policy files (one watcher per file, however many routes name it) and the remote services'
channels."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from extproc.config.base import parse_duration
from extproc.gateway import Gateway, ResolvedRoute
from extproc.limits.budget_file import BudgetFile, parse_budgets
from extproc.limits.budget_quotas import BudgetQuotas
from extproc.limits.clock import budget_clock
from extproc.limits.managed import FileLimits, QuotaManager, QuotaSource
from extproc.limits.plan import stage_needed
from extproc.limits.policy_watch import WatchedPolicy
from extproc.limits.redis_store import RedisStore
from extproc.limits.remote import RemoteLimiter
from extproc.limits.store import MemoryStore, Store
from extproc.pipeline.stages.budget import BudgetStage
from extproc.pipeline.stages.ratelimit import RateLimitStage


def build_store(gw: Gateway) -> Store:
    cfg = gw.config.config.rate_limit_store
    if cfg.redis is None:
        return MemoryStore()
    return RedisStore(cfg.redis.url, cfg.redis.key_prefix, parse_duration(cfg.redis.timeout))


class LimitsContext:
    def __init__(self, gw: Gateway, config_dir: Path, store: Store | None = None) -> None:
        self.gw = gw
        self.config_dir = config_dir
        self.store = store or build_store(gw)
        self.fail_open = gw.config.config.rate_limit_store.failure_mode == "failOpen"
        self.policies: dict[tuple[Path, str | None], WatchedPolicy] = {}
        self.budget_files: dict[Path, WatchedPolicy[BudgetFile]] = {}
        self.remotes: list[RemoteLimiter] = []
        self.stages: list[RateLimitStage | BudgetStage] = []
        # The wall clock, unless a test set GATEWAY_TEST_CLOCK_FILE. One clock for the stages and
        # the admin API: a change must find the period's counter the next request will use.
        self.clock = budget_clock()
        self._refresh: asyncio.Task[None] | None = None

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.config_dir / p

    def policy(self, name: str, domain: str | None) -> WatchedPolicy:
        """The file's watcher; ConfigError if it does not load (extproc does not start)."""
        key = (self.path(name).resolve(), domain)
        if key not in self.policies:
            self.policies[key] = WatchedPolicy(key[0], domain)
        return self.policies[key]

    def stage_for(self, route: ResolvedRoute) -> RateLimitStage | None:
        if not stage_needed(route):
            return None
        p = route.policies
        modes = [self.fail_open] if p.local_rate_limit else []
        policy = None
        if p.rate_limits is not None:
            policy = self.policy(p.rate_limits.file, p.rate_limits.domain)
            mode = p.rate_limits.failure_mode
            modes.append(self.fail_open if mode is None else mode == "failOpen")
        remote = None
        if p.remote_rate_limit is not None:
            remote = RemoteLimiter(p.remote_rate_limit)
            self.remotes.append(remote)
        stage = RateLimitStage(
            route, self.store, fail_open=all(modes), policy=policy, remote=remote, clock=self.clock
        )
        self.stages.append(stage)  # drained at close: settlements in flight reach the store
        return stage

    def budgets(self, name: str) -> WatchedPolicy[BudgetFile]:
        """The budgets file's watcher; ConfigError if it does not load (extproc does not start)."""
        path = self.path(name).resolve()
        if path not in self.budget_files:
            self.budget_files[path] = WatchedPolicy(path, parse=parse_budgets, what="budgets")
        return self.budget_files[path]

    def budget_stage_for(self, route: ResolvedRoute) -> BudgetStage | None:
        policy = route.policies.budgets
        if policy is None:
            return None
        mode = policy.failure_mode
        fail_open = self.fail_open if mode is None else mode == "failOpen"
        watched = self.budgets(policy.file)
        stage = BudgetStage(route, self.store, watched, fail_open=fail_open, clock=self.clock)
        self.stages.append(stage)
        return stage

    def quota_sources(self) -> list[QuotaSource]:
        """What the admin API manages (extproc/limits/managed.py): the policy files' limits and
        the budgets files' budgets."""
        return [FileLimits(lambda: self.policies.values()), BudgetQuotas(lambda: self.budget_files.values())]

    def manager(self) -> QuotaManager:
        """Quotas as the admin API and the quota gauges see them, on this process's store."""
        from extproc.telemetry import runtime

        return QuotaManager(self.store, self.quota_sources(), runtime.current().metrics, self.clock)

    def start(self) -> None:
        """In the serving loop: the policy files' watchers, and the quota gauges' refresh."""
        for watched in (*self.policies.values(), *self.budget_files.values()):
            watched.start()
        if self.policies or self.budget_files:
            self._refresh = asyncio.get_running_loop().create_task(self.manager().refresh_forever())

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh
        for stage in self.stages:  # settlements in flight reach the store before it closes
            await stage.drain()
        for watched in (*self.policies.values(), *self.budget_files.values()):
            await watched.stop()
        for remote in self.remotes:
            await remote.close()
        await self.store.close()
