"""The queue's Lua scripts, and how they are sent: EVALSHA on one connection per thread.

Why every change is a script: a script runs atomically, and it may SELECT another
database (the SELECT affects only the script; replication and the AOF record the effects
wrapped in MULTI/EXEC). So one script writes the DB-2 record and the DB-1 queue entry:
they appear together or not at all, even across a crash (verified on Redis 6.2). Redis
does not undo a script that fails half-way, so the enqueue script does the one write that
a bad key could refuse first (an out-of-memory refusal comes before any write anyway). The
scripts declare no keys, which is fine on a single Redis but not on Redis Cluster.

Key names and DB numbers come from ``stocks.keys``: the prelude is filled in from there.
``stocks.jobs`` says what each transition means; this module only carries them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable

import hiredis
import redis
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from stocks import keys

TRANSIENT = (redis.ConnectionError, redis.TimeoutError)

# Connection errors: retried with jittered backoff from 0.1 s, up to about 10 s in all.
retry_transient = Retrying(
    retry=retry_if_exception_type(TRANSIENT),
    wait=wait_random_exponential(multiplier=0.1, max=5.0),
    stop=stop_after_attempt(8),
    reraise=True,
)

_PRELUDE = """
local QUEUE_DB, JOBS_DB, IMAGES_DB = @QUEUE_DB@, @JOBS_DB@, @IMAGES_DB@
local WAITING, WORKERS = '@WAITING_KEY@', '@WORKERS_KEY@'
local ALL_JOBS, OWNER_JOBS_PREFIX = '@ALL_JOBS_KEY@', '@OWNER_JOBS_PREFIX@'
local function processing(w) return '@PROCESSING_PREFIX@' .. w end

-- SELECT only when the database changes (the script's own selection; the caller's stays).
-- Every script runs on a connection to the queue DB, so it starts there. A switch costs
-- more than the command after it once the AOF is on (each one is logged as a SELECT), so
-- the scripts visit each database as few times as they can.
local current_db = QUEUE_DB
local function use(db)
  if db ~= current_db then redis.call('SELECT', db); current_db = db end
end
local function job_key(id) return '@JOB_PREFIX@' .. id end

-- Redis server time in ms: one clock for every host (an integer-valued double, which
-- redis.call passes on as plain digits)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Images are kept within a byte budget: before one is stored, the oldest go until it
# fits (an image is never refused; a budget smaller than one image keeps just that one).
# Sizes and ages live beside the images, so a drop costs no scan. An image that expired
# by its TTL still counts until it comes up as the oldest: the count errs high, never low.
_IMAGES = """
local function image_key(id) return '@IMAGE_PREFIX@' .. id end
local function cache_key(sha) return '@CACHE_PREFIX@' .. sha end
local IMAGE_BYTES, IMAGE_ORDER, IMAGE_SIZES = '@IMAGE_BYTES_KEY@', '@IMAGE_ORDER_KEY@',
                                              '@IMAGE_SIZES_KEY@'
local image_budget = 0  -- bytes; set from ARGV by each script that stores images

-- (in IMAGES_DB) drop one image and its accounting
local function forget_image(id)
  local size = tonumber(redis.call('HGET', IMAGE_SIZES, id) or '0')
  redis.call('DEL', image_key(id))
  redis.call('HDEL', IMAGE_SIZES, id)
  redis.call('ZREM', IMAGE_ORDER, id)
  if size > 0 then redis.call('DECRBY', IMAGE_BYTES, size) end
end

-- (in IMAGES_DB) drop the oldest images until ``size`` more bytes fit; ``keep`` is spared
local function make_room(size, keep)
  local used = tonumber(redis.call('GET', IMAGE_BYTES) or '0')
  local skip = 0
  while used + size > image_budget do
    local oldest = redis.call('ZRANGE', IMAGE_ORDER, skip, skip)[1]
    if not oldest then break end
    if oldest == keep then
      skip = 1
    else
      forget_image(oldest)
      used = tonumber(redis.call('GET', IMAGE_BYTES) or '0')
    end
  end
end

-- (in IMAGES_DB) count a stored image
local function account_image(id, size, now)
  if redis.call('HSET', IMAGE_SIZES, id, size) == 0 then return end  -- counted already
  redis.call('ZADD', IMAGE_ORDER, now, id)
  redis.call('INCRBY', IMAGE_BYTES, size)
end
"""

