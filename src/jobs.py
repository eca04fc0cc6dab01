"""Chart jobs: a reliable hand-rolled queue and the job records (Redis DBs 1, 2 and 3).

The shape is HotQueue's (``put``, ``get``, ``consume``, a ``@queue.worker`` decorator); the
failure mode is not: a job taken by a worker stays in Redis until it is finished, so a
worker killed mid-job loses nothing. Messages and records are JSON; nothing is pickled.

Key layout
    DB 1 (queue)
        queue:waiting           LIST  job ids; producers LPUSH, workers take from the right
        queue:processing:{W}    LIST  ids worker W has taken and not yet finished
        queue:workers           ZSET  worker id -> last heartbeat (Redis server time, ms)
    DB 2 (jobs)
        job:{ID}                HASH  id, kind, params (JSON), status, created_at, started_at,
                                      finished_at (epoch ms; absent or "" when unset),
                                      attempts, error, token, worker, cache_key, content_type
        jobs:all                ZSET  every id, score 0: ids start with the creation time in
                                      hex, so lexicographic order is age (newest = highest)
    DB 3 (images)
        image:{ID}              STR   the image bytes (content type in the record)
        cache:{SHA}             STR   id of a job whose image answers that request

Why every change is a Lua script: a script runs atomically, and it may SELECT another
database (the SELECT affects only the script; replication and the AOF record the effects
wrapped in MULTI/EXEC). So one script writes the DB-2 record and the DB-1 queue entry:
they appear together or not at all, even across a crash (verified on Redis 6.2). Redis
does not undo a script that fails half-way, so the enqueue script does the one write that
a bad key could refuse first (an out-of-memory refusal comes before any write anyway). The
scripts declare no keys, which is fine on a single Redis but not on Redis Cluster.

Status transitions, each a compare-and-set inside one script:
    queued  -> running    take: only from ``queued`` (a cancelled job is never run); the
                          record gets a fresh random ``token`` and ``attempts + 1``
    running -> finished   finish: only with the current token, so a stale or duplicate
    running -> failed     worker (reaped, then back) can never overwrite the result, and a
                          job completes at most once; image and record share one TTL
    running -> queued     put back: graceful shutdown (attempt refunded) or the reaper
    queued  -> cancelled  cancel: also removes it from queue:waiting
A worker heartbeats into ``queue:workers``; any worker runs the reaper, which puts back
the jobs of workers silent for ``STOCKS_WORKER_TIMEOUT`` s, or fails them once they have
used ``STOCKS_MAX_ATTEMPTS`` attempts. A call that takes a job and loses its reply is sent
again marked as a retry, and hands out the job the lost call took (``recover``), so no job
sits in a live worker's list with nobody running it.

Round trips: a busy worker finishes its job and takes the next in one script. Jobs far
shorter than that round trip (a no-op; never a 50 ms chart) are taken in batches of up to
``STOCKS_BATCH_MAX``, sized by the recent pace (``Pace``), and their results recorded
together, each at most about ``BATCH_BUDGET`` plus one job late. Every job in a batch gets
its own CAS transitions and sits in the worker's list until finished. A job tried before
is taken alone, so if it is what killed its last worker, no batch-mate pays an attempt
for it again; a job identical to one in the batch waits for the next take, to copy that
image. A stopping worker records what it ran and puts back the rest, in order.

Records and images live ``STOCKS_RESULT_TTL`` s after their last change (default 7
days); the image and its record get the same TTL in the same script.

Identical requests: the API stores a ``cache_key`` (kind, params and data versions) in
the record; when a worker takes a job whose key maps to a stored image, the take script
copies that image and finishes the job in the same step instead of drawing it again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import hiredis
import orjson
import redis

from stocks.config import IMAGES_DB, JOBS_DB, QUEUE_DB, env_float, env_int, redis_client

log = logging.getLogger(__name__)

WAITING_KEY = "queue:waiting"
WORKERS_KEY = "queue:workers"
PROCESSING_PREFIX = "queue:processing:"
JOB_PREFIX = "job:"
ALL_KEY = "jobs:all"
IMAGE_PREFIX = "image:"
CACHE_PREFIX = "cache:"

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
TERMINAL = ("finished", "failed", "cancelled")
LIST_SCAN_BUDGET = 2000
BLOCK_SLICE = 10.0  # longest BLMOVE, in s: well under the client's socket timeout (30 s)
ID_LENGTH = 28  # 14 hex digits of epoch microseconds + 14 random hex digits
BATCH_BUDGET = 0.005  # s of paced work a worker takes at once (see Pace)

TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt
    """Raise inside a handler to put its job back without using up an attempt (shutdown)."""


class JobError(Exception):
    """A deterministic failure: the job fails at once with this message, no retry."""


def result_ttl() -> int:
    return env_int("STOCKS_RESULT_TTL", 7 * 24 * 3600)


def worker_timeout() -> float:
    return env_float("STOCKS_WORKER_TIMEOUT", 30.0)


def max_attempts() -> int:
    return env_int("STOCKS_MAX_ATTEMPTS", 3)


def batch_max() -> int:
    """Most jobs a worker takes at once (1: one per round trip); bounds a script's time."""
    return max(1, env_int("STOCKS_BATCH_MAX", 32))


