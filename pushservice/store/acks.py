"""Delivery confirmation in Redis: each confirmation-requiring message's delivery record,
each user's inbox of what waits for their acknowledgement, and the schedules of
redeliveries, expiries and expiry notices.

Layout (all keys share the stream's hash tag, so every script touches one slot):
- ``ack:<message id>`` hash, the delivery record, written by the publish script with the
  message (store/messages.py): ``service id type event_id body created expires priority
  users topics timeout max written redeliveries``, then per user ``delivered:<user>``,
  ``due:<user>`` (when it is delivered again unless acknowledged), ``retries:<user>``,
  ``acked:<user>``, ``dropped:<user>`` (pushed out of a full inbox); at expiry
  ``expired`` and, with a webhook, ``webhook`` and ``webhook_attempts``. Kept until
  ACK_STATUS_RETENTION_SECONDS after the message expires.
- ``inbox:<user>`` sorted set of the user's unacknowledged message ids, scored
  ``<priority rank><stream ms>`` so that the oldest of the lowest priority leave first
  when it holds ACK_INBOX_MAX_MESSAGES.
- ``ack-due`` sorted set of ``<id> <user>`` by when that user gets the message again.
- ``ack-expiry`` sorted set of ids by expiry time; ``ack-notices`` ids whose expiry
  notice (webhook) is due, by the time of its next attempt.

Times are Unix milliseconds of the service's clock. Every change of a record happens in
one script, so concurrent acknowledgements, deliveries and redeliveries never lose one
another's updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..confirmation import PRIORITY_RANK, AckPolicy
from ..message import Message
from ..settings import Settings
from .client import Keys, RedisConnections, translate_errors

# A notice being sent is claimed for this long: another worker retries it only after.
NOTICE_CLAIM_MS = 120_000
# An expired record waiting for its notice to go out is kept at least this long.
NOTICE_KEEP_MS = 86_400_000


class AckKeys:
    """Key names of delivery confirmation (beside store/client.Keys)."""

    def __init__(self, keys: Keys) -> None:
        tag = keys.stream[: -len(":stream")]
        self.record_prefix = f"{tag}:ack:"
        self.inbox_prefix = f"{tag}:inbox:"
        self.due = f"{tag}:ack-due"
        self.expiry = f"{tag}:ack-expiry"
        self.notices = f"{tag}:ack-notices"
        self.user_connections_prefix = keys.user_prefix

    def record(self, message_id: str) -> str:
        return self.record_prefix + message_id

    def inbox(self, user: str) -> str:
        return self.inbox_prefix + user


def publish_extras(numbered: Sequence[tuple[int, Message]], keys: AckKeys,
                   settings: Settings, policy: AckPolicy, first_key: int
                   ) -> tuple[list[str], list[Any]]:
    """The publish script's extra keys and arguments for the messages of a request that
    are not plain (low priority, or asking for acknowledgement), each
    given with its number in the request (from 1); ``first_key`` is the index in KEYS
    that the first extra key gets. A plain request adds three numbers and no key."""
    options: list[Any] = []
    acks: list[tuple[int, Message]] = []
    for number, message in numbered:
        if message.ack is None:
            options += [number, message.priority]
        else:
            options += [number, f"{message.priority} {message.id}"]
            acks.append((number, message))
    args: list[Any] = [first_key, len(options) // 2, *options, len(acks)]
    if not acks:
        return [], args
    key_list: list[str] = [keys.expiry]
    args += [settings.ack_status_retention_seconds * 1000, settings.ack_inbox_max_messages,
             (settings.message_ttl + settings.ack_status_retention_seconds) * 1000,
             keys.record_prefix]
    for number, message in acks:
        ack = message.ack
        key_list.append(keys.record(message.id))
        key_list += [keys.inbox(user) for user in ack.users]
        args += [number, len(ack.users), PRIORITY_RANK[message.priority],
                 policy.timeout_ms(message.priority, ack.timeout_seconds),
                 policy.max_redeliveries(message.priority), message.priority, message.service,
                 message.id, message.type, ",".join(ack.users), ",".join(message.topics),
                 message.expires_at_ms]
    return key_list, args


# The part of the publish script (store/messages.py) that reads the extras above, from
# ARGV[extras] on. Defines ``options`` (number -> the entry's ``o`` field), ``acks``
# (number -> spec) and refuses an id that another service's message holds, before
# anything is written.
PUBLISH_READ_EXTRAS = """
local options, acks = {}, {}
local first_ack_key = tonumber(ARGV[extras])
local o = tonumber(ARGV[extras + 1])
for j = 1, o do
  options[tonumber(ARGV[extras + 2 * j])] = ARGV[extras + 1 + 2 * j]