# The helpers of the scripts that take, finish or give back jobs. Kept apart from the
# prelude because a script defines its helpers afresh on every call, and the enqueue
# script, the hottest, needs none of them.
_TAKING = """
-- jobs a call ended without running them, for the caller to log and count:
-- {'finished', id, kind, request_id, attempts, copied_from} or {'failed', id, kind,
-- request_id, attempts}
local settled = {}

local function drop(w, id)
  use(QUEUE_DB)
  redis.call('LREM', processing(w), 1, id)
end

local function fail_record(id, msg, ttl, now)
  use(JOBS_DB)
  redis.call('HSET', job_key(id), 'status', 'failed', 'finished_at', now, 'error', msg,
             'token', '')
  redis.call('EXPIRE', job_key(id), ttl)
end

-- queued -> running for a job already in w's processing list: {'started', id, kind,
-- params, attempts, request_id}, or {status, id} when it is not runnable (and it leaves the list).
-- ``batch`` (see take) or nil; {'later', id} leaves the job where it is for the caller.
local function start(id, w, token, max_attempts, ttl, now, batch)
  use(JOBS_DB)
  local key = job_key(id)
  local rec = redis.call('HMGET', key, 'status', 'attempts', 'kind', 'params', 'cache_key',
                        'request_id')
  local status = rec[1]
  if not status then drop(w, id); return {'gone', id} end
  if status ~= 'queued' then drop(w, id); return {status, id} end
  local attempts = tonumber(rec[2]) or 0
  if attempts >= max_attempts then
    fail_record(id, 'gave up after ' .. attempts .. ' attempts', ttl, now)
    drop(w, id)
    settled[#settled + 1] = {'failed', id, rec[3] or '', rec[6] or '', tostring(attempts)}
    return {'failed', id}
  end
  local ck = rec[5]
  if ck and ck ~= '' then
    -- an identical request already has an image: copy it instead of drawing again
    use(IMAGES_DB)
    local src = redis.call('GET', cache_key(ck))
    local size = src and src ~= id and redis.call('STRLEN', image_key(src)) or 0
    if size > 0 then make_room(size, src) end
    if size > 0 and redis.call('COPY', image_key(src), image_key(id), 'REPLACE') == 1 then
      redis.call('EXPIRE', image_key(id), ttl)
      account_image(id, size, now)
      redis.call('SET', cache_key(ck), id, 'EX', ttl)
      use(JOBS_DB)
      local ctype = redis.call('HGET', job_key(src), 'content_type') or 'image/png'
      redis.call('HSET', key, 'status', 'finished', 'started_at', now, 'finished_at', now,
                 'attempts', attempts + 1, 'content_type', ctype)
      redis.call('EXPIRE', key, ttl)
      drop(w, id)
      settled[#settled + 1] = {'finished', id, rec[3] or '', rec[6] or '',
                               tostring(attempts + 1), src}
      return {'cached', id}
    end
    use(JOBS_DB)
  end
  if batch then
    if batch.n > 0 and (batch.alone or attempts > 0 or (ck and batch.keys[ck])) then
      return {'later', id}
    end
    batch.n, batch.alone = batch.n + 1, attempts > 0
    if ck and ck ~= '' then batch.keys[ck] = true end
  end
  redis.call('HSET', key, 'status', 'running', 'started_at', now, 'worker', w, 'token', token,
             'attempts', attempts + 1)
  return {'started', id, rec[3], rec[4], tostring(attempts + 1), rec[6] or ''}
end

-- Move ids from the queue and start up to ``limit`` of them, oldest first; {} when the
-- queue is empty. A job tried before is taken alone (if it is what killed its last
-- worker, no other job pays an attempt for it again), and a job whose identical request
-- is in the batch already waits for the next take (to copy that image once it is drawn).
local function take(w, token, max_attempts, ttl, now, limit)
  local started, batch = {}, {n = 0, keys = {}}
  for _ = 1, limit + 100 do  -- bounded: a run of cancelled or stray entries is skipped
    use(QUEUE_DB)
    local id = redis.call('LMOVE', WAITING, processing(w), 'RIGHT', 'LEFT')
    if not id then break end
    local res = start(id, w, token, max_attempts, ttl, now, batch)
    if res[1] == 'later' then  -- back to the head of the line, for the next take
      use(QUEUE_DB)
      redis.call('LMOVE', processing(w), WAITING, 'LEFT', 'RIGHT')
      break
    end
    if res[1] == 'started' then
      started[#started + 1] = res
      if #started >= limit then break end
    end
  end
  return started
end

-- A call that takes jobs is sent again when its reply is lost, and by then the lost call
-- may have taken some: they are in w's list, running with this call's token, or one is
-- still queued (a BLMOVE whose reply was lost). Hand those out rather than take others
-- while they wait there unseen. Other queued leftovers go back to the front of the line;
-- jobs running under other tokens are left alone (a worker may hold several).
local function recover(w, token, max_attempts, ttl, now)
  use(QUEUE_DB)
  local ids = redis.call('LRANGE', processing(w), 0, -1)
  local found, leftovers = {}, {}
  use(JOBS_DB)
  for i = #ids, 1, -1 do  -- oldest first
    local rec = redis.call('HMGET', job_key(ids[i]), 'status', 'token', 'kind', 'params',
                           'attempts', 'request_id')
    if rec[1] == 'running' and rec[2] == token then
      found[#found + 1] = {'started', ids[i], rec[3], rec[4], rec[5], rec[6] or ''}
    elseif rec[1] ~= 'running' then
      leftovers[#leftovers + 1] = ids[i]
    end
  end
  for _, id in ipairs(leftovers) do
    if #found == 0 then
      local res = start(id, w, token, max_attempts, ttl, now)
      if res[1] == 'started' then found[1] = res end
    else
      use(JOBS_DB)
      local status = redis.call('HGET', job_key(id), 'status')
      drop(w, id)
      if status == 'queued' then redis.call('RPUSH', WAITING, id) end
    end
  end
  return found
end
"""

