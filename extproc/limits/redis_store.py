"""The Redis store: the same counters as MemoryStore, shared by every extproc process and replica.

Each call is one Lua script, which Redis runs atomically: reading every counter, deciding, and
charging all of them happen with no other client in between, so three replicas sharing one Redis
enforce the configured number, not three times it. One round trip per request (EVALSHA; the script
is sent again after a Redis restart), on the one connection every request of the process shares
(resp.py: no pool, pipelined); admin writes (reset, overrides) go through redis.asyncio. The clock
is the caller's, passed in: replicas need synchronized clocks (NTP) for windows to agree on their
starts.

Keys: ``keyPrefix`` + the caller's key. Windows expire a minute after they end (a relative
expiry from the caller's now: Redis's own clock is never asked, so a skew between the hosts
cannot delete a window early or keep it late); a bucket expires
once it would be full again (a missing bucket is a full one); override records never expire
(an operator set them, and clears them). All keys of one call go to one
Redis: a Redis Cluster would need them in one hash slot, which this store does not arrange.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError, RedisError

from extproc.limits.resp import Arg, RespClient, Script
from extproc.limits.store import (
    Counter,
    Peek,
    Ready,
    Reservation,
    StoreUnavailable,
    apply_override,
    state_of,
)

log = logging.getLogger("gateway.limits")

# RESERVE's flags argument per (cap, has an override key).
_FLAGS = {(False, False): "-", (True, False): "c", (False, True): "o", (True, True): "co"}

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

# The two scripts on a request's path (RESERVE before the call, ADJUST after it) take one short
# string per counter, not JSON, and parse only the numbers they use: in Redis 7's Lua, parsing a
# number costs about as much as a GET, so cjson.decode of the old JSON spec was a fifth of the
# script's time, and tostring of the levels it returned a sixth (a window's level now goes back
# as an integer reply). Every override and window level is read with one MGET, and a window's
# expiry is looked at only when INCRBY created it.
# (callgrind on redis-server, instructions per call: bench/limits.py's three counters, RESERVE
# 168k with JSON, 154k this way, ADJUST 75k and 70k; bench/budgets.py's two budgets, RESERVE 111k
# and 91k, ADJUST 33k and 23k.)
#
# RESERVE: KEYS = the counters, then the override keys of those that have one, in order.
# ARGV[1] = now (seconds); ARGV[1 + i] = counter i as "limit cost rate end enforce flags":
# rate 0 for a window, end = the window's end in milliseconds (0 for a bucket), enforce 1/0,
# flags "-", "c" (the cost is capped at the limit in force), "o" (it has an override key) or
# "co". Returns {taken (1/0), level before counter 1, ..., override of counter 1 ('' for none),
# ...}: a window's level as an integer reply, a bucket's as a string (it is fractional), with all
# 17 digits, so the caller's "does it fit" is the script's (tostring's 14 could round 9.99... up
# to 10, and a refused cost of 10 would look as if it fitted).
RESERVE = """
local match, tonumber, n = string.match, tonumber, #ARGV - 1
local got = redis.call('MGET', unpack(KEYS))
local limits, costs, rates, ends, before, over = {}, {}, {}, {}, {}, {}
local fits, oi, now = true, n, nil
for i = 1, n do
  local limit, cost, rate, e, enforce, flags = match(ARGV[i + 1], '^(%S+) (%S+) (%S+) (%S+) (%S) (%S+)$')
  limit, cost = tonumber(limit), tonumber(cost)
  rate = rate ~= '0' and tonumber(rate) or 0
  over[i] = ''
  if flags == 'o' or flags == 'co' then
    oi = oi + 1
    local o = got[oi]
    if o then
      over[i] = o
      local v = tonumber(o)
      if v ~= limit then
        if rate > 0 then
          if v < 1 then v = 1 end
          rate = rate * v / limit
        end
        if flags == 'co' then
          if cost > v then cost = v end
          if cost < 1 then cost = 1 end
        end
        limit = v
      end
    end
  end
  local level
  if rate > 0 then
    now = now or tonumber(ARGV[1])
    local s = redis.call('HMGET', KEYS[i], 'l', 't')
    level = limit
    if s[1] then
      local t = now - tonumber(s[2])
      if t < 0 then t = 0 end
      level = tonumber(s[1]) + t * rate
      if level > limit then level = limit end
    end
    if enforce == '1' and level < cost then fits = false end
  else
    level = got[i] and tonumber(got[i]) or 0
    if enforce == '1' and level + cost > limit then fits = false end
  end
  limits[i], costs[i], rates[i], ends[i], before[i] = limit, cost, rate, e, level
