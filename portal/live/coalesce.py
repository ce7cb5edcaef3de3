"""Hints coalesced per room and panel, across every process: at most one delivery per key and window.

A key is (room, event, kind): what one kind of panel listens to. The first hint for a key goes out at once
and opens a window of `WINDOW_MS`; hints that arrive while it is open are merged into one pending hint,
which goes out when the window ends (and opens the next), so a burst of a thousand hints costs a few
deliveries and the last one always carries the final state. The merged hint is the latest payload; when the
hints it stands for were about different rows, `mixed` names the id fields whose values differed (`id`,
`router_id`), and a panel that matches on one of those refreshes whatever its value.

Both steps are Lua scripts, so web processes and workers agree through Redis without a lock. A pending hint
is sent by whichever comes first: the next hint for its key after the window, or the `Flusher` thread that
every Socket.IO process runs. The emitter cannot be the one that waits: a job or a command may exit right
after its commit. Without any Socket.IO process nobody is listening, and the pending hints expire.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

WINDOW_MS = 250
PENDING_TTL_MS = 60_000  # a pending hint nobody flushed (no Socket.IO process) goes away
WINDOWS = "portal:live:window:"
PENDING = "portal:live:pending:"
DUE = "portal:live:due"  # pending key ids, scored by when their window ends (Redis clock, ms)
POLL = 0.05  # the flusher's longest sleep: a trailing hint leaves at most this late
RETRY = 1.0

_NOW_MS = """
local function now_ms()
  local clock = redis.call('TIME')
  return tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
end
"""

# KEYS: window, pending, due. ARGV: message (JSON), window ms, channel, key id, pending ttl ms.
_EMIT = _NOW_MS + """
local function is_ref(field) return field == 'id' or string.sub(field, -3) == '_id' end

local function merge(older, newer)
  local before, message = cjson.decode(older), cjson.decode(newer)
  local was, now = before.data[1], message.data[1]
  local mixed = {}
  for _, field in ipairs(was.mixed or {}) do mixed[field] = true end
  for field, value in pairs(was) do if is_ref(field) and now[field] ~= value then mixed[field] = true end end
  for field, value in pairs(now) do if is_ref(field) and was[field] ~= value then mixed[field] = true end end
  local fields = {}
  for field in pairs(mixed) do table.insert(fields, field) end
  if #fields > 0 then
    table.sort(fields)
    now.mixed = fields
  end
  return cjson.encode(message)
end

local pending = redis.call('GET', KEYS[2])
local message = ARGV[1]
if pending then message = merge(pending, message) end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('PUBLISH', ARGV[3], message)
  if pending then
    redis.call('DEL', KEYS[2])
    redis.call('ZREM', KEYS[3], ARGV[4])
  end
  return 1
end
redis.call('SET', KEYS[2], message, 'PX', ARGV[5])
redis.call('ZADD', KEYS[3], 'NX', now_ms() + math.max(redis.call('PTTL', KEYS[1]), 0), ARGV[4])
return 0
"""

# KEYS: due. ARGV: pending prefix, window prefix, window ms, channel. Returns {sent, ms to the next due or -1}.
_FLUSH = _NOW_MS + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
local sent = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local message = redis.call('GET', ARGV[1] .. id)
  if message then
    redis.call('DEL', ARGV[1] .. id)
    redis.call('SET', ARGV[2] .. id, '1', 'PX', ARGV[3])
    redis.call('PUBLISH', ARGV[4], message)
    sent = sent + 1
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then return {sent, tonumber(first[2]) - now} end
return {sent, -1}
"""


def key_id(room: str, event_name: str, kind: str | None) -> str:
    return f"{room}|{event_name}|{kind or ''}"


class Coalescer:
    """Queues the coalescing script's calls on a pipeline: one round trip for a transaction's hints. The
    script is called by its hash; `load` it when Redis says it does not know it (after a restart)."""

    def __init__(self, redis: Redis, channel: str):
        self.redis, self.channel = redis, channel
        self.sha = redis.register_script(_EMIT).sha

    def load(self) -> None:
        self.redis.script_load(_EMIT)

    def add(self, pipeline, message_json: str, room: str, event_name: str, kind: str | None) -> None:
        found = key_id(room, event_name, kind)
        pipeline.evalsha(self.sha, 3, WINDOWS + found, PENDING + found, DUE,
                         message_json, WINDOW_MS, self.channel, found, PENDING_TTL_MS)


class Flusher:
    """Sends the pending hints whose window has ended. Any number may run: the script hands each pending
    hint to exactly one of them."""

    def __init__(self, url: str, channel: str):
        self.redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.channel = channel
        self.flush_script = self.redis.register_script(_FLUSH)

    def flush(self) -> float:
        """Send what is due; the seconds until the next pending hint is due (at most `POLL`)."""
        _, next_due_ms = self.flush_script(keys=[DUE], args=[PENDING, WINDOWS, WINDOW_MS, self.channel])
        return POLL if next_due_ms < 0 else min(POLL, next_due_ms / 1000)

    def run_forever(self) -> None:
        while True:
            try:
                pause = self.flush()
            except RedisError as error:  # the listener notices too, and says so; retry quietly
                log.debug("live: flusher cannot reach Redis: %s", error)
                pause = RETRY
            time.sleep(pause)
