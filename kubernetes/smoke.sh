#!/bin/sh
# Smoke test of a running stocks system, for sh and curl alone (BusyBox is enough):
#   sh kubernetes/smoke.sh http://stocks-api        # from the debug pod: `make smoke`
#   sh kubernetes/smoke.sh http://127.0.0.1:5000    # against `make run`
# Each step prints "ok" or "FAIL"; the exit status is 0 only when every step passed.
# The first ticker listed is the one used (SMOKE_SYMBOL overrides); prices must be loaded.
set -u

BASE=${1:?usage: smoke.sh BASE_URL}
BASE=${BASE%/}
POLL_SECONDS=${SMOKE_POLL_SECONDS:-60}
TMP=$(mktemp -d 2>/dev/null || echo "/tmp/smoke.$$")
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
FAILED=0
STEPS=0

ok() { STEPS=$((STEPS + 1)); echo "ok   $STEPS - $1"; }
fail() { STEPS=$((STEPS + 1)); FAILED=$((FAILED + 1)); echo "FAIL $STEPS - $1"; }

# get PATH EXPECTED_STATUS [CURL ARGS...]: body into $TMP/body, status into $STATUS
get() {
    path=$1
    shift
    # stdin from /dev/null: under `sh -s` (make smoke) stdin is this script
    STATUS=$(curl -sS -o "$TMP/body" -w '%{http_code}' --max-time 20 "$@" "$BASE$path" \
        </dev/null 2>"$TMP/err")
    [ -n "$STATUS" ] || STATUS=000
}

# check NAME PATH EXPECTED_STATUS [TEXT THE BODY MUST CONTAIN]
check() {
    name=$1 path=$2 want=$3 text=${4:-}
    get "$path"
    if [ "$STATUS" != "$want" ]; then
        fail "$name: GET $path answered $STATUS, expected $want $(head -c 200 "$TMP/body" "$TMP/err" 2>/dev/null)"
    elif [ -n "$text" ] && ! grep -q "$text" "$TMP/body"; then
        fail "$name: GET $path has no $text in $(head -c 200 "$TMP/body")"
    else
        ok "$name ($STATUS)"
    fi
}

# the value of a string field in a JSON body (the first one): field FILE NAME
field() {
    grep -o "\"$2\": *\"[^\"]*\"" "$1" | head -n 1 | sed 's/.*: *"\([^"]*\)"$/\1/'
}

echo "smoke test of $BASE"
check health /health 200 '"status"'
check ready /ready 200

get /tickers
SYMBOL=${SMOKE_SYMBOL:-$(field "$TMP/body" symbol)}
if [ "$STATUS" = 200 ] && [ -n "$SYMBOL" ]; then
    ok "tickers list ($SYMBOL first)"
else
    fail "tickers list: GET /tickers answered $STATUS with no symbol"
    SYMBOL=AAPL
fi

check ticker "/tickers/$SYMBOL" 200 '"last_date"'
LAST=$(field "$TMP/body" last_date)
FIRST=$(field "$TMP/body" first_date)
check "price range $FIRST..$LAST" "/tickers/$SYMBOL/prices?start=$FIRST&end=$LAST" 200 '"close"'
check stats "/tickers/$SYMBOL/stats?period=1y" 200 '"annualized_volatility"'

# A chart job: 202 with an id, polled until finished, its image a PNG.
get /jobs -H 'Content-Type: application/json' \
    -d "{\"kind\": \"line\", \"symbols\": [\"$SYMBOL\"], \"options\": {\"width\": 640, \"height\": 400}}"
JOB=$(field "$TMP/body" id)
if [ "$STATUS" = 202 ] && [ -n "$JOB" ]; then
    ok "chart job queued ($JOB)"
    JOB_STATUS=queued
    waited=0
    while [ "$waited" -lt "$POLL_SECONDS" ]; do
        get "/jobs/$JOB"
        JOB_STATUS=$(field "$TMP/body" status)
        case "$JOB_STATUS" in finished | failed | cancelled) break ;; esac
        sleep 1
        waited=$((waited + 1))
    done
    if [ "$JOB_STATUS" = finished ]; then
        ok "chart job finished (${waited}s)"
        get "/jobs/$JOB/image"
        cp "$TMP/body" "$TMP/chart.png"
        SIGNATURE=$(head -c 8 "$TMP/chart.png" | od -An -tx1 | tr -d ' \n')
        if [ "$STATUS" = 200 ] && [ "$SIGNATURE" = 89504e470d0a1a0a ]; then
            ok "chart image is a PNG ($(wc -c <"$TMP/chart.png" | tr -d ' ') bytes)"
        else
            fail "chart image: GET /jobs/$JOB/image answered $STATUS, signature ${SIGNATURE:-none}"
        fi
    else
        fail "chart job: $JOB_STATUS after ${waited}s ($(head -c 200 "$TMP/body"))"
        fail "chart image: no image of an unfinished job"
    fi
else
    fail "chart job: POST /jobs answered $STATUS $(head -c 200 "$TMP/body")"
fi

get "/tickers/$SYMBOL/prices?start=not-a-date"
case "$STATUS" in
4??) ok "bad request answered $STATUS" ;;
*) fail "bad request: GET /tickers/$SYMBOL/prices?start=not-a-date answered $STATUS, expected 4xx" ;;
esac

echo "$((STEPS - FAILED)) passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