end
if fits then
  for i = 1, n do
    local cost, rate = costs[i], rates[i]
    if rate > 0 then
      local left = before[i] - cost
      redis.call('HSET', KEYS[i], 'l', tostring(left), 't', ARGV[1])
      redis.call('EXPIRE', KEYS[i], math.ceil((limits[i] - left) / rate) + 60)
    elseif redis.call('INCRBY', KEYS[i], cost) == cost and redis.call('PTTL', KEYS[i]) < 0 then
      -- a new window: it is forgotten a minute after it ends, counted from the caller's now
      -- (not Redis's clock, which may disagree with the gateway's)
      local left = math.max(0, math.ceil(tonumber(ends[i]) - tonumber(ARGV[1]) * 1000))
      redis.call('PEXPIRE', KEYS[i], left + 60000)
    end
  end
end
local out = {fits and 1 or 0}
for i = 1, n do out[i + 1] = rates[i] > 0 and string.format('%.17g', before[i]) or before[i] end
for i = 1, n do out[n + i + 1] = over[i] end
return out
"""

# PEEK (the gauges' refresh and the admin API, not a request's path): ARGV[1] = now; ARGV[2] =
# JSON, per counter [limit, rate, override key's index]. Returns {level 1, override 1, level 2,
# override 2, ...}; changes nothing.
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

# ADJUST: KEYS = the counters; ARGV[1] = now; ARGV[1 + i] = counter i as "limit rate delta"
# (rate 0: a window). A delta is what the request used beyond (or, negative, short of) what it
# reserved. An ended window (its key gone) is not revived.
ADJUST = """
local match, tonumber, now = string.match, tonumber, nil
for i = 1, #KEYS do
  local limit, rate, delta = match(ARGV[i + 1], '^(%S+) (%S+) (%S+)$')
  if rate ~= '0' then
    now = now or tonumber(ARGV[1])
    limit, rate, delta = tonumber(limit), tonumber(rate), tonumber(delta)
    local s = redis.call('HMGET', KEYS[i], 'l', 't')
    local level = limit
    if s[1] then
      level = math.min(limit, tonumber(s[1]) + math.max(0, now - tonumber(s[2])) * rate)
    end
    local left = math.min(limit, level - delta)
    redis.call('HSET', KEYS[i], 'l', tostring(left), 't', ARGV[1])
    redis.call('EXPIRE', KEYS[i], math.ceil((limit - left) / rate) + 60)
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], delta) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
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

    def reserve(self, counters: Sequence[Counter], now: float) -> Awaitable[Reservation]:
        """The script is written to Redis before this returns (on a live connection)."""
        if not counters:
            return Ready(Reservation(True, (), ()))
        prefix = self.prefix
        keys: list[Arg] = [prefix + c.key for c in counters]
        args: list[Arg] = [repr(now)]
        for c in counters:
            if c.override:
                keys.append(prefix + c.override)
            args.append(
                f"{c.limit} {c.cost} {c.rate or 0} {int(c.window_end * 1000)} {1 if c.enforce else 0} "
                + _FLAGS[c.cap, bool(c.override)]
            )
        return self._reserved(self.fast.send_script(self._reserve, keys, args), counters, now)

    async def _reserved(self, sent: Awaitable[Any], counters: Sequence[Counter], now: float) -> Reservation:
        got = await self._call(sent)
        n = len(counters)
        taken = got[0] == 1
        for c, over in zip(counters, got[n + 1 :], strict=True):
            if over:
                apply_override(c, int(over))
        before = [float(v) for v in got[1 : n + 1]]
        states = tuple(state_of(c, b, taken, now) for c, b in zip(counters, before, strict=True))
        return Reservation(taken, tuple(counters), states)

    async def adjust(self, counters: Sequence[Counter], deltas: Sequence[int], now: float) -> None:
        keys: list[Arg] = []
        args: list[Arg] = [repr(now)]
        for c, d in zip(counters, deltas, strict=True):
            if d:
                keys.append(self.prefix + c.key)
                args.append(f"{c.limit} {c.rate or 0} {int(d)}")
        if keys:
            await self._call(self.fast.evalsha(self._adjust, keys, args))

    async def peek(self, counters: Sequence[Counter], now: float) -> list[Peek]:
        if not counters:
            return []
        keys, index = self._keys(counters)
        spec = orjson.dumps([[c.limit, c.rate, i] for c, i in zip(counters, index, strict=True)])
        got = await self._call(self.fast.evalsha(self._peek, keys, (repr(now), spec)))
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
            await self._call(self.client.delete(*keys))

    async def set_override(self, key: str, value: int | None) -> None:
        if value is None:
            await self._call(self.client.delete(self.prefix + key))
        else:
            await self._call(self.client.set(self.prefix + key, str(value)))

    async def _call(self, run: Awaitable[Any]) -> Any:
        try:
            result = await run
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
