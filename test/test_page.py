"""The web page at ``/``, in a real browser against a real server, worker and Redis.

The browser is Debian's chromium driven by Playwright (never a browser download);
``make test`` installs it when missing and it can (root with apt), else the browser tests
skip and say why. The content negotiation and asset checks need no browser. Screenshots
go to test/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
import redis
from conftest import SP500_DIR, business_days, random_bars
from test_api_server import start_server, stop_server

from stocks import storage
from stocks.keys import IMAGES_DB, image_key
from stocks.redis_server import RedisServer, env_with_redis

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).with_name("artifacts")
TICKERS = "AAPL,MSFT,JPM,XOM"
SHORT_TICKER = "KO"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
WAIT_MS = 30_000


# --- the stack: Redis, loaded prices, `stocks serve`, `stocks worker` -------------------


@dataclass
class Stack:
    port: int
    base: str
    redis_url: str

    def get(self, path: str, accept: str | None = "application/json"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Accept": accept} if accept else {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def json(self, path: str) -> dict:
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)


def load_prices(redis_url: str) -> None:
    """Real CSVs of a few tickers when ../shared is there, the same symbols synthetic else."""
    if SP500_DIR.is_dir():
        source = ["--source", "csv", "--path", str(SP500_DIR)]
    else:
        source = ["--source", "synthetic"]
    cmd = [sys.executable, "-m", "stocks.cli", "load", *source, "--tickers", TICKERS]
    # and one ticker whose short history ends before the others begin: its charts fail
    short = [sys.executable, "-m", "stocks.cli", "load", "--source", "synthetic"]
    short += ["--tickers", SHORT_TICKER, "--start", "2012-01-02", "--end", "2012-06-29"]
    for args in (cmd, short):
        done = subprocess.run(args, env=env_with_redis(redis_url), capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("page")
    db_server = RedisServer(workdir / "redis", appendonly=False).start()
    procs: list[subprocess.Popen] = []
    try:
        load_prices(db_server.url)
        # a test clicks faster than a person: fair use is tested in test_hostile.py
        port, server = start_server(db_server.url, STOCKS_COMPUTE_RATE="100000/second")
        procs.append(server)
        with open(workdir / "worker.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "stocks.cli", "worker"],
                    env=env_with_redis(db_server.url),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        yield Stack(port, f"http://127.0.0.1:{port}", db_server.url)
    finally:
        for proc in procs:
            stop_server(proc)
        db_server.stop()


# --- the browser ---------------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "playwright is not installed (make install brings it)"
    if not os.access(CHROMIUM, os.X_OK):
        return (
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root "
            "with apt; else `apt-get install chromium`"
        )
    return None


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Tab:
    page: object
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def open_page(browser, stack):
    """open_page(width, height) -> a Tab on `/` in a fresh profile, recording console errors."""
    contexts = []

    def open_(width: int = 1280, height: int = 900) -> Tab:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        tab = Tab(context.new_page())
        tab.page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
        tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
        tab.page.goto(stack.base + "/")
        tab.page.wait_for_selector("#results button")
        return tab

    yield open_
    for context in contexts:
        context.close()


def screenshot(tab: Tab, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# --- what the page shows, as the API's numbers would be written ----------------------------


def price(v: float | None) -> str:
    return "—" if v is None else f"{v:,.2f}"


def signed(v: float) -> str:
    return f"{v:+,.2f}" if round(v, 2) != 0 else f"{0:.2f}"


def percent(fraction: float | None, sign: bool = False) -> str:
    if fraction is None:
        return "—"
    return (signed(fraction * 100) if sign else f"{fraction * 100:,.2f}") + "%"


def text(tab: Tab, selector: str) -> str:
    return tab.page.locator(selector).inner_text().strip()


def pick(tab: Tab, search: str, symbol: str) -> None:
    """Type in the search box and open the first result with the keyboard alone."""
    page = tab.page
    page.locator("#search").fill(search)
    page.wait_for_function(
        "s => document.querySelector('#results button')?.dataset.symbol === s", arg=symbol
    )
    page.locator("#search").press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.symbol") == symbol
    page.keyboard.press("Enter")
    page.wait_for_function("s => document.querySelector('#t-symbol').textContent === s", arg=symbol)


def choose_range(tab: Tab, label: str) -> None:
    tab.page.get_by_role("button", name=label, exact=True).click()
    tab.page.wait_for_selector(f".quick button[aria-pressed=true]:text-is('{label}')")
    tab.page.wait_for_selector("#figures[aria-busy=false]")


def draw(tab: Tab) -> dict:
    """Ask for the chart in the form; wait until its image is loaded; its job id and size."""
    page = tab.page
    before = page.locator("#history .card").count()
    page.get_by_role("button", name="Draw chart").click()
    page.wait_for_function(
        "n => document.querySelectorAll('#history .card').length > n", arg=before
    )
    card = page.locator("#history .card").first
    page.wait_for_function(
        """card => ['finished', 'failed', 'cancelled', 'gone'].includes(card.dataset.status)
                && (card.dataset.status !== 'finished'
                    || (card.querySelector('img').complete
                        && card.querySelector('img').naturalWidth > 0))""",
        arg=card.element_handle(),
    )
    return card.evaluate(
        """card => ({id: card.dataset.jobId, status: card.dataset.status,
                     message: card.querySelector('.card-message').textContent,
                     step: card.querySelector('.steps [aria-current=step]')?.textContent,
                     width: card.querySelector('img').naturalWidth,
                     height: card.querySelector('img').naturalHeight})"""
    )


# --- tests -------------------------------------------------------------------------------


def test_root_is_json_for_scripts_and_the_page_for_browsers(stack):
    for accept in ("*/*", "application/json", None, "application/json, text/html;q=0.9"):
        status, headers, body = stack.get("/", accept)
        assert status == 200 and headers["Content-Type"] == "application/json", accept
        assert json.loads(body)["name"] == "Stocks API"
        assert "Accept" in headers["Vary"]
    status, headers, body = stack.get("/", BROWSER_ACCEPT)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "Accept" in headers["Vary"]
    html = body.decode()
    assets = re.findall(r'(?:src|href)="(/ui/[^"]+)"', html)
    assert {"/ui/app.js", "/ui/style.css", "/ui/favicon.svg"} <= set(assets)
    types = {".js": "javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in assets:
        status, headers, asset = stack.get(path, "*/*")
        assert status == 200 and types[Path(path).suffix] in headers["Content-Type"], path
        # every asset local: nothing is fetched from another origin
        assert not re.search(rb"(src|href|url)\(?=?[\"']?(https?:)?//", asset), path
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_find_figures_bars_csv_and_a_candlestick_chart(open_page, stack):
    tab = open_page()
    page = tab.page
    assert text(tab, "#data-summary").startswith("5 tickers")
    pick(tab, "apple", "AAPL")
    choose_range(tab, "1Y")

    stats = stack.json("/tickers/AAPL/stats?period=1y")
    change = stack.json(f"/tickers/AAPL/change?period=1d&end={stats['end']}")
    assert text(tab, "#f-range") == f"{stats['start']} to {stats['end']}"
    assert text(tab, "#f-last") == price(stats["last_close"])
    assert text(tab, "#f-change") == signed(change["change"])
    assert text(tab, "#f-change-pct") == signed(change["change_pct"]) + "%"
    assert text(tab, "#f-change-date") == f"since {change['from_date']}"
    assert text(tab, "#f-return") == percent(stats["return"], sign=True)
    assert text(tab, "#f-vol") == percent(stats["annualized_volatility"])
    assert text(tab, "#f-dd") == percent(stats["max_drawdown"])
    assert page.locator("#start").input_value() == stats["start"]

    bars = stack.json(f"/tickers/AAPL/prices?start={stats['start']}&end={stats['end']}")["prices"]
    rows = page.locator("#bars tbody tr")
    assert rows.count() == 20
    newest = rows.first.locator("th, td").all_inner_texts()
    last = bars[-1]
    assert newest == [last["date"], *(price(last[k]) for k in ("open", "high", "low", "close"))] + [
        f"{last['volume']:,}"
    ]

    href = page.locator("#csv-link").get_attribute("href")
    status, headers, body = stack.get(href, "*/*")
    lines = body.decode().splitlines()
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert lines[0].startswith("date,open,high,low,close")
    assert len(lines) == 1 + len(bars) and lines[1].startswith(stats["start"] + ",")

    first = draw(tab)
    assert first["status"] == "finished" and first["step"] == "Finished", first
    assert (first["width"], first["height"]) == (1200, 700)
    job = stack.json(f"/jobs/{first['id']}")
    assert job["kind"] == "candlestick" and job["params"]["symbols"] == ["AAPL"]
    assert (job["params"]["start"], job["params"]["end"]) == (stats["start"], stats["end"])
    assert job["params"]["options"]["moving_averages"] == [20, 50]

    again = draw(tab)  # the identical request: the worker copies the stored image
    assert again["status"] == "finished" and again["id"] != first["id"]
    assert "identical chart was reused" in again["message"]

    kept = page.evaluate("JSON.parse(localStorage.getItem('stocks.charts.v1')).map(e => e.id)")
    assert kept == [again["id"], first["id"]]
    page.reload()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history .card img')]"
        ".filter(i => i.complete && i.naturalWidth === 1200).length === 2"
    )
    # the last ticker is shown again
    page.wait_for_function("() => document.querySelector('#t-symbol').textContent === 'AAPL'")
    card = page.locator("#history .card").first
    assert card.locator("a.download").get_attribute("download") == "AAPL-candlestick.png"
    status, headers, _ = stack.get(card.locator("a.open").get_attribute("href"), "*/*")
    assert status == 200 and headers["Content-Type"] == "image/png"

    screenshot(tab, "page-desktop.png")
    assert tab.errors == []


def test_phone_width_sector_filter_other_kinds_and_plain_errors(open_page, stack):
    tab = open_page(390, 844)
    page = tab.page
    page.locator("#sector").select_option("Information Technology")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results button')]"
        ".map(b => b.dataset.symbol).join() === 'AAPL,MSFT'"
    )
    pick(tab, "micro", "MSFT")
    page.locator("#start").fill("2017-07-01")  # a weekend: no trading day in it
    page.locator("#end").fill("2017-07-02")
    page.get_by_role("button", name="Show range").click()
    page.wait_for_function("() => document.querySelector('#range-error').textContent")
    assert text(tab, "#range-error") == "No trading days with a close in the range."
    choose_range(tab, "6M")
    assert text(tab, "#range-error") == ""

    page.get_by_label("Compare tickers").check()
    page.get_by_label("Other symbols").fill("ZZZZ")
    page.get_by_role("button", name="Draw chart").click()
    assert text(tab, "#chart-error") == "There is no ticker ZZZZ."
    page.get_by_label("Other symbols").fill("aapl, jpm")
    compared = draw(tab)
    assert compared["status"] == "finished" and compared["width"] == 1200
    assert stack.json(f"/jobs/{compared['id']}")["params"]["symbols"] == ["MSFT", "AAPL", "JPM"]

    page.get_by_label("Line").check()
    page.get_by_label("Other symbols").fill(SHORT_TICKER)
    failed = draw(tab)
    assert failed["status"] == "failed" and failed["step"] == "Failed", failed
    reason = f"The chart could not be drawn: no prices for {SHORT_TICKER} between"
    assert failed["message"].startswith(reason), failed

    page.get_by_label("Against the S&P 500").check()
    page.get_by_label("Image format").select_option("svg")
    benchmark = draw(tab)
    assert benchmark["status"] == "finished" and benchmark["width"] > 0
    # ^GSPC is not loaded here: the card says what was drawn, as the form's note does
    assert "equal-weight index" in text(tab, "#benchmark-note")
    title = text(tab, "#history .card:first-child .card-title")
    assert title.startswith("Against an equal-weight index · MSFT · "), title

    page.get_by_label("Candlestick").check()
    page.get_by_label("Moving averages (days, up to 3)").fill("1")
    page.get_by_role("button", name="Draw chart").click()
    assert "from 2 to 500" in text(tab, "#chart-error")

    kept = page.evaluate("JSON.parse(localStorage.getItem('stocks.charts.v1')).map(e => e.id)")
    assert kept == [benchmark["id"], failed["id"], compared["id"]]
    page.get_by_role("button", name=re.compile(r"^Remove Compare")).click()
    assert page.locator("#history .card").count() == 2
    kept = page.evaluate("JSON.parse(localStorage.getItem('stocks.charts.v1')).map(e => e.id)")
    assert kept == [benchmark["id"], failed["id"]]

    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input, select')]
            .filter(el => !el.closest('[hidden]') && !el.labels.length
                          && !el.getAttribute('aria-label'))
            .map(el => el.id || el.name)"""
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390, "no sideways scroll"
    screenshot(tab, "page-phone.png")
    # Chrome logs every 4xx answer; the weekend range above asked for exactly one.
    assert [e.lower() for e in tab.errors] == [  # the reason phrase is the server's to spell
        "failed to load resource: the server responded with a status of 422 (unprocessable entity)"
    ]