end
local a_at = extras + 2 + 2 * o
local a = tonumber(ARGV[a_at])
local retention, inbox_max, inbox_ttl, record_prefix
if a > 0 then
  retention = tonumber(ARGV[a_at + 1])
  inbox_max = tonumber(ARGV[a_at + 2])
  inbox_ttl = ARGV[a_at + 3]
  record_prefix = ARGV[a_at + 4]
  local k = first_ack_key + 1
  local p = a_at + 5
  for j = 1, a do
    local spec = {record = KEYS[k], first_inbox = k + 1, users = tonumber(ARGV[p + 1]),
                  rank = ARGV[p + 2], timeout = ARGV[p + 3], max = ARGV[p + 4],
                  priority = ARGV[p + 5], service = ARGV[p + 6], id = ARGV[p + 7],
                  type = ARGV[p + 8], user_list = ARGV[p + 9], topics = ARGV[p + 10],
                  expires = tonumber(ARGV[p + 11])}
    local owner = redis.call('HGET', spec.record, 'service')
    if owner and owner ~= spec.service then return {'conflict', ARGV[p]} end
    acks[tonumber(ARGV[p])] = spec
    k = k + 1 + spec.users
    p = p + 12
  end
end
local overflow = {}
"""

# After an entry was written (``id``, ``body``, ``i`` its number): its delivery record,
# its place in each user's inbox, its expiry.
PUBLISH_WRITE_RECORD = """
local spec = acks[i]
if spec then
  local entry_ms = string.match(id, '^(%d+)')
  redis.call('DEL', spec.record)
  redis.call('HSET', spec.record, 'service', spec.service, 'id', spec.id, 'type', spec.type,
             'event_id', epoch .. '-' .. id, 'body', body, 'created', entry_ms,
             'expires', spec.expires, 'priority', spec.priority, 'users', spec.user_list,
             'topics', spec.topics, 'timeout', spec.timeout, 'max', spec.max,
             'written', 0, 'redeliveries', 0)
  redis.call('PEXPIREAT', spec.record, spec.expires + retention)
  redis.call('ZADD', KEYS[first_ack_key], spec.expires, spec.id)
  if tonumber(spec.max) > 0 then
    local u = 0
    for user in string.gmatch(spec.user_list, '[^,]+') do
      local inbox = KEYS[spec.first_inbox + u]
      u = u + 1
      redis.call('ZADD', inbox, spec.rank .. entry_ms, spec.id)
      redis.call('PEXPIRE', inbox, inbox_ttl)
      local over = redis.call('ZCARD', inbox) - inbox_max
      if over > 0 then
        local dropped = redis.call('ZPOPMIN', inbox, over)
        for x = 1, #dropped, 2 do
          local record = record_prefix .. dropped[x]
          if redis.call('EXISTS', record) == 1 then
            redis.call('HSET', record, 'dropped:' .. user, entry_ms)
          end
        end
        overflow[#overflow + 1] = i .. ':' .. (#dropped / 2)
      end
    end
  end
end
"""

# KEYS: due set, expiry set. ARGV: now, the acknowledging user ('' for every user the
# message is for: authentication is off), record prefix, inbox prefix, then the ids.
# Refuses the whole request when one id is another user's ({'forbidden', index, ...});
# else per id a status (acknowledged, already, unknown, expired) and when it was
# acknowledged.
_ACKNOWLEDGE_SCRIPT = """
local now, who, prefix, inboxes = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local found, forbidden = {}, {}
for i = 5, #ARGV do
  local f = redis.call('HMGET', prefix .. ARGV[i], 'users', 'expires')
  if not f[1] then
    found[i] = 'unknown'
  elseif tonumber(f[2]) < now then
    found[i] = 'expired'
  elseif who ~= '' and not string.find(',' .. f[1] .. ',', ',' .. who .. ',', 1, true) then
    forbidden[#forbidden + 1] = i - 5
  else
    found[i] = f[1]
  end
end
if #forbidden > 0 then return {'forbidden', unpack(forbidden)} end
local out = {'ok'}
for i = 5, #ARGV do
  local id, users = ARGV[i], found[i]
  if users == 'unknown' or users == 'expired' then
    out[#out + 1] = users
    out[#out + 1] = ''
  else
    local record = prefix .. id
    local status, at, complete = 'already', nil, true
    for user in string.gmatch(users, '[^,]+') do
      local acked = redis.call('HGET', record, 'acked:' .. user)
      if who == '' or user == who then
        if not acked then
          acked = tostring(now)
          status = 'acknowledged'
          redis.call('HSET', record, 'acked:' .. user, acked)
          redis.call('ZREM', inboxes .. user, id)
          redis.call('ZREM', KEYS[1], id .. ' ' .. user)
        end
        if not at or tonumber(acked) < tonumber(at) then at = acked end
      end
      if not acked then complete = false end
    end
    if complete then redis.call('ZREM', KEYS[2], id) end
    out[#out + 1] = status
    out[#out + 1] = at
  end
end
return out
"""

# Writes to connections, counted: KEYS: due set. ARGV: now, record prefix, then triples
# (id, user or '', connections written). Arms each user's redelivery for when its
# timeout is up, unless it acknowledged or its redeliveries are spent.
_RECORD_WRITES_SCRIPT = """
local now, prefix = tonumber(ARGV[1]), ARGV[2]
for i = 3, #ARGV, 3 do
  local id, user, count = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local record = prefix .. id
  if redis.call('EXISTS', record) == 1 then
    redis.call('HINCRBY', record, 'written', count)
    if user ~= '' then
      redis.call('HSETNX', record, 'delivered:' .. user, now)
      local f = redis.call('HMGET', record, 'acked:' .. user, 'retries:' .. user, 'max',
                           'timeout', 'expires')
      if not f[1] and (tonumber(f[2]) or 0) < tonumber(f[3]) then
        local due = now + tonumber(f[4])
        if due < tonumber(f[5]) then
          redis.call('HSET', record, 'due:' .. user, due)
          redis.call('ZADD', KEYS[1], due, id .. ' ' .. user)
        end
      end
    end
  end
end
return 1
"""

# A claimed redelivery: one more for this user, and the next one armed. Shared by the
# inbox and the due scripts (f: the record's fields as _FIELDS reads them).
_CLAIM_LUA = """
local function claim(record, id, user, f, now, due_key)
  local retries = redis.call('HINCRBY', record, 'retries:' .. user, 1)
  redis.call('HINCRBY', record, 'redeliveries', 1)
  local due = now + tonumber(f[9])
  if due < tonumber(f[1]) and retries < tonumber(f[5]) then
    redis.call('HSET', record, 'due:' .. user, due)
    redis.call('ZADD', due_key, due, id .. ' ' .. user)
  else
    redis.call('HSET', record, 'due:' .. user, f[1])
  end
  return {id, f[6], f[7], f[8], tostring(retries), f[10]}
end
local function fields(record, user)
  return redis.call('HMGET', record, 'expires', 'acked:' .. user, 'due:' .. user,
                    'retries:' .. user, 'max', 'event_id', 'type', 'body', 'timeout',
                    'priority')
end
"""

# What a user's new stream gets from the inbox. KEYS: due set. ARGV: now, record prefix,
# inbox prefix, then per claim 6 values: user, the client's epoch and position (ms, seq;
# newer messages reach it live), ids it was sent by its replay (comma-separated), the
# most to claim. Highest priority first, oldest first within one. Returns per claim a
# list of 6-tuples flattened: id, event id, type, body, redeliveries so far, priority.
_CLAIM_INBOX_SCRIPT = _CLAIM_LUA + """
local now, prefix, inboxes = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local result = {}
for c = 4, #ARGV, 6 do
  local user, epoch, ms, seq = ARGV[c], ARGV[c + 1], tonumber(ARGV[c + 2]), tonumber(ARGV[c + 3])
  local sent = {}
  for id in string.gmatch(ARGV[c + 4], '[^,]+') do sent[id] = true end
  local limit = tonumber(ARGV[c + 5])
  local inbox = inboxes .. user
  local got = {}
  for rank = 3, 0, -1 do
    local ids = redis.call('ZRANGEBYSCORE', inbox, rank .. '0000000000000',
                           '(' .. (rank + 1) .. '0000000000000')
    for _, id in ipairs(ids) do
      if #got >= limit * 6 then break end
      local record = prefix .. id
      local f = fields(record, user)
      if not f[1] or tonumber(f[1]) < now or f[2] then
        redis.call('ZREM', inbox, id)  -- gone, expired or acknowledged
      elseif (tonumber(f[4]) or 0) >= tonumber(f[5]) then
        redis.call('ZREM', inbox, id)  -- its redeliveries are spent
      elseif not sent[id] and not (f[3] and tonumber(f[3]) > now) then
        local e, m, s = string.match(f[6], '^(.+)-(%d+)-(%d+)$')
        m, s = tonumber(m), tonumber(s)
        if e ~= epoch or m < ms or (m == ms and s <= seq) then
          for _, v in ipairs(claim(record, id, user, f, now, KEYS[1])) do
            got[#got + 1] = v
          end
        end
      end
    end
  end
  result[#result + 1] = got
end
return result
"""

# Redeliveries whose time came, for users with an open stream somewhere. KEYS: due set.
# ARGV: now, the most to take, record prefix, prefix of each user's set of streams. Returns
# 7-tuples flattened: user, then what _CLAIM_LUA returns. A user without a stream keeps
# the message in the inbox: its next stream gets it.
_TAKE_DUE_SCRIPT = _CLAIM_LUA + """
local now, prefix, streams = tonumber(ARGV[1]), ARGV[3], ARGV[4]
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, item in ipairs(items) do
  redis.call('ZREM', KEYS[1], item)
  local id, user = string.match(item, '^(%S+) (%S+)$')
  local record = prefix .. id
  local f = fields(record, user)
  if f[1] and tonumber(f[1]) >= now and not f[2]
      and (tonumber(f[4]) or 0) < tonumber(f[5])
      and redis.call('ZCOUNT', streams .. user, now, '+inf') > 0 then
    if f[3] and tonumber(f[3]) > now then
      redis.call('ZADD', KEYS[1], f[3], item)  -- delivered again meanwhile: later
    else
      out[#out + 1] = user
      for _, v in ipairs(claim(record, id, user, f, now, KEYS[1])) do out[#out + 1] = v end
    end
  end
end
return out
"""

# Messages whose time is up. KEYS: expiry set, due set, notices. ARGV: now, the most to
# take, record prefix, inbox prefix, 1 to queue a notice for each one left
# unacknowledged. Returns the ids of those.
_EXPIRE_SCRIPT = """
local now, prefix, inboxes, notify = tonumber(ARGV[1]), ARGV[3], ARGV[4], ARGV[5]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local record = prefix .. id
  local f = redis.call('HMGET', record, 'users', 'expires', 'expired')
  if f[1] and not f[3] then
    if tonumber(f[2]) > now then
      redis.call('ZADD', KEYS[1], f[2], id)  -- published again with this id
    else
      local unacknowledged = false
      for user in string.gmatch(f[1], '[^,]+') do
        redis.call('ZREM', inboxes .. user, id)
        redis.call('ZREM', KEYS[2], id .. ' ' .. user)
        if redis.call('HEXISTS', record, 'acked:' .. user) == 0 then unacknowledged = true end
      end
      if unacknowledged then
        redis.call('HSET', record, 'expired', now)
        out[#out + 1] = id
        if notify == '1' then
          redis.call('HSET', record, 'webhook', 'pending', 'webhook_attempts', 0)
          redis.call('ZADD', KEYS[3], now, id)
          if redis.call('PTTL', record) < """ + str(NOTICE_KEEP_MS) + """ then
            redis.call('PEXPIRE', record, """ + str(NOTICE_KEEP_MS) + """)
          end
        end
      end
    end
  end
end
return out
"""

# Notices to send now, each claimed for NOTICE_CLAIM_MS. KEYS: notices. ARGV: now, the
# most to take, record prefix. Returns per notice its record as HGETALL gives it, with
# its attempt number counted in.
_TAKE_NOTICES_SCRIPT = """
local now, prefix = tonumber(ARGV[1]), ARGV[3]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local record = prefix .. id
  if redis.call('EXISTS', record) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], now + """ + str(NOTICE_CLAIM_MS) + """, id)
    redis.call('HINCRBY', record, 'webhook_attempts', 1)
    out[#out + 1] = redis.call('HGETALL', record)
  end
end
return out
"""

# A notice's attempt is over. KEYS: notices, the record. ARGV: id, outcome (delivered,
# failed, retry), when to retry (ms), now, how long to keep the record (ms).
_NOTICE_DONE_SCRIPT = """
if ARGV[2] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HSET', KEYS[2], 'webhook', ARGV[2], 'webhook_at', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A message delivered again to ``user``: its event id (where it stands in the stream)
    and its body as stored; ``retries`` is how many redeliveries it has had, this one
    included."""

    user: str
    message_id: str
    event_id: str
    type: str
    body: bytes
    retries: int
    priority: str


def _redeliveries(user: str, flat: Sequence[Any]) -> list[Redelivery]:
    return [Redelivery(user, flat[i].decode(), flat[i + 1].decode(), flat[i + 2].decode(),
                       flat[i + 3], int(flat[i + 4]), flat[i + 5].decode())
            for i in range(0, len(flat), 6)]


class AckStore:
    """Delivery records, inboxes and the confirmation schedules, for one process."""

    def __init__(self, settings: Settings, connections: RedisConnections, keys: Keys) -> None:
        self.settings = settings
        self.connections = connections
        self.keys = AckKeys(keys)

    def _run(self, source: str, keys: list[str], args: list[Any]):
        return self.connections.script(source)(keys=keys, args=args,
                                                client=self.connections.command)

    # -- users ------------------------------------------------------------------------------

    @translate_errors
    def acknowledge(self, ids: Sequence[str], user: str | None, now_ms: int
                    ) -> list[tuple[str, int | None]] | list[int]:
        """Record ``user``'s acknowledgement of ``ids`` (None: on behalf of every user each
        message is for). Returns per id ``(status, acknowledged at ms)``: status
        ``acknowledged`` (now), ``already`` (before: at that time), ``unknown`` or
        ``expired``. When one id is for someone else, nothing is recorded and the answer
        is the list of the indexes of such ids."""
        k = self.keys
        reply = self._run(_ACKNOWLEDGE_SCRIPT, [k.due, k.expiry],
                          [now_ms, user or "", k.record_prefix, k.inbox_prefix, *ids])
        if reply[0] == b"forbidden":
            return [int(index) for index in reply[1:]]
        pairs = reply[1:]
        return [(pairs[i].decode(), int(pairs[i + 1]) if pairs[i + 1] else None)
                for i in range(0, len(pairs), 2)]

    @translate_errors
    def acknowledged_by(self, user: str, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that ``user`` has acknowledged (one round trip)."""
        pipe = self.connections.command.pipeline(transaction=False)
        for message_id in ids:
            pipe.hexists(self.keys.record(message_id), "acked:" + user)
        return {message_id for message_id, acked in zip(ids, pipe.execute()) if acked}

    @translate_errors
    def claim_inbox(self, claims: Sequence[tuple[str, str, tuple[int, int], Iterable[str],
                                                 int]], now_ms: int) -> list[list[Redelivery]]:
        """For each claim ``(user, epoch, position, ids sent by the replay, limit)``: the
        messages of the user's inbox its new stream gets again (each counted as a
        redelivery): not acknowledged, redeliveries left, not delivered within their
        timeout, and not newer than ``position`` (those reach the stream live)."""
        k = self.keys
        args: list[Any] = [now_ms, k.record_prefix, k.inbox_prefix]
        for user, epoch, (ms, seq), sent, limit in claims:
            args += [user, epoch, ms, seq, ",".join(sent), limit]
        reply = self._run(_CLAIM_INBOX_SCRIPT, [k.due], args)
        return [_redeliveries(claim[0], flat) for claim, flat in zip(claims, reply)]

    @translate_errors
    def record_writes(self, writes: dict[tuple[str, str], int], now_ms: int) -> None:
        """Count writes to connections: ``(message id, user or '') -> connections``."""
        args: list[Any] = [now_ms, self.keys.record_prefix]
        for (message_id, user), count in writes.items():
            args += [message_id, user, count]
        self._run(_RECORD_WRITES_SCRIPT, [self.keys.due], args)

    # -- the schedules (one worker of the deployment runs them) -----------------------------

    @translate_errors
    def take_due(self, now_ms: int, limit: int) -> list[Redelivery]:
        """Redeliveries whose time has come, for users with a stream open somewhere."""
        k = self.keys
        flat = self._run(_TAKE_DUE_SCRIPT, [k.due],
                         [now_ms, limit, k.record_prefix, k.user_connections_prefix])
        return [_redeliveries(flat[i].decode(), flat[i + 1:i + 7])[0]
                for i in range(0, len(flat), 7)]

    @translate_errors
    def expire(self, now_ms: int, limit: int, notify: bool) -> list[str]:
        """Close the records of messages whose time is up; returns the ids that expired
        unacknowledged (with ``notify``, each gets a notice queued)."""
        k = self.keys
        reply = self._run(_EXPIRE_SCRIPT, [k.expiry, k.due, k.notices],
                          [now_ms, limit, k.record_prefix, k.inbox_prefix,
                           1 if notify else 0])
        return [item.decode() for item in reply]

    @translate_errors
    def take_notices(self, now_ms: int, limit: int) -> list[dict[str, str]]:
        """Expiry notices due now, each claimed for NOTICE_CLAIM_MS (another worker
        retries one only after that): their delivery records."""
        reply = self._run(_TAKE_NOTICES_SCRIPT, [self.keys.notices],
                          [now_ms, limit, self.keys.record_prefix])
        return [_record(flat) for flat in reply]

    @translate_errors
    def notice_done(self, message_id: str, outcome: str, now_ms: int,
                    retry_at_ms: int = 0) -> None:
        """``outcome``: ``delivered``, ``failed`` (attempts spent) or ``retry`` (at
        ``retry_at_ms``)."""
        keep_ms = max(1000, self.settings.ack_status_retention_seconds * 1000)
        self._run(_NOTICE_DONE_SCRIPT, [self.keys.notices, self.keys.record(message_id)],
                  [message_id, outcome, retry_at_ms, now_ms, keep_ms])

    # -- publishers ---------------------------------------------------------------------------

    @translate_errors
    def owners(self, ids: Sequence[str]) -> list[str | None]:
        """The service whose delivery record holds each of ``ids`` (None: no record)."""
        pipe = self.connections.command.pipeline(transaction=False)
        for message_id in ids:
            pipe.hget(self.keys.record(message_id), "service")
        return [None if owner is None else owner.decode() for owner in pipe.execute()]

    @translate_errors
    def records(self, ids: Sequence[str]) -> list[dict[str, str] | None]:
        """The delivery records of ``ids`` (None where there is none), one round trip."""
        pipe = self.connections.command.pipeline(transaction=False)
        for message_id in ids:
            pipe.hgetall(self.keys.record(message_id))
        return [_record(raw) if raw else None for raw in pipe.execute()]


def _record(raw) -> dict[str, str]:
    if isinstance(raw, dict):
        items = raw.items()
    else:
        flat = iter(raw)
        items = zip(flat, flat)
    return {name.decode(): value.decode("utf-8", "replace") for name, value in items}