def new_job_id(now: float | None = None) -> str:
    """Time-ordered id: ids sort by creation, which gives newest-first listing for free."""
    us = int((time.time() if now is None else now) * 1_000_000)
    return f"{us:014x}{secrets.token_hex(7)}"


def is_job_id(text: str) -> bool:
    return len(text) == ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def new_worker_id() -> str:
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(4)}"


# --- Lua ---------------------------------------------------------------------------------

_PRELUDE = """
local QUEUE_DB, JOBS_DB, IMAGES_DB = @QUEUE_DB@, @JOBS_DB@, @IMAGES_DB@
local WAITING, WORKERS = 'queue:waiting', 'queue:workers'
local function processing(w) return 'queue:processing:' .. w end

-- SELECT only when the database changes (the script's own selection; the caller's stays).
-- Every script runs on a connection to the queue DB, so it starts there. A switch costs
-- more than the command after it once the AOF is on (each one is logged as a SELECT), so
-- the scripts visit each database as few times as they can.
local current_db = QUEUE_DB
local function use(db)
  if db ~= current_db then redis.call('SELECT', db); current_db = db end
end
local function job_key(id) return 'job:' .. id end

-- Redis server time in ms: one clock for every host (an integer-valued double, which
-- redis.call passes on as plain digits)
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# The helpers of the scripts that take, finish or give back jobs. Kept apart from the
# prelude because a script defines its helpers afresh on every call, and the enqueue
# script, the hottest, needs none of them.
_TAKING = """
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
-- params, attempts}, or {status, id} when it is not runnable (and it leaves the list).
-- ``batch`` (see take) or nil; {'later', id} leaves the job where it is for the caller.
local function start(id, w, token, max_attempts, ttl, now, batch)
  use(JOBS_DB)
  local key = job_key(id)
  local rec = redis.call('HMGET', key, 'status', 'attempts', 'kind', 'params', 'cache_key')
  local status = rec[1]
  if not status then drop(w, id); return {'gone', id} end
  if status ~= 'queued' then drop(w, id); return {status, id} end
  local attempts = tonumber(rec[2]) or 0
  if attempts >= max_attempts then
    fail_record(id, 'gave up after ' .. attempts .. ' attempts', ttl, now)
    drop(w, id)
    return {'failed', id}
  end
  local ck = rec[5]
  if ck and ck ~= '' then
    -- an identical request already has an image: copy it instead of drawing again
    use(IMAGES_DB)
    local src = redis.call('GET', 'cache:' .. ck)
    if src and src ~= id and redis.call('COPY', 'image:' .. src, 'image:' .. id, 'REPLACE') == 1
    then
      redis.call('EXPIRE', 'image:' .. id, ttl)
      redis.call('SET', 'cache:' .. ck, id, 'EX', ttl)
      use(JOBS_DB)
      local ctype = redis.call('HGET', job_key(src), 'content_type') or 'image/png'
      redis.call('HSET', key, 'status', 'finished', 'started_at', now, 'finished_at', now,
                 'attempts', attempts + 1, 'content_type', ctype)
      redis.call('EXPIRE', key, ttl)
      drop(w, id)
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
  return {'started', id, rec[3], rec[4], tostring(attempts + 1)}
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
                           'attempts')
    if rec[1] == 'running' and rec[2] == token then
      found[#found + 1] = {'started', ids[i], rec[3], rec[4], rec[5]}
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

# ARGV: id, kind, params, cache_key, ttl, prune_below -> created_at, or 0 when the id exists
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
redis.call('EXPIRE', job_key(id), ARGV[5])
redis.call('ZADD', 'jobs:all', 0, id)
if ARGV[6] ~= '' then
  redis.call('ZREMRANGEBYLEX', 'jobs:all', '-', '(' .. ARGV[6])
end
return now
"""

# ARGV: worker, token, max_attempts, ttl, limit, retry ('1' after a lost reply)
# -> the started jobs, oldest first
_TAKE = """
local w, token, max_attempts, ttl, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], now_ms()
local taken = {}
if ARGV[6] == '1' then taken = recover(w, token, max_attempts, ttl, now) end
if #taken == 0 then taken = take(w, token, max_attempts, ttl, now, tonumber(ARGV[5])) end
return taken
"""

# ARGV: id (just moved into w's list by BLMOVE), worker, token, max_attempts, ttl, retry
_START = """
local id, w, token, max_attempts, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
                                             ARGV[5], now_ms()