# ARGV: id, kind, params, cache_key, ttl, prune_below, owner[, request_id] -> created_at, or 0
#       when the id exists
_ENQUEUE = """
local id = ARGV[1]
-- the push goes first: it is the only write here that a bad key type could refuse, and a
-- script that fails before its first write leaves nothing behind
redis.call('LPUSH', WAITING, id)
use(JOBS_DB)
if redis.call('EXISTS', job_key(id)) == 1 then
  -- the same id again (a retry after a lost reply): the job is recorded already and may
  -- be running or done, so take back the push and change nothing
  use(QUEUE_DB)
  redis.call('LPOP', WAITING)
  return 0
end
local now = now_ms()
redis.call('HSET', job_key(id), 'id', id, 'kind', ARGV[2], 'params', ARGV[3],
           'status', 'queued', 'created_at', now, 'attempts', 0, 'cache_key', ARGV[4])
-- optional fields only when set: the hottest script stays as small as it can
if ARGV[7] ~= '' then redis.call('HSET', job_key(id), 'owner', ARGV[7]) end
if ARGV[8] and ARGV[8] ~= '' then redis.call('HSET', job_key(id), 'request_id', ARGV[8]) end
redis.call('EXPIRE', job_key(id), ARGV[5])
redis.call('ZADD', ALL_JOBS, 0, id)
if ARGV[7] ~= '' then
  redis.call('ZADD', OWNER_JOBS_PREFIX .. ARGV[7], 0, id)
  redis.call('EXPIRE', OWNER_JOBS_PREFIX .. ARGV[7], ARGV[5])  -- outlives its newest record
end
if ARGV[6] ~= '' then
  redis.call('ZREMRANGEBYLEX', ALL_JOBS, '-', '(' .. ARGV[6])
end
return now
"""