def test_names_from_the_data_are_shown_as_text_never_run(open_page, stack):
    bars = random_bars(business_days("2017-01-02", "2017-03-31"), start_price=15)
    name = '<img src=x onerror="document.title=1">Evil & Co.'
    meta = {"name": name, "sector": "<b>Hacks</b>", "source": "csv"}
    storage.replace_series(redis.Redis.from_url(stack.redis_url), "EVIL", bars, meta)

    tab = open_page()
    page = tab.page
    pick(tab, "evil", "EVIL")
    assert page.locator("#results button .name").first.inner_text() == name
    assert text(tab, "#t-name") == name
    assert page.locator("#sector option", has_text="<b>Hacks</b>").count() == 1
    assert page.locator("main img").count() == 0 and page.locator("main b").count() == 0
    assert page.title() == "EVIL · Stocks"
    assert tab.errors == []


def test_a_chart_the_server_no_longer_keeps_is_said_so_and_forgotten(open_page):
    tab = open_page()
    page = tab.page
    forgotten = {"id": "0" * 28, "kind": "line", "symbols": ["AAPL"], "start": None, "end": None}
    page.evaluate(
        "entry => localStorage.setItem('stocks.charts.v1', JSON.stringify([entry]))", forgotten
    )
    page.reload()
    page.wait_for_selector("#history .card[data-status=gone]")
    assert text(tab, "#history .card-message") == (
        "The server no longer keeps this chart: charts are kept for a limited time."
    )
    assert page.evaluate("localStorage.getItem('stocks.charts.v1')") == "[]"
    assert [e.lower() for e in tab.errors] == [
        "failed to load resource: the server responded with a status of 404 (not found)"
    ]


