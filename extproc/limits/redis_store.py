"""The Redis store: the same counters as MemoryStore, shared by every extproc process and replica.

Each call is one Lua script, which Redis runs atomically: reading every counter, deciding, and
charging all of them happen with no other client in between, so three replicas sharing one Redis
enforce the configured number, not three times it. One round trip per request (EVALSHA; the script
is sent again after a Redis restart), on the one connection every request of the process shares
(resp.py: no pool, pipelined); admin writes (reset, overrides) go through redis.asyncio. The clock
is the caller's, passed in: replicas need synchronized clocks (NTP) for windows to agree on their
starts.

Keys: ``keyPrefix`` + the caller's key. Windows expire a minute after they end; a bucket expires
once it would be full again (a missing bucket is a full one); override records never expire
(an operator set them, and clears them). All keys of one call go to one
Redis: a Redis Cluster would need them in one hash slot, which this store does not arrange.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from extproc.limits.resp import RespClient, Script
from extproc.limits.store import Counter, Peek, Reservation, StoreUnavailable, apply_override, state_of

log = logging.getLogger("gateway.limits")

# Shared by RESERVE and PEEK: the limit in force (store.apply_override, in Lua) and a level.
# An override record is a plain string key holding the limit; KEYS[oi] is a counter's (oi > 0).
PRELUDE = """
local function resolve(limit, cost, rate, oi, cap)
  if oi == 0 then return limit, cost, rate, '' end
  local over = redis.call('GET', KEYS[oi])
  if not over then return limit, cost, rate, '' end
  local v = tonumber(over)
  if v == limit then return limit, cost, rate, over end
  if rate > 0 then
    v = math.max(1, v)
    rate = rate * v / limit
  end
  if cap == 1 then cost = math.max(1, math.min(cost, v)) end
  return v, cost, rate, over
end
local function level_of(key, limit, rate, now)
  if rate > 0 then
    local s = redis.call('HMGET', key, 'l', 't')
    if s[1] then
      return math.min(limit, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * rate)
    end
    return limit
  end
  return tonumber(redis.call('GET', key) or '0')
end
"""

# ARGV[1] = now; ARGV[2] = JSON, per counter [limit, cost, rate (0: a window), window end,
# enforce (1/0), override key's index in KEYS (0: none), cap (1/0)]: one argument for redis-py
# to pack instead of seven per counter. KEYS: the counters, then their override keys. Returns
# {taken, level before counter 1, ..., override of counter 1 ('' for none), ...} as strings
# (Redis turns Lua numbers into integers; the levels of buckets are fractional).
RESERVE = (
    PRELUDE
    + """
local now = tonumber(ARGV[1])
local spec = cjson.decode(ARGV[2])
local n = #spec
local before, over, fits = {}, {}, true
for i = 1, n do
  local c = spec[i]
  local limit, cost, rate, o = resolve(c[1], c[2], c[3], c[6], c[7])
  c[1], c[2], c[3], over[i] = limit, cost, rate, o
  local level = level_of(KEYS[i], limit, rate, now)
  if c[5] == 1 then
    if rate > 0 then
      if level < cost then fits = false end
    elseif level + cost > limit then
      fits = false
    end
  end
  before[i] = level
end
if fits then
  for i = 1, n do
    local limit, cost, rate = spec[i][1], spec[i][2], spec[i][3]
    if rate > 0 then
      local left = before[i] - cost
      redis.call('HSET', KEYS[i], 'l', tostring(left), 't', ARGV[1])
      redis.call('EXPIRE', KEYS[i], math.ceil((limit - left) / rate) + 60)
    else
      redis.call('INCRBY', KEYS[i], cost)
      if redis.call('PTTL', KEYS[i]) < 0 then
        redis.call('PEXPIREAT', KEYS[i], math.floor((spec[i][4] + 60) * 1000))
      end
    end
  end
