"""The Redis layout: every logical DB number and key name, spelled here and nowhere else.

The Lua scripts (``stocks.scripts``) get these names from this module too, so grepping a
name finds every place that uses it.

DB 0 (stocks): see ``stocks.storage`` for the bar format
    stocks:symbols          SET   canonical symbols that have data (BRK.B, ^GSPC, ...)
    stocks:meta:{SYM}       HASH  name, sector, first_date, last_date, rows, source,
                                  loaded_at, version (a new random token on every change)
    stocks:bars:{SYM}       HASH  field "YYYY" -> that year's bars as packed records
    stocks:lock:{SYM}       STR   held while one bar of SYM is rewritten (redis-py Lock)
DB 1 (queue)
    queue:waiting           LIST  job ids; producers LPUSH, workers take from the right
    queue:processing:{W}    LIST  ids worker W has taken and not yet finished
    queue:workers           ZSET  worker id -> last heartbeat (Redis server time, ms)
    LIMITS:LIMITER/ratelimit/...  STR  Flask-Limiter's counters for ``POST /jobs``
DB 2 (jobs)
    job:{ID}                HASH  id, kind, params (JSON), status, created_at, started_at,
                                  finished_at (epoch ms; absent or "" when unset),
                                  attempts, error, token, worker, cache_key, content_type
    jobs:all                ZSET  every id, score 0: ids start with the creation time in
                                  hex, so lexicographic order is age (newest = highest)
    jobs:owner:{OWNER}      ZSET  the ids of one owner's jobs, likewise
DB 3 (images)
    image:{ID}              STR   the image bytes (content type in the record)
    cache:{SHA}             STR   id of a job whose image answers that request
    images:bytes            STR   bytes of the images counted below (the image budget)
    images:order            ZSET  image id -> when it was stored (ms): oldest go first
    images:sizes            HASH  image id -> its size in bytes
"""

from __future__ import annotations

STOCKS_DB = 0
QUEUE_DB = 1
JOBS_DB = 2
IMAGES_DB = 3

# DB 0
SYMBOLS_KEY = "stocks:symbols"
META_PREFIX = "stocks:meta:"
BARS_PREFIX = "stocks:bars:"
LOCK_PREFIX = "stocks:lock:"

# DB 1
WAITING_KEY = "queue:waiting"
PROCESSING_PREFIX = "queue:processing:"
WORKERS_KEY = "queue:workers"
RATE_LIMIT_PREFIX = "ratelimit"  # Flask-Limiter's key_prefix; it and limits add the rest

# DB 2
JOB_PREFIX = "job:"
ALL_JOBS_KEY = "jobs:all"
OWNER_JOBS_PREFIX = "jobs:owner:"

# DB 3
IMAGE_PREFIX = "image:"
CACHE_PREFIX = "cache:"
IMAGE_BYTES_KEY = "images:bytes"
IMAGE_ORDER_KEY = "images:order"
IMAGE_SIZES_KEY = "images:sizes"
IMAGE_BUDGET_KEY = "images:budget"  # the budget the workers keep (each heartbeat says it)


def meta_key(symbol: str) -> str:
    return META_PREFIX + symbol


def bars_key(symbol: str) -> str:
    return BARS_PREFIX + symbol


def lock_key(symbol: str) -> str:
    return LOCK_PREFIX + symbol


def processing_key(worker_id: str) -> str:
    return PROCESSING_PREFIX + worker_id


def job_key(job_id: str) -> str:
    return JOB_PREFIX + job_id


def owner_jobs_key(owner: str) -> str:
    return OWNER_JOBS_PREFIX + owner


def image_key(job_id: str) -> str:
    return IMAGE_PREFIX + job_id