def test_dates_typed_while_a_range_loads_are_kept(open_page):
    """The answer of the range a ticker opens with may come after the user typed From/To."""
    tab = open_page()
    page = tab.page
    held = []

    def hold(route) -> None:  # every /stats answer waits until released
        held.append(route)

    page.route("**/stats*", hold)
    page.locator("#search").fill("jpm")
    page.wait_for_function("() => document.querySelector('#results button')?.dataset.symbol")
    page.locator("#results button").first.click()
    page.wait_for_function("() => document.querySelector('#t-symbol').textContent === 'JPM'")
    page.wait_for_function("() => document.querySelector('#figures').ariaBusy === 'true'")
    page.locator("#start").fill("2016-03-01")
    page.locator("#end").fill("2016-03-31")
    for _ in range(500):  # the held request reaches the route handler while Playwright waits
        if held:
            break
        page.wait_for_timeout(10)
    assert len(held) == 1
    held[0].continue_()  # the 1-year range of the opening answers now
    page.wait_for_selector("#figures[aria-busy=false]")
    page.unroute("**/stats*")
    assert page.locator("#start").input_value() == "2016-03-01"
    assert page.locator("#end").input_value() == "2016-03-31"

    page.get_by_role("button", name="Show range").click()
    page.wait_for_function(
        "() => document.querySelector('#f-range').textContent.startsWith('2016-03-01')"
    )
    assert text(tab, "#f-range") == "2016-03-01 to 2016-03-31"
    assert tab.errors == []