if ARGV[6] == '1' then return recover(w, token, max_attempts, ttl, now)[1] or {'gone', id} end
return start(id, w, token, max_attempts, ttl, now)
"""

# ARGV: worker, ttl, next_token, max_attempts, limit (how many jobs to take next, 0 = none),
#       n, then n times: id, token, data, content_type; last: retry ('1' after a lost reply:
#       finishing again changes nothing, and the jobs taken are those the lost call took)
# -> {status of each, the jobs taken}
# The images are stored before the next jobs start, so that an identical request queued
# behind one of these is answered from its image.
_FINISH = """
local w, ttl, next_token, max_attempts = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local limit, n, retry = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[#ARGV] == '1'
local now = now_ms()
for i = 0, n - 1 do drop(w, ARGV[7 + 4 * i]) end
use(JOBS_DB)
local results, stored = {}, {}
for i = 0, n - 1 do
  local id, token = ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  local key = job_key(id)
  local rec = redis.call('HMGET', key, 'status', 'token', 'cache_key')
  results[i + 1] = 'stale'
  if rec[1] == 'running' and rec[2] == token then
    redis.call('HSET', key, 'status', 'finished', 'finished_at', now,
               'content_type', ARGV[10 + 4 * i])
    redis.call('EXPIRE', key, ttl)
    stored[#stored + 1] = {id, ARGV[9 + 4 * i], rec[3]}
    results[i + 1] = 'finished'
  elseif rec[1] == 'finished' and rec[2] == token then
    results[i + 1] = 'finished'  -- a retry after a lost reply
  end
end
if #stored > 0 then use(IMAGES_DB) end
for _, image in ipairs(stored) do
  redis.call('SET', 'image:' .. image[1], image[2], 'EX', ttl)
  if image[3] and image[3] ~= '' then
    redis.call('SET', 'cache:' .. image[3], image[1], 'EX', ttl)
  end
end
local taken = {}
if limit > 0 then
  if retry then taken = recover(w, next_token, max_attempts, ttl, now) end
  if #taken == 0 then taken = take(w, next_token, max_attempts, ttl, now, limit) end
end
return {results, taken}
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
_REAP = """
local only, timeout, max_attempts, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local now = now_ms()
use(QUEUE_DB)
local workers = {only}
if only == '' then
  workers = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', tonumber(now) - timeout)
end
local requeued, failed = 0, 0
for _, w in ipairs(workers) do
  use(QUEUE_DB)
  local ids = redis.call('LRANGE', processing(w), 0, -1)
  for _, id in ipairs(ids) do
    use(JOBS_DB)
    local key = job_key(id)
    local rec = redis.call('HMGET', key, 'status', 'attempts', 'worker')
    local back = rec[1] == 'queued'
    if rec[1] == 'running' and rec[3] == w then
      local attempts = tonumber(rec[2]) or 0
      if attempts >= max_attempts then
        fail_record(id, 'the worker stopped responding; gave up after ' .. attempts
                    .. ' attempts', ttl, now)
        failed = failed + 1
      else
        redis.call('HSET', key, 'status', 'queued', 'started_at', '', 'worker', '', 'token', '')
        back = true
      end
    end
    if back then
      use(QUEUE_DB)
      redis.call('RPUSH', WAITING, id)
      requeued = requeued + 1
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
return redis.call('ZADD', WORKERS, now_ms(), ARGV[1])
"""

# ARGV: id, ttl -> 'missing' | 'running' | 'cancelled' | 'deleted'
_CANCEL_OR_DELETE = """
local id = ARGV[1]
use(JOBS_DB)
local key = job_key(id)
local status = redis.call('HGET', key, 'status')
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
redis.call('ZREM', 'jobs:all', id)
use(IMAGES_DB)
redis.call('DEL', 'image:' .. id)
return 'deleted'
"""


def _lua(body: str, taking: bool = True) -> str:
    prelude = (
        _PRELUDE.replace("@QUEUE_DB@", str(QUEUE_DB))
        .replace("@JOBS_DB@", str(JOBS_DB))
        .replace("@IMAGES_DB@", str(IMAGES_DB))
    )
    return prelude + (_TAKING if taking else "") + body


_SOURCES = {
    "enqueue": _lua(_ENQUEUE, taking=False),
    "take": _lua(_TAKE),
    "start": _lua(_START),
    "finish": _lua(_FINISH),
    "fail": _lua(_FAIL),
    "put_back": _lua(_PUT_BACK),
    "reap": _lua(_REAP),
    "heartbeat": _lua(_HEARTBEAT, taking=False),
    "cancel_or_delete": _lua(_CANCEL_OR_DELETE, taking=False),
}


_SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in _SOURCES.items()}


class _Wire(threading.local):
    """This thread's own connection to the queue DB: the queue's hot path.

    A queue call is one round trip, and redis-py's pooled ``execute_command`` doubles its
    cost (about 80 us against 40 us here: pool lock, metrics hooks, argument encoding in
    Python), which was a third of a no-op job. So each thread keeps one connection with
    the pool's settings, made again after a fork or when the pool changes (tests point
    REDIS_URL elsewhere), and hiredis packs the command. Errors behave as through the
    client: the connection's retry policy (reconnecting), then the exception; the policy's
    wrapper is only entered after a first failure, as it costs a few us per call.
    """

    conn: redis.Connection | None = None
    pool: redis.ConnectionPool | None = None
    pid = 0

    def connection(self) -> redis.Connection:
        pool = redis_client(QUEUE_DB).connection_pool
        if self.conn is None or self.pool is not pool or self.pid != os.getpid():
            self.conn = pool.connection_class(**pool.connection_kwargs)
            self.pool, self.pid = pool, os.getpid()
        return self.conn

    def call(self, *args: object, resend: tuple | None = None, retry: bool = True):
        """One command. A lost reply means it may have run: a retry sends ``resend``
        instead when given; ``retry=False`` raises at once."""
        conn = self.connection()
        packed = [hiredis.pack_command(args)]

        def roundtrip():
            conn.send_packed_command(packed)
            return conn.read_response()

        try:
            return roundtrip()
        except (redis.ConnectionError, redis.TimeoutError):
            conn.disconnect()  # a stale socket (Redis restarted): the policy takes over
            if not retry:
                raise
        if resend is not None:
            packed = [hiredis.pack_command(resend)]
        return conn.retry.call_with_retry(roundtrip, lambda _error: conn.disconnect())


_wire = _Wire()


def _run(name: str, *args: object, resend: tuple | None = None):
    """EVALSHA, loading the script once per server (again after a restart without AOF).

    ``resend``: the arguments to send instead if the reply is lost (see ``_run_taking``).
    """
    sha = _SHAS[name]
    again = ("EVALSHA", sha, 0, *resend) if resend is not None else None
    try:
        return _wire.call("EVALSHA", sha, 0, *args, resend=again)
    except redis.exceptions.NoScriptError:
        _wire.call("SCRIPT", "LOAD", _SOURCES[name])
        return _wire.call("EVALSHA", sha, 0, *args, resend=again)


def _run_taking(name: str, *args: object):
    """A script that may take a job, retried on a lost reply without stranding one.

    The lost call may have run and taken a job into this worker's list. A plain retry
    would take a second one and leave the first there, running in nobody's hands and
    unseen by the reaper while this worker heartbeats. So every retry says it is one
    (the last argument), and the script first hands out what the lost call took.
    """
    try:
        return _run(name, *args, "", resend=(*args, "1"))
    except TRANSIENT:
        return retry_transient(_run, name, *args, "1")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """A job this worker is running: ``token`` proves it is still the current attempt."""

    id: str
    kind: str
    params: dict
    token: str
    attempts: int

    @classmethod
    def from_reply(cls, reply: list, token: str) -> Job:
        _, job_id, kind, params, attempts = reply
        return cls(_text(job_id), _text(kind), orjson.loads(params), token, int(attempts))


def _record(raw: dict) -> dict:
    """Decode a job hash: times as epoch ms (None when unset), params as a dict."""
    rec = {_text(k): _text(v) for k, v in raw.items()}
    for field in ("created_at", "started_at", "finished_at"):
        rec[field] = int(rec[field]) if rec.get(field) else None
    rec["attempts"] = int(rec.get("attempts") or 0)
    rec["params"] = orjson.loads(rec.get("params") or "{}")
    rec["error"] = rec.get("error") or None
    for field in ("token", "worker", "cache_key", "content_type"):
        rec[field] = rec.get(field) or None
    return rec


def get_job(job_id: str) -> dict | None:
    if not is_job_id(job_id):
        return None
    raw = redis_client(JOBS_DB).hgetall(JOB_PREFIX + job_id)
    return _record(raw) if raw else None


def list_jobs(
    status: str | None = None, limit: int = 20, cursor: str | None = None
) -> tuple[list[dict], str | None]:
    """Newest first, up to ``limit`` records after ``cursor`` (an id), and the next cursor.

    A status filter reads through the index; past ``LIST_SCAN_BUDGET`` records it returns
    what it found with a cursor to go on from, so one request stays cheap. Index entries
    whose record has expired are dropped as they are met.
    """
    r = redis_client(JOBS_DB)
    upper = f"({cursor}" if cursor else "+"
    out: list[dict] = []
    scanned = 0
    while scanned < LIST_SCAN_BUDGET:
        want = limit + 1 - len(out)
        batch = min(max(want, 50), LIST_SCAN_BUDGET - scanned)
        ids = [_text(i) for i in r.zrevrangebylex(ALL_KEY, upper, "-", 0, batch)]
        if not ids:
            return out, None
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(JOB_PREFIX + job_id)
        gone = []
        for job_id, raw in zip(ids, pipe.execute(), strict=True):
            scanned += 1
            if not raw:
                gone.append(job_id)
                continue
            rec = _record(raw)
            if status is None or rec["status"] == status:
                out.append(rec)
                if len(out) > limit:
                    break
        if gone:
            r.zrem(ALL_KEY, *gone)
        if len(out) > limit:
            return out[:limit], out[limit - 1]["id"]
        upper = f"({ids[-1]}"
    return out, upper[1:]


def get_image(job_id: str) -> bytes | None:
    """The image bytes of a finished job (its content type is in the record)."""
    if not is_job_id(job_id):
        return None
    return redis_client(IMAGES_DB).get(IMAGE_PREFIX + job_id)


def cancel_or_delete(job_id: str) -> str:
    """queued -> 'cancelled'; terminal -> 'deleted' (with its image); or 'running'/'missing'."""
    if not is_job_id(job_id):
        return "missing"
    return _text(_run("cancel_or_delete", job_id, result_ttl()))


def queue_stats() -> dict[str, int]:
    """Waiting jobs, jobs held by workers, and workers heard from within the timeout."""
    r = redis_client(QUEUE_DB)
    seconds, micros = r.time()
    now_ms = seconds * 1000 + micros // 1000
    workers = [_text(w) for w in r.zrange(WORKERS_KEY, 0, -1)]
    pipe = r.pipeline(transaction=False)
    pipe.llen(WAITING_KEY)
    pipe.zcount(WORKERS_KEY, now_ms - int(worker_timeout() * 1000), "+inf")
    for worker in workers:
        pipe.llen(PROCESSING_PREFIX + worker)
    waiting, alive, *held = pipe.execute()
    return {"waiting": int(waiting), "taken": int(sum(held)), "workers": int(alive)}


# --- the queue ---------------------------------------------------------------------------


class Pace:
    """How many jobs a worker takes at once: as many as the recent pace (a moving average of
    handler times) fits into ``BATCH_BUDGET`` s, at most ``most`` (``STOCKS_BATCH_MAX``), and
    one while the pace is unknown. A chart (50 ms and up) is always taken alone; no-op-sized
    jobs share one round trip per batch instead of paying one each.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self.mean: float | None = None

    def observe(self, seconds: float) -> None:
        self.mean = seconds if self.mean is None else 0.8 * self.mean + 0.2 * seconds

    def batch(self) -> int:
        if self.mean is None:
            return 1
        return max(1, min(self.most, int(BATCH_BUDGET / max(self.mean, 1e-6))))


@dataclass
class Outcome:
    """What a finish/fail/put-back did, and the next job when finish took one in the same step."""

    status: str
    next_job: Job | None = None


class JobQueue:
    """The reliable queue: producers ``put``; workers ``get``/``consume`` or ``@worker``."""

    def __init__(self, worker_id: str | None = None):
        self.worker_id = worker_id or new_worker_id()
        self.ttl = result_ttl()
        self.timeout = worker_timeout()
        self.max_attempts = max_attempts()
        self.batch_max = batch_max()
        self._last_reap = 0.0
        self._puts = 0

    @property
    def redis(self) -> redis.Redis:
        # looked up each time so a worker follows reset_clients() after a fork
        return redis_client(QUEUE_DB)

    # producer side

    def put(self, kind: str, params: dict, cache_key: str = "", job_id: str = "") -> str:
        """Record and queue a job in one atomic step; returns its id.

        Idempotent per id: putting an id that exists changes nothing, so a producer (or the
        connection's retry after a lost reply) may send the same put again.
        """
        if job_id and not is_job_id(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        job_id = job_id or new_job_id()
        self._puts += 1
        # now and then, forget index entries far older than any record can live
        prune_below = new_job_id(time.time() - 2 * self.ttl)[:14] if self._puts % 100 == 1 else ""
        _run("enqueue", job_id, kind, orjson.dumps(params), cache_key, self.ttl, prune_below)
        return job_id

    def count(self) -> int:
        """Jobs waiting (not taken yet). Not ``__len__``: an empty queue must stay truthy."""
        return int(self.redis.llen(WAITING_KEY))

    # worker side

    def _take_args(self, token: str) -> list:
        return [self.worker_id, token, self.max_attempts, self.ttl]

    def get(
        self, block: bool = True, timeout: float = 1.0, stop: Callable[[], bool] | None = None
    ) -> Job | None:
        """Take the next runnable job (queued -> running), or None after ``timeout`` seconds.

        The id moves atomically into this worker's processing list (LMOVE/BLMOVE), so it is
        never only in this process's memory.
        """
        token = secrets.token_hex(8)
        taken = _run_taking("take", *self._take_args(token), 1)
        if taken:
            return Job.from_reply(taken[0], token)
        if not block:
            return None
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                job_id = _wire.call(
                    "BLMOVE", WAITING_KEY, PROCESSING_PREFIX + self.worker_id, "RIGHT", "LEFT",
                    min(max(left, 0.01), BLOCK_SLICE), retry=False,
                )  # fmt: skip
            except TRANSIENT:
                # a lost reply may have moved a job into this worker's list: a take told
                # it is a retry starts that one rather than leave it there
                taken = retry_transient(_run, "take", *self._take_args(token), 1, "1")
                if taken:
                    return Job.from_reply(taken[0], token)
                continue
            if job_id is None:
                continue
            if stop is not None and stop():
                self.release_own()  # taken while stopping: straight back to the queue
                return None
            reply = _run_taking("start", job_id, *self._take_args(token))
            if _text(reply[0]) == "started":
                return Job.from_reply(reply, token)
        return None

    def consume(
        self, timeout: float = 1.0, stop: Callable[[], bool] | None = None
    ) -> Iterator[Job]:
        """Jobs as they come; an idle ``timeout`` ends it. The caller must finish each job.

        It heartbeats meanwhile, so if this process dies the reaper puts back the job it
        held. (A bare ``get`` does not: wrap its use in ``heartbeating()``.)
        """
        with self.heartbeating():
            while not (stop and stop()):
                job = self.get(timeout=timeout, stop=stop)
                if job is None:
                    return
                yield job

    def finish(self, job: Job, data: bytes, content_type: str, take_next: bool = False) -> Outcome:
        """running -> finished with the image, if ``job`` is still the current attempt.

        With ``take_next`` the same script also takes the next job (one round trip per job
        when the queue is busy). Connection errors are retried with backoff (about 10 s).
        """
        statuses, taken = self.finish_many([(job, data, content_type)], take=int(take_next))
        return Outcome(statuses[0], taken[0] if taken else None)

    def finish_many(
        self, results: Sequence[tuple[Job, bytes, str]], take: int = 0
    ) -> tuple[list[str], list[Job]]:
        """``finish`` for several jobs in one step, then start up to ``take`` next ones.

        Returns each job's status and the jobs taken, oldest first: fewer when the queue
        runs short, when a job tried before comes up (it is taken alone), or when one is
        identical to a job already taken (it waits for that image). Connection errors are
        retried with backoff (about 10 s).
        """
        token = secrets.token_hex(8) if take else ""
        args: list = [self.worker_id, self.ttl, token, self.max_attempts, take, len(results)]
        for job, data, content_type in results:
            args += [job.id, job.token, data, content_type]
        statuses, taken = _run_taking("finish", *args)
        return [_text(s) for s in statuses], [Job.from_reply(t, token) for t in taken]

    def fail(self, job: Job, error: str) -> Outcome:
        status = _run("fail", job.id, self.worker_id, job.token, self.ttl, error)
        return Outcome(_text(status))

    def put_back(self, job: Job, refund: bool = True) -> Outcome:
        """running -> queued at the front of the line (shutdown: the attempt is refunded)."""
        status = _run("put_back", job.id, self.worker_id, job.token, int(refund))
        return Outcome(_text(status))

    def heartbeat(self) -> None:
        _run("heartbeat", self.worker_id, "")

    def unregister(self) -> None:
        self.release_own()
        _run("heartbeat", self.worker_id, "1")

    def reap(self) -> tuple[int, int]:
        """Put back (or fail) the jobs of workers silent for the timeout: (requeued, failed)."""
        requeued, failed = _run("reap", "", int(self.timeout * 1000), self.max_attempts, self.ttl)
        if requeued or failed:
            log.warning("reaper: %s job(s) put back, %s failed", requeued, failed)
        return int(requeued), int(failed)

    def release_own(self) -> tuple[int, int]:
        """Put back what this worker holds but is not running (after an outage or a stop)."""
        requeued, failed = _run("reap", self.worker_id, 0, self.max_attempts, self.ttl)
        return int(requeued), int(failed)

    # running jobs

    @contextmanager
    def heartbeating(self) -> Iterator[None]:
        """A thread that heartbeats and runs the reaper while the block runs."""
        stop = threading.Event()
        interval = min(max(self.timeout / 5, 0.1), 5.0)

        def beat() -> None:
            while True:
                try:
                    self.heartbeat()
                    now = time.monotonic()
                    if now - self._last_reap >= self.timeout / 2:
                        self._last_reap = now
                        self.reap()
                except Exception as e:  # the thread must outlive any error
                    log.warning("heartbeat failed: %s", e)
                if stop.wait(interval):
                    return

        try:
            self.heartbeat()  # registered before the first take
        except redis.RedisError as e:
            log.warning("heartbeat failed: %s", e)
        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def process(
        self,
        job: Job,
        handler: Callable[[str, dict], tuple[bytes, str]],
        deterministic: tuple[type[BaseException], ...] = (JobError,),
    ) -> tuple[bytes, str] | None:
        """Run ``handler(kind, params)`` for a job: its result to finish with, or None when
        the job has failed (recorded here).

        Deterministic errors fail the job at once; a Redis blip inside the handler is retried
        with backoff; ``Interrupted`` goes up to the caller, who puts the job back.
        """
        try:
            return call_with_retry(handler, job.kind, job.params)
        except Interrupted:
            raise
        except deterministic as e:
            retry_transient(self.fail, job, str(e) or type(e).__name__)
        except TRANSIENT:
            raise  # the run loop backs off; release_own() puts the job back later
        except Exception as e:
            log.exception("job %s (%s) crashed", job.id, job.kind)
            retry_transient(self.fail, job, f"internal error while drawing ({type(e).__name__})")
        return None

    def _record(self, done: list[tuple[Job, bytes, str]], take: int = 0) -> list[Job]:
        """Finish what ``done`` holds (and empty it); maybe take the next jobs."""
        statuses, taken = self.finish_many(done, take)  # retries by itself
        for (job, _, _), status in zip(done, statuses, strict=True):
            if status != "finished":
                log.warning("job %s was %s elsewhere; result dropped", job.id, status)
        done.clear()
        return taken

    def run(
        self,
        handler: Callable[[str, dict], tuple[bytes, str]],
        stop: Callable[[], bool] = lambda: False,
        deterministic: tuple[type[BaseException], ...] = (JobError,),
        idle_timeout: float = 1.0,
    ) -> None:
        """The worker loop: take, run, finish, until ``stop()``; survives Redis restarts.

        While the queue is busy, finishing and taking the next job(s) is one round trip.
        Jobs much shorter than that round trip go in batches (``Pace``): their results are
        recorded together, each at most about ``BATCH_BUDGET`` s (plus one job) late.
        """
        backoff, pace = Backoff(), Pace(self.batch_max)
        held: deque[Job] = deque()  # started for this worker, not run yet
        done: list[tuple[Job, bytes, str]] = []  # run, not recorded yet
        done_since = 0.0
        try:
            with self.heartbeating():
                while not stop():
                    try:
                        if not held:
                            if done:  # record them and take the next ones in one step
                                held.extend(self._record(done, pace.batch()))
                            else:
                                self.heartbeat()
                                self.release_own()
                                job = self.get(timeout=idle_timeout, stop=stop)
                                if job is not None:
                                    held.append(job)
                            backoff.reset()
                            continue
                        job = held[0]
                        started = time.perf_counter()
                        result = self.process(job, handler, deterministic)
                        ended = time.perf_counter()
                        held.popleft()
                        pace.observe(ended - started)
                        if result is not None:
                            if not done:
                                done_since = ended
                            done.append((job, *result))
                        if done and held and ended - done_since > BATCH_BUDGET:
                            self._record(done)  # the rest of the batch is slower than paced
                        backoff.reset()
                    except redis.RedisError as e:
                        # down, restarting, out of memory...: whatever this worker holds is
                        # put back by release_own() once Redis answers again
                        held.clear()
                        done.clear()
                        log.warning("redis error (%s); retrying", e)
                        backoff.sleep()
        finally:
            # after the heartbeat thread has stopped, so that no late beat registers the
            # worker again once it has gone
            try:
                if done:
                    self._record(done)
                for job in reversed(held):  # not run (or interrupted): back to the front,
                    retry_transient(self.put_back, job, refund=True)  # in their order
                self.unregister()
            except redis.RedisError as e:
                log.warning("could not record, put back or unregister: %s", e)

    def worker(self, handler=None, **options):
        """HotQueue's decorator: ``@queue.worker`` makes ``handler`` a loop, ``fn()`` runs it."""

        def decorate(fn):
            @functools.wraps(fn)
            def loop(stop: Callable[[], bool] = lambda: False) -> None:
                self.run(fn, stop=stop, **options)

            return loop

        return decorate(handler) if handler is not None else decorate


# --- retries -----------------------------------------------------------------------------


class Backoff:
    """Exponential backoff with jitter: 0.1 s doubling up to ``cap`` seconds."""

    def __init__(self, base: float = 0.1, cap: float = 5.0):
        self.base, self.cap, self.n = base, cap, 0

    def reset(self) -> None:
        self.n = 0

    def sleep(self) -> None:
        delay = min(self.cap, self.base * 2**self.n)
        self.n += 1
        time.sleep(delay * (0.5 + secrets.randbelow(1000) / 2000))


def retry_transient(fn, *args, tries: int = 8, **kwargs):
    """Call ``fn``, retrying Redis connection errors with backoff (up to about 10 s)."""
    backoff = Backoff()
    for attempt in range(tries):
        try:
            return fn(*args, **kwargs)
        except TRANSIENT:
            if attempt == tries - 1:
                raise
            backoff.sleep()
    raise AssertionError("unreachable")


def call_with_retry(handler, kind: str, params: dict):
    """The handler, drawn again if its Redis reads hit a blip (a restart, a failover)."""
    return retry_transient(handler, kind, params)