end
local out = {fits and '1' or '0'}
for i = 1, n do out[#out + 1] = tostring(before[i]) end
for i = 1, n do out[#out + 1] = over[i] end
return out
"""
)

# ARGV[1] = now; ARGV[2] = JSON, per counter [limit, rate, override key's index]. Returns
# {level 1, override 1, level 2, override 2, ...}; changes nothing.
PEEK = (
    PRELUDE
    + """
local now = tonumber(ARGV[1])
local spec = cjson.decode(ARGV[2])
local out = {}
for i = 1, #spec do
  local limit, _, rate, o = resolve(spec[i][1], 0, spec[i][2], spec[i][3], 0)
  out[#out + 1] = tostring(level_of(KEYS[i], limit, rate, now))
  out[#out + 1] = o
end
return out
"""
)

# ARGV[1] = now; ARGV[2] = JSON, per counter [limit, rate, delta]. A delta is what the request
# used beyond (or, negative, short of) what it reserved. An ended window (its key gone) is not
# revived.
ADJUST = """
local now = tonumber(ARGV[1])
local spec = cjson.decode(ARGV[2])
for i = 1, #KEYS do
  local limit, rate, delta = spec[i][1], spec[i][2], spec[i][3]
  if rate > 0 then
    local s = redis.call('HMGET', KEYS[i], 'l', 't')
    local level = limit
    if s[1] then
      level = math.min(limit, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * rate)
    end
    local left = math.min(limit, level - delta)
    redis.call('HSET', KEYS[i], 'l', tostring(left), 't', ARGV[1])
    redis.call('EXPIRE', KEYS[i], math.ceil((limit - left) / rate) + 60)
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    local used = redis.call('INCRBY', KEYS[i], delta)
    if used < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 1
"""


class RedisStore:
    in_process = False

    def __init__(self, url: str, key_prefix: str = "llmgw:", timeout: float = 0.25) -> None:
        self.url = url
        self.prefix = key_prefix
        # One retry, on a broken connection only: after a Redis restart each pooled connection
        # fails once when next used, and is replaced. Never on a timeout: a Redis that does not
        # answer costs one timeout at most, then the policy's failureMode answers. Recovery
        # needs no restart: the next call connects again.
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[ConnectionError],
            retry_on_timeout=False,
            max_connections=256,
        )
        # The scripts' calls, one per request: on one shared connection (resp.py), whose faults
        # are handled alike (one retry on a broken connection, never on a timeout).
        self.fast = RespClient(url, timeout)
        self._reserve, self._adjust, self._peek = Script(RESERVE), Script(ADJUST), Script(PEEK)
        self.healthy = True

    def _keys(self, counters: Sequence[Counter]) -> tuple[list[str], list[int]]:
        """The counters' keys, then their override keys; each counter's override index (1-based)."""
        keys = [self.prefix + c.key for c in counters]
        index = []
        for c in counters:
            if c.override:
                keys.append(self.prefix + c.override)
                index.append(len(keys))
            else:
                index.append(0)
        return keys, index

    async def reserve(self, counters: Sequence[Counter], now: float) -> Reservation:
        if not counters:
            return Reservation(True, (), ())
        keys, index = self._keys(counters)
        spec = orjson.dumps(
            [
                [c.limit, c.cost, c.rate, c.window_end, int(c.enforce), i, int(c.cap)]
                for c, i in zip(counters, index, strict=True)
            ]
        )
        got = await self._call(lambda: self.fast.evalsha(self._reserve, keys, (repr(now), spec)))
        n = len(counters)
        taken = got[0] in (b"1", "1")
        for c, over in zip(counters, got[n + 1 :], strict=True):
            if over:
                apply_override(c, int(over))
        before = [float(v) for v in got[1 : n + 1]]
        states = tuple(state_of(c, b, taken, now) for c, b in zip(counters, before, strict=True))
        return Reservation(taken, tuple(counters), states)

    async def adjust(self, counters: Sequence[Counter], deltas: Sequence[int], now: float) -> None:
        pairs = [(c, d) for c, d in zip(counters, deltas, strict=True) if d]
        if not pairs:
            return
        spec = orjson.dumps([[c.limit, c.rate, int(d)] for c, d in pairs])
        keys = [self.prefix + c.key for c, _ in pairs]
        await self._call(lambda: self.fast.evalsha(self._adjust, keys, (repr(now), spec)))

    async def peek(self, counters: Sequence[Counter], now: float) -> list[Peek]:
        if not counters:
            return []
        keys, index = self._keys(counters)
        spec = orjson.dumps([[c.limit, c.rate, i] for c, i in zip(counters, index, strict=True)])
        got = await self._call(lambda: self.fast.evalsha(self._peek, keys, (repr(now), spec)))
        out = []
        for i, c in enumerate(counters):
            level, over = got[2 * i], got[2 * i + 1]
            value = int(over) if over else None
            apply_override(c, value)
            out.append(Peek(float(level), value))
        return out

    async def reset(self, counters: Sequence[Counter], now: float) -> None:
        if counters:
            keys = [self.prefix + c.key for c in counters]
            await self._call(lambda: self.client.delete(*keys))

    async def set_override(self, key: str, value: int | None) -> None:
        if value is None:
            await self._call(lambda: self.client.delete(self.prefix + key))
        else:
            await self._call(lambda: self.client.set(self.prefix + key, str(value)))

    async def _call(self, run: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await run()
        except (RedisError, OSError) as exc:
            if self.healthy:
                log.error("rate limit store: Redis at %s is unreachable (%s)", _safe(self.url), exc)
            self.healthy = False
            raise StoreUnavailable(str(exc)) from None
        if not self.healthy:
            log.warning("rate limit store: Redis at %s answers again", _safe(self.url))
            self.healthy = True
        return result

    async def close(self) -> None:
        await self.fast.close()
        await self.client.aclose()


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