# --- transient errors, search by dashed symbol, dropped images, bad addresses ---------------


def status_errors(tab: Tab) -> list[int]:
    """The HTTP statuses of the failed loads Chrome logged; any other error is kept as text."""
    found = []
    for error in tab.errors:
        m = re.fullmatch(r"Failed to load resource: .*status of (\d+) .*", error)
        found.append(int(m[1]) if m else error)
    return found


def card_state(tab: Tab) -> dict:
    return tab.page.locator("#history .card").first.evaluate(
        """card => ({id: card.dataset.jobId, status: card.dataset.status,
                     title: card.querySelector('.card-title').textContent,
                     message: card.querySelector('.card-message').textContent,
                     width: card.querySelector('img').naturalWidth})"""
    )


BUSY = {  # the API's answer while Redis stalls
    "error": {
        "status": 503,
        "code": "redis_unavailable",
        "message": "the data store does not answer",
    }
}
FINISHED_WITH_IMAGE = """() => {
    const card = document.querySelector('#history .card');
    const img = card && card.querySelector('img');
    return card.dataset.status === 'finished' && img.complete && img.naturalWidth > 0;
}"""


def test_a_card_keeps_polling_through_a_busy_server(open_page):
    """A 503 (Redis stalled) while polling is transient: the card waits Retry-After, says it
    is trying again, and ends with the finished chart; so does a kept card on reload."""
    tab = open_page()
    page = tab.page
    polls: list[tuple[float, int]] = []  # (monotonic time, status answered)
    busy = {"left": 2}

    def flaky(route) -> None:
        if route.request.method == "GET" and busy["left"] > 0:
            busy["left"] -= 1
            polls.append((time.monotonic(), 503))
            route.fulfill(status=503, headers={"Retry-After": "1"}, json=BUSY)
        else:
            polls.append((time.monotonic(), 0))
            route.continue_()

    page.route("**/jobs/*", flaky)  # a job's status, not its image nor POST /jobs
    pick(tab, "jpm", "JPM")
    page.get_by_label("Line").check()
    page.get_by_role("button", name="Draw chart").click()
    page.wait_for_function(
        "() => /trying again in 1 s/i.test("
        "document.querySelector('#history .card .card-message')?.textContent)"
    )
    page.wait_for_function(FINISHED_WITH_IMAGE)
    card = card_state(tab)
    assert card["message"].startswith("Ready in"), card
    assert [s for _, s in polls[:3]] == [503, 503, 0]
    assert polls[1][0] - polls[0][0] >= 0.9 and polls[2][0] - polls[1][0] >= 0.9, polls

    # after a reload the kept card's first poll meets the stall too, and then its image
    busy["left"] = 1
    image_busy = {"left": 1}

    def flaky_image(route) -> None:
        if image_busy["left"] > 0:
            image_busy["left"] -= 1
            route.fulfill(status=503, headers={"Retry-After": "1"}, json=BUSY)
        else:
            route.continue_()

    page.route("**/jobs/*/image", flaky_image)  # routing also keeps the image out of the cache
    page.reload()
    page.wait_for_selector("#history .card")
    page.wait_for_function(
        "() => /image did not load.*trying again/i.test("
        "document.querySelector('#history .card .card-message').textContent)"
    )
    page.wait_for_function(FINISHED_WITH_IMAGE)
    kept = card_state(tab)
    assert kept["id"] == card["id"] and kept["message"] == card["message"], kept
    page.unroute("**/jobs/*")
    page.unroute("**/jobs/*/image")
    assert status_errors(tab) == [503, 503, 503, 503]