# ARGV: worker, token, max_attempts, ttl, image budget, limit, retry ('1' after a lost reply)
# -> {the started jobs, oldest first; the jobs settled without running}
_TAKE = """
local w, token, max_attempts, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], now_ms()
image_budget = tonumber(ARGV[5])
local taken = {}
if ARGV[7] == '1' then taken = recover(w, token, max_attempts, ttl, now) end
if #taken == 0 then taken = take(w, token, max_attempts, ttl, now, tonumber(ARGV[6])) end
return {taken, settled}
"""

# ARGV: id (just moved into w's list by BLMOVE), worker, token, max_attempts, ttl,
#       image budget, retry -> {that job started (or why not), the jobs settled}
_START = """
local id, w, token, max_attempts, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
                                             ARGV[5], now_ms()
image_budget = tonumber(ARGV[6])
local res
if ARGV[7] == '1' then
  res = recover(w, token, max_attempts, ttl, now)[1] or {'gone', id}
else
  res = start(id, w, token, max_attempts, ttl, now)
end
return {res, settled}
"""

# ARGV: worker, ttl, next_token, max_attempts, image budget (bytes), limit (how many jobs
#       to take next, 0 = none), n, then n times: id, token, data, content_type; last:
#       retry ('1' after a lost reply: finishing again changes nothing, and the jobs taken
#       are those the lost call took)
# -> {status of each, the jobs taken, the jobs settled without running}
# The images are stored before the next jobs start, so that an identical request queued
# behind one of these is answered from its image.
_FINISH = """
local w, ttl, next_token, max_attempts = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
image_budget = tonumber(ARGV[5])
local limit, n, retry = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[#ARGV] == '1'
local now = now_ms()
for i = 0, n - 1 do drop(w, ARGV[8 + 4 * i]) end
use(JOBS_DB)
local results, stored = {}, {}
for i = 0, n - 1 do
  local id, token = ARGV[8 + 4 * i], ARGV[9 + 4 * i]
  local key = job_key(id)
  local rec = redis.call('HMGET', key, 'status', 'token', 'cache_key')
  results[i + 1] = 'stale'
  if rec[1] == 'running' and rec[2] == token then
    redis.call('HSET', key, 'status', 'finished', 'finished_at', now,
               'content_type', ARGV[11 + 4 * i])
    redis.call('EXPIRE', key, ttl)
    stored[#stored + 1] = {id, ARGV[10 + 4 * i], rec[3]}
    results[i + 1] = 'finished'
  elseif rec[1] == 'finished' and rec[2] == token then
    results[i + 1] = 'finished'  -- a retry after a lost reply
  end
end
if #stored > 0 then use(IMAGES_DB) end
for _, image in ipairs(stored) do
  make_room(#image[2])
  redis.call('SET', image_key(image[1]), image[2], 'EX', ttl)
  account_image(image[1], #image[2], now)
  if image[3] and image[3] ~= '' then
    redis.call('SET', cache_key(image[3]), image[1], 'EX', ttl)
  end
end
local taken = {}
if limit > 0 then
  if retry then taken = recover(w, next_token, max_attempts, ttl, now) end
  if #taken == 0 then taken = take(w, next_token, max_attempts, ttl, now, limit) end
end
return {results, taken, settled}
"""

# ARGV: id, worker, token, ttl, error
_FAIL = """
local id, w = ARGV[1], ARGV[2]
use(JOBS_DB)
local rec = redis.call('HMGET', job_key(id), 'status', 'token')
local result = 'stale'
if rec[1] == 'running' and rec[2] == ARGV[3] then
  fail_record(id, ARGV[5], ARGV[4], now_ms())
  result = 'failed'
end
drop(w, id)
return result
"""

