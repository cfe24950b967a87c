"""The Redis store: the same counters as MemoryStore, shared by every extproc process and replica.

Each call is one Lua script, which Redis runs atomically: reading every counter, deciding, and
charging all of them happen with no other client in between, so three replicas sharing one Redis
enforce the configured number, not three times it. One round trip per request (EVALSHA; redis-py
loads the script again after a Redis restart). The clock is the caller's, passed in: replicas
need synchronized clocks (NTP) for windows to agree on their starts.

Keys: ``keyPrefix`` + the caller's key. Windows expire a minute after they end; a bucket expires
once it would be full again (a missing bucket is a full one). All keys of one call go to one
Redis: a Redis Cluster would need them in one hash slot, which this store does not arrange.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from extproc.limits.store import Counter, Reservation, StoreUnavailable, state_of

log = logging.getLogger("gateway.limits")

# ARGV[1] = now; ARGV[2] = JSON, per counter [limit, cost, rate (0: a window), window end,
# enforce (1/0)]: one argument for redis-py to pack instead of five per counter. Returns
# {taken, level before counter 1, level before counter 2, ...} as strings (Redis turns Lua
# numbers into integers; the levels of buckets are fractional).
RESERVE = """
local now = tonumber(ARGV[1])
local spec = cjson.decode(ARGV[2])
local before, fits = {}, true
for i = 1, #KEYS do
  local limit, cost, rate, enforce = spec[i][1], spec[i][2], spec[i][3], spec[i][5] == 1
  local level
  if rate > 0 then
    local s = redis.call('HMGET', KEYS[i], 'l', 't')
    if s[1] then
      level = math.min(limit, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * rate)
    else
      level = limit
    end
    if enforce and level < cost then fits = false end
  else
    level = tonumber(redis.call('GET', KEYS[i]) or '0')
    if enforce and level + cost > limit then fits = false end
  end
  before[i] = level
end
if fits then
  for i = 1, #KEYS do
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
for i = 1, #KEYS do out[#out + 1] = tostring(before[i]) end
return out
"""

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
        self._reserve = self.client.register_script(RESERVE)
        self._adjust = self.client.register_script(ADJUST)
        self.healthy = True

    async def reserve(self, counters: Sequence[Counter], now: float) -> Reservation:
        if not counters:
            return Reservation(True, (), ())
        spec = orjson.dumps([[c.limit, c.cost, c.rate, c.window_end, int(c.enforce)] for c in counters])
        got = await self._call(self._reserve, [self.prefix + c.key for c in counters], [repr(now), spec])
        taken = got[0] in (b"1", "1")
        before = [float(v) for v in got[1:]]
        states = tuple(state_of(c, b, taken, now) for c, b in zip(counters, before, strict=True))
        return Reservation(taken, tuple(counters), states)

    async def adjust(self, counters: Sequence[Counter], deltas: Sequence[int], now: float) -> None:
        pairs = [(c, d) for c, d in zip(counters, deltas, strict=True) if d]
        if not pairs:
            return
        spec = orjson.dumps([[c.limit, c.rate, int(d)] for c, d in pairs])
        await self._call(self._adjust, [self.prefix + c.key for c, _ in pairs], [repr(now), spec])

    async def _call(self, script: object, keys: list[str], args: list[str | bytes]) -> list:
        try:
            result = await script(keys=keys, args=args)  # type: ignore[operator]
        except (RedisError, OSError) as exc:
            if self.healthy:
                log.error("rate limit store: Redis at %s is unreachable (%s)", _safe(self.url), exc)
            self.healthy = False
            raise StoreUnavailable(str(exc)) from None
        if not self.healthy:
            log.warning("rate limit store: Redis at %s answers again", _safe(self.url))
            self.healthy = True
        return result  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.client.aclose()


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return scheme + sep + rest