def test_search_finds_a_dotted_symbol_typed_with_a_dash_as_the_api_does(open_page, stack):
    bars = random_bars(business_days("2016-01-04", "2017-12-29"), seed=7, start_price=150)
    meta = {"name": "Berkshire Hathaway", "sector": "Financials", "source": "csv"}
    storage.replace_series(redis.Redis.from_url(stack.redis_url), "BRK.B", bars, meta)

    tab = open_page()
    page = tab.page
    for typed in ("BRK-B", "brk.b", "brk-", "Brk", "b", "hat", "co", "  berkshire   hath "):
        page.locator("#search").fill(typed)
        shown = page.wait_for_function(
            """typed => document.querySelector('#search').value === typed
                && document.querySelector('#result-count').textContent
                && [...document.querySelectorAll('#results button')].map(b => b.dataset.symbol)""",
            arg=typed,
        ).json_value()
        found = [t["symbol"] for t in stack.json(f"/tickers?{urlencode({'q': typed})}")["tickers"]]
        assert shown == found, typed
    pick(tab, "BRK-B", "BRK.B")
    assert text(tab, "#t-name") == "Berkshire Hathaway"
    assert tab.errors == []


def test_a_chart_whose_image_was_dropped_can_be_drawn_again(open_page, stack):
    tab = open_page()
    page = tab.page
    error = {
        "status": 410,
        "code": "image_dropped",
        "job_status": "finished",
        "message": (
            "the image was dropped to keep chart storage within its budget; "
            "post the same request again to draw it"
        ),
    }
    page.route("**/jobs/*/image", lambda route: route.fulfill(status=410, json={"error": error}))
    pick(tab, "microsoft", "MSFT")
    page.get_by_label("Moving averages (days, up to 3)").fill("10, 30")
    page.get_by_role("button", name="Draw chart").click()
    page.wait_for_selector("#history .card[data-status=dropped]")
    card = page.locator("#history .card").first
    dropped = card_state(tab)
    assert dropped["message"] == (
        "The server no longer keeps this image: older images make room for newer ones."
    )
    assert card.locator(".chart").is_hidden()
    assert card.locator("a.open").is_hidden() and card.locator("a.download").is_hidden()
    redraw = card.get_by_role("button", name="Draw it again")
    assert redraw.is_visible()
    screenshot(tab, "page-dropped.png")

    # the server really drops it too, so the redraw below must really draw it again
    redis.Redis.from_url(stack.redis_url, db=IMAGES_DB).delete(image_key(dropped["id"]))
    assert stack.get(f"/jobs/{dropped['id']}/image", "*/*")[0] == 410
    page.unroute("**/jobs/*/image")
    redraw.click()
    page.wait_for_function(
        "id => document.querySelector('#history .card').dataset.jobId !== id", arg=dropped["id"]
    )
    page.wait_for_function(FINISHED_WITH_IMAGE)
    again = card_state(tab)
    assert page.locator("#history .card").count() == 1 and again["width"] == 1200
    assert again["message"].startswith("Ready in") and "reused" not in again["message"], again
    old, new = stack.json(f"/jobs/{dropped['id']}"), stack.json(f"/jobs/{again['id']}")
    assert (new["kind"], new["params"]) == (old["kind"], old["params"])
    assert new["params"]["options"]["moving_averages"] == [10, 30]
    kept = page.evaluate("JSON.parse(localStorage.getItem('stocks.charts.v1')).map(e => e.id)")
    assert kept == [again["id"]]
    assert status_errors(tab) == [410, 410]


def test_a_malformed_address_is_ignored(open_page, stack):
    tab = open_page()
    page = tab.page
    pick(tab, "exxon", "XOM")
    page.goto(stack.base + "/#%E0%A4%A")  # the same page: only the hash changes
    page.wait_for_function("() => location.hash === '#%E0%A4%A'")
    page.reload()
    page.wait_for_function("() => document.querySelector('#t-symbol').textContent === 'XOM'")
    page.goto(stack.base + "/#JPM")
    page.wait_for_function("() => document.querySelector('#t-symbol').textContent === 'JPM'")
    assert tab.errors == []