# ARGV: id, worker, token, refund ('1' gives the attempt back)
_PUT_BACK = """
local id, w = ARGV[1], ARGV[2]
use(JOBS_DB)
local key = job_key(id)
local rec = redis.call('HMGET', key, 'status', 'token')
if rec[1] ~= 'running' or rec[2] ~= ARGV[3] then drop(w, id); return 'stale' end
redis.call('HSET', key, 'status', 'queued', 'started_at', '', 'worker', '', 'token', '')
if ARGV[4] == '1' then redis.call('HINCRBY', key, 'attempts', -1) end
drop(w, id)
redis.call('RPUSH', WAITING, id)
return 'queued'
"""

# ARGV: worker ('' = every worker silent for timeout_ms), timeout_ms, max_attempts, ttl
# -> {requeued, failed}: each a flat list id, kind, id, kind, ...
_REAP = """
local only, timeout, max_attempts, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
use(QUEUE_DB)
local workers = {only}
if only == '' then
  workers = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', tonumber(now) - timeout)
end
local requeued, failed = {}, {}
for _, w in ipairs(workers) do
  use(QUEUE_DB)
  local ids = redis.call('LRANGE', processing(w), 0, -1)
  for _, id in ipairs(ids) do
    use(JOBS_DB)
    local key = job_key(id)
    local rec = redis.call('HMGET', key, 'status', 'attempts', 'worker', 'kind')
    local back = rec[1] == 'queued'
    if rec[1] == 'running' and rec[3] == w then
      local attempts = tonumber(rec[2]) or 0
      if attempts >= max_attempts then
        fail_record(id, 'the worker stopped responding; gave up after ' .. attempts
                    .. ' attempts', ttl, now)
        table.insert(failed, id)
        table.insert(failed, rec[4] or '')
      else
        redis.call('HSET', key, 'status', 'queued', 'started_at', '', 'worker', '', 'token', '')
        back = true
      end
    end
    if back then
      use(QUEUE_DB)
      redis.call('RPUSH', WAITING, id)
      table.insert(requeued, id)
      table.insert(requeued, rec[4] or '')
    end
  end
  use(QUEUE_DB)
  redis.call('DEL', processing(w))
  if only == '' then redis.call('ZREM', WORKERS, w) end
end
return {requeued, failed}
"""

# ARGV: worker, '1' to unregister
_HEARTBEAT = """
use(QUEUE_DB)
if ARGV[2] == '1' then return redis.call('ZREM', WORKERS, ARGV[1]) end
local added = redis.call('ZADD', WORKERS, now_ms(), ARGV[1])
if ARGV[3] and ARGV[3] ~= '' then  -- the image budget this worker keeps, for the operator
  use(IMAGES_DB)
  redis.call('SET', '@IMAGE_BUDGET_KEY@', ARGV[3])
end
return added
"""

# ARGV: id, ttl -> 'missing' | 'running' | 'cancelled' | 'deleted'
_CANCEL_OR_DELETE = """
local id = ARGV[1]
use(JOBS_DB)
local key = job_key(id)
local status, owner = unpack(redis.call('HMGET', key, 'status', 'owner'))
if not status then return 'missing' end
if status == 'running' then return 'running' end
if status == 'queued' then
  redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now_ms())
  redis.call('EXPIRE', key, ARGV[2])
  use(QUEUE_DB)
  redis.call('LREM', WAITING, 0, id)
  return 'cancelled'
end
redis.call('DEL', key)
redis.call('ZREM', ALL_JOBS, id)
if owner and owner ~= '' then redis.call('ZREM', OWNER_JOBS_PREFIX .. owner, id) end
use(IMAGES_DB)
forget_image(id)
return 'deleted'
"""


def _lua(*parts: str) -> str:
    """A script: the prelude, the helper chunks it needs, its body; names from ``keys``."""
    text = _PRELUDE + "".join(parts)
    for name in re.findall(r"@([A-Z_]+)@", text):
        text = text.replace(f"@{name}@", str(getattr(keys, name)))
    return text


_STORING = (_IMAGES, _TAKING)  # scripts that may store or copy an image
SOURCES = {
    "enqueue": _lua(_ENQUEUE),
    "take": _lua(*_STORING, _TAKE),
    "start": _lua(*_STORING, _START),
    "finish": _lua(*_STORING, _FINISH),
    "fail": _lua(*_STORING, _FAIL),
    "put_back": _lua(*_STORING, _PUT_BACK),
    "reap": _lua(*_STORING, _REAP),
    "heartbeat": _lua(_HEARTBEAT),
    "cancel_or_delete": _lua(_IMAGES, _CANCEL_OR_DELETE),
}
SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SOURCES.items()}


class _Wire(threading.local):
    """This thread's own connection to the queue DB: the queue's hot path.

    A queue call is one round trip, and redis-py's pooled ``execute_command`` doubles its
    cost (about 80 us against 40 us here: pool lock, metrics hooks, argument encoding in
    Python), which was a third of a no-op job. So each thread keeps one connection with
    the pool's settings, made again after a fork or when the pool changes, and hiredis
    packs the command. Errors behave as through the client: the connection's retry policy
    (reconnecting), then the exception; the policy's wrapper is only entered after a first
    failure, as it costs a few us per call.
    """

    conn: redis.Connection | None = None
    pool: redis.ConnectionPool | None = None
    pid = 0

    def connection(self, pool: redis.ConnectionPool) -> redis.Connection:
        if self.conn is None or self.pool is not pool or self.pid != os.getpid():
            self.conn = pool.connection_class(**pool.connection_kwargs)
            self.pool, self.pid = pool, os.getpid()
        return self.conn


class Scripts:
    """Runs the scripts (and BLMOVE) against the queue DB of ``client()``.

    ``client`` is looked up on every call, so a process follows ``reset_clients()`` after
    a fork.
    """

    def __init__(self, client: Callable[[], redis.Redis]):
        self.client = client
        self._wire = _Wire()

    def call(self, *args: object, resend: tuple | None = None, retry: bool = True):
        """One command. A lost reply means it may have run: a retry sends ``resend``
        instead when given; ``retry=False`` raises at once."""
        conn = self._wire.connection(self.client().connection_pool)
        packed = [hiredis.pack_command(args)]

        def roundtrip():
            conn.send_packed_command(packed)
            return conn.read_response()

        try:
            return roundtrip()
        except TRANSIENT:
            conn.disconnect()  # a stale socket (Redis restarted): the policy takes over
            if not retry:
                raise
        if resend is not None:
            packed = [hiredis.pack_command(resend)]
        return conn.retry.call_with_retry(roundtrip, lambda _error: conn.disconnect())

    def run(self, name: str, *args: object, resend: tuple | None = None):
        """EVALSHA, loading the script once per server (again after a restart without AOF).

        ``resend``: the arguments to send instead if the reply is lost (see ``run_taking``).
        """
        sha = SHAS[name]
        again = ("EVALSHA", sha, 0, *resend) if resend is not None else None
        try:
            return self.call("EVALSHA", sha, 0, *args, resend=again)
        except redis.exceptions.NoScriptError:
            self.call("SCRIPT", "LOAD", SOURCES[name])
            return self.call("EVALSHA", sha, 0, *args, resend=again)

    def run_taking(self, name: str, *args: object):
        """A script that may take a job, retried on a lost reply without stranding one.

        The lost call may have run and taken a job into this worker's list. A plain retry
        would take a second one and leave the first there, running in nobody's hands and
        unseen by the reaper while this worker heartbeats. So every retry says it is one
        (the last argument), and the script first hands out what the lost call took.
        """
        try:
            return self.run(name, *args, "", resend=(*args, "1"))
        except TRANSIENT:
            return retry_transient(self.run, name, *args, "1")
