// The Stocks page: a client of the public JSON API, nothing more.
// Data is only ever written with textContent or attributes, never as HTML.

const STORE_KEY = "stocks.charts.v1"; // job ids of the charts asked for in this browser
const LAST_KEY = "stocks.lastSymbol";
const MAX_KEPT = 30;
const MAX_RESULTS = 60;
const RECENT_ROWS = 20;
const INDEX_SYMBOL = "^GSPC";
const EQUAL_WEIGHT = "equal-weight"; // a benchmark drawn when ^GSPC is not loaded
const CANDLESTICK_ONLY = ["volume", "moving_averages"]; // options other kinds refuse
const RETRY_DEFAULT_S = 2;
const RETRY_MAX_S = 10;
const IMAGE_TRIES = 10; // loads of a chart's image before the card gives up
const KIND_NAMES = {
  line: "Line",
  candlestick: "Candlestick",
  compare: "Compare",
  benchmark: "Against the S&P 500",
};

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

// --- talking to the API ---------------------------------------------------------------

class Problem extends Error {
  constructor(message, status = 0, retryAfter = RETRY_DEFAULT_S) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter; // seconds to wait before asking again
  }

  // No answer, 429 or a 5xx (Redis stalled, a restart) may pass; any other 4xx is final.
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

// The answer's Retry-After (seconds or an HTTP date), within 1 to RETRY_MAX_S seconds, so
// a page never hammers a busy server nor sits idle long after it is back.
function retrySeconds(header) {
  const text = (header || "").trim();
  let s = /^\d+$/.test(text) ? Number(text) : (Date.parse(text) - Date.now()) / 1000;
  if (!Number.isFinite(s)) s = RETRY_DEFAULT_S;
  return Math.min(Math.max(s, 1), RETRY_MAX_S);
}

const sleep = (s) => new Promise((resolve) => setTimeout(resolve, s * 1000));

async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, { headers: { Accept: "application/json" }, ...options });
  } catch {
    throw new Problem("The server did not answer. Is it running?");
  }
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  if (!resp.ok) {
    const message = body && body.error && body.error.message;
    const retryAfter = retrySeconds(resp.headers.get("Retry-After"));
    if (resp.status === 429) {
      const text = options.method === "POST"
        ? "Too many chart requests from here: wait a minute and try again."
        : "Too many requests from here.";
      throw new Problem(text, 429, retryAfter);
    }
    const text = message ? sentence(message) : `The server answered ${resp.status}.`;
    throw new Problem(text, resp.status, retryAfter);
  }
  return body;
}

function sentence(text) {
  const t = String(text).trim();
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? "" : ".");
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
};
const tickerPath = (symbol) => `/tickers/${encodeURIComponent(symbol)}`;

// --- formatting -------------------------------------------------------------------------

const two = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signedTwo = new Intl.NumberFormat("en-US", {
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
  signDisplay: "exceptZero",
});
const whole = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

const price = (v) => (v == null ? "—" : two.format(v));
const signed = (v) => (v == null ? "—" : signedTwo.format(v));
const percent = (fraction) => (fraction == null ? "—" : `${two.format(fraction * 100)}%`);
const signedPercent = (fraction) => (fraction == null ? "—" : `${signedTwo.format(fraction * 100)}%`);
const trend = (el, v) => {
  el.classList.toggle("up", v > 0);
  el.classList.toggle("down", v < 0);
};

// --- finding a ticker ---------------------------------------------------------------------

const tickerLists = new Map(); // sector ("" = all) -> Promise of ticker summaries

function tickersIn(sector) {
  if (!tickerLists.has(sector)) {
    const p = api(`/tickers${query({ sector })}`).then((body) => body.tickers);
    p.catch(() => tickerLists.delete(sector));
    tickerLists.set(sector, p);
  }
  return tickerLists.get(sector);
}

const fold = (text) => text.toLowerCase().split(/\s+/).filter(Boolean).join(" ");
const WORD_START = /(?<![0-9a-z])(?=[0-9a-z])/g;

// The rule of the API's GET /tickers?q= (src/search.py), lower is better, -1 no match:
// the symbol itself (BRK-B is BRK.B), a symbol prefix, a name word prefix, name text.
function rank(ticker, q) {
  if (!q) return 4; // no query: every ticker, by symbol
  const sym = ticker.symbol.toLowerCase();
  const dotted = q.replaceAll("-", ".");
  if (sym === q || sym === dotted) return 0;
  if (sym.startsWith(q) || sym.startsWith(dotted)) return 1;
  const name = fold(ticker.name || "");
  if (!name.includes(q)) return -1;
  for (const m of name.matchAll(WORD_START)) if (name.startsWith(q, m.index)) return 2;
  return 3;
}

const bySymbol = (a, b) => (a.symbol < b.symbol ? -1 : a.symbol > b.symbol ? 1 : 0);

// Symbol and name search over the page's own copy of GET /tickers?sector=: one request,
// then none per key typed. The API's ?q= search ranks by the same rule, so both find
// the same tickers in the same order (ties by symbol, in code point order as there).
async function searchTickers(text, sector) {
  const q = fold(text);
  const tickers = await tickersIn(sector);
  return tickers
    .map((t) => [rank(t, q), t])
    .filter(([r]) => r >= 0)
    .sort((a, b) => a[0] - b[0] || bySymbol(a[1], b[1]))
    .map(([, t]) => t);
}

let searchSeq = 0;

async function showResults() {
  const seq = ++searchSeq;
  const list = $("#results");
  let found;
  try {
    found = await searchTickers($("#search").value, $("#sector").value);
  } catch (e) {
    $("#result-count").textContent = e.message;
    return;
  }
  if (seq !== searchSeq) return;
  const shown = found.slice(0, MAX_RESULTS);
  list.replaceChildren(
    ...shown.map((t) => {
      const item = $("#result-template").content.firstElementChild.cloneNode(true);
      const button = $("button", item);
      $(".sym", item).textContent = t.symbol;
      $(".name", item).textContent = t.name || "";
      $(".sector", item).textContent = t.sector || "";
      button.dataset.symbol = t.symbol;
      if (t.symbol === state.symbol) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => selectTicker(t.symbol));
      return item;
    }),
  );
  const n = found.length;
  $("#result-count").textContent =
    n === 0
      ? "No ticker matches."
      : n > shown.length
        ? `${n} tickers match; the first ${shown.length} are shown.`
        : `${n} ${n === 1 ? "ticker matches" : "tickers match"}.`;
}

function resultKeys(event) {
  const buttons = $$("#results button");
  const at = buttons.indexOf(document.activeElement);
  if (event.key === "ArrowDown" && buttons.length) {
    buttons[Math.min(at + 1, buttons.length - 1)].focus();
  } else if (event.key === "ArrowUp") {
    if (at <= 0) $("#search").focus();
    else buttons[at - 1].focus();
  } else if (event.key === "Escape") {
    $("#search").focus();
  } else {
    return;
  }
  event.preventDefault();
}

// --- one ticker: range, figures, recent bars ------------------------------------------------

// dateEdits counts the user's edits of From/To: a range answer that arrives after an edit
// must not overwrite what was typed.
const state = { symbol: null, ticker: null, period: "1y", start: null, end: null, seq: 0, dateEdits: 0 };
let allTickers = [];

async function selectTicker(symbol) {
  const seq = ++state.seq;
  $("#range-error").textContent = "";
  let ticker;
  try {
    ticker = await api(tickerPath(symbol));
  } catch (e) {
    if (seq === state.seq) ($("#overview").hidden ? $("#pick-hint") : $("#range-error")).textContent = e.message;
    return;
  }
  if (seq !== state.seq) return;
  state.symbol = ticker.symbol;
  state.ticker = ticker;
  remember(LAST_KEY, ticker.symbol);
  if (location.hash !== `#${ticker.symbol}`) history.replaceState(null, "", `#${ticker.symbol}`);
  for (const b of $$("#results button")) {
    if (b.dataset.symbol === ticker.symbol) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
  $("#pick-hint").hidden = true;
  $("#overview").hidden = false;
  $("#bars-section").hidden = false;
  $("#chart-form").hidden = false;
  $("#t-symbol").textContent = ticker.symbol;
  $("#t-name").textContent = ticker.name || "";
  $("#t-meta").textContent = [
    ticker.sector,
    `${whole.format(ticker.rows)} trading days from ${ticker.first_date} to ${ticker.last_date}`,
    ticker.source ? `source: ${ticker.source}` : null,
  ]
    .filter(Boolean)
    .join(" · ");
  for (const input of [$("#start"), $("#end")]) {
    input.min = ticker.first_date;
    input.max = ticker.last_date;
  }
  document.title = `${ticker.symbol} · Stocks`;
  await showRange(state.period ?? "1y");
}

// period: "1mo" | "6mo" | "1y" | "5y" | "all", or null for the From/To dates.
// /stats answers with the trading days it really used; the table, the CSV and charts
// then use exactly those, so every number on the page covers the same days.
async function showRange(period, start = null, end = null) {
  const seq = ++state.seq;
  const edits = state.dateEdits;
  const symbol = state.symbol;
  state.period = period;
  for (const b of $$(".quick button")) b.setAttribute("aria-pressed", String(b.dataset.period === period));
  $("#range-error").textContent = "";
  $("#figures").setAttribute("aria-busy", "true");
  const params = period === null ? { start, end } : period === "all" ? {} : { period };
  let stats;
  try {
    stats = await api(`${tickerPath(symbol)}/stats${query(params)}`);
  } catch (e) {
    if (seq === state.seq) $("#range-error").textContent = e.message;
    return;
  }
  if (seq !== state.seq) return;
  state.start = stats.start;
  state.end = stats.end;
  if (state.dateEdits === edits) {
    $("#start").value = stats.start;
    $("#end").value = stats.end;
  }
  showStats(stats);
  showCsvLink();
  const [change, bars] = await Promise.allSettled([
    api(`${tickerPath(symbol)}/change${query({ period: "1d", end: stats.end })}`),
    api(`${tickerPath(symbol)}/prices${query({ start: recentStart(stats), end: stats.end })}`),
  ]);
  if (seq !== state.seq) return;
  showChange(change.status === "fulfilled" ? change.value : null);
  if (bars.status === "fulfilled") showBars(bars.value.prices, stats.trading_days);
  else $("#bars-caption").textContent = bars.reason.message;
  $("#figures").setAttribute("aria-busy", "false");
}

function recentStart(stats) {
  // about two months back covers the last RECENT_ROWS trading days
  const d = new Date(`${stats.end}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() - 62);
  const iso = d.toISOString().slice(0, 10);
  return iso > stats.start ? iso : stats.start;
}

function showStats(s) {
  $("#f-range").textContent = `${s.start} to ${s.end}`;
  $("#f-last").textContent = price(s.last_close);
  $("#f-last-date").textContent = `on ${s.end}`;
  $("#f-return").textContent = signedPercent(s.return);
  trend($("#f-return"), s.return);
  $("#f-days").textContent = `over ${whole.format(s.trading_days)} trading days`;
  $("#f-vol").textContent = percent(s.annualized_volatility);
  $("#f-dd").textContent = percent(s.max_drawdown);
}

function showChange(c) {
  $("#f-change").textContent = c ? signed(c.change) : "—";
  $("#f-change-pct").textContent = c ? `${signedTwo.format(c.change_pct)}%` : "";
  $("#f-change-date").textContent = c ? `since ${c.from_date}` : "no earlier day";
  trend($("#f-change"), c ? c.change : 0);
  trend($("#f-change-pct"), c ? c.change : 0);
}

function showBars(rows, total) {
  const recent = rows.slice(-RECENT_ROWS).reverse();
  $("#bars-caption").textContent =
    `The last ${recent.length} of ${whole.format(total)} trading days in the range (newest first)`;
  $("#bars tbody").replaceChildren(
    ...recent.map((bar) => {
      const tr = $("#bar-row-template").content.firstElementChild.cloneNode(true);
      const cells = tr.children;
      cells[0].textContent = bar.date;
      cells[1].textContent = price(bar.open);
      cells[2].textContent = price(bar.high);
      cells[3].textContent = price(bar.low);
      cells[4].textContent = price(bar.close);
      cells[5].textContent = bar.volume == null ? "—" : whole.format(bar.volume);
      return tr;
    }),
  );
}

function showCsvLink() {
  const link = $("#csv-link");
  link.href = `${tickerPath(state.symbol)}/prices${query({ start: state.start, end: state.end, format: "csv" })}`;
  link.download = `${state.symbol}_${state.start}_${state.end}.csv`;
}

function customRange(event) {
  event.preventDefault();
  const start = $("#start").value;
  const end = $("#end").value;
  if (!start || !end) {
    $("#range-error").textContent = "Give both dates, as year-month-day.";
  } else if (start > end) {
    $("#range-error").textContent = "The start date must not be after the end date.";
  } else {
    showRange(null, start, end);
  }
}

// --- charts -------------------------------------------------------------------------------

function chosenKind() {
  return $("input[name=kind]:checked").value;
}

function showKindOptions() {
  const kind = chosenKind();
  for (const el of $$(".opt[data-kinds]")) el.hidden = !el.dataset.kinds.split(" ").includes(kind);
}

function symbolList(text) {
  return text
    .split(/[\s,;]+/)
    .map((s) => s.trim().toUpperCase())
    .filter(Boolean);
}

// The POST /jobs body for the form, or a Problem saying in plain words what to fix.
function chartRequest() {
  const kind = chosenKind();
  const symbols = [state.symbol];
  const options = { format: $("#opt-format").value };
  if (kind === "line" || kind === "compare") {
    const known = new Set(allTickers.map((t) => t.symbol));
    for (const s of symbolList($("#opt-others").value)) {
      const sym = known.has(s) ? s : known.has(s.replace("-", ".")) ? s.replace("-", ".") : null;
      if (!sym) throw new Problem(`There is no ticker ${s}.`);
      if (!symbols.includes(sym)) symbols.push(sym);
    }
    if (kind === "compare" && symbols.length < 2)
      throw new Problem("A comparison needs at least one other symbol.");
    if (symbols.length > 10) throw new Problem("A chart takes at most 10 symbols.");
  }
  if (kind === "candlestick") {
    options.volume = $("#opt-volume").checked;
    const windows = symbolList($("#opt-ma").value).map(Number);
    if (windows.some((w) => !Number.isInteger(w) || w < 2 || w > 500) || windows.length > 3)
      throw new Problem("Moving averages are up to 3 whole numbers of days, each from 2 to 500.");
    options.moving_averages = windows;
  }
  return { kind, symbols, start: state.start, end: state.end, options };
}

async function requestChart(event) {
  event.preventDefault();
  const error = $("#chart-error");
  error.textContent = "";
  let body;
  try {
    body = chartRequest();
  } catch (e) {
    error.textContent = e.message;
    return;
  }
  const button = $("#draw");
  button.disabled = true;
  try {
    await postChart(body);
  } catch (e) {
    error.textContent = e.message;
  } finally {
    button.disabled = false;
  }
}

// POST /jobs; the new chart's card goes first, on the page and in this browser's memory.
async function postChart(body) {
  const created = await api("/jobs", {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const entry = {
    id: created.id,
    kind: body.kind,
    symbols: body.symbols,
    start: body.start,
    end: body.end,
    format: body.options.format,
    requestedAt: new Date().toISOString(),
  };
  // the server draws a benchmark against ^GSPC when loaded, else an equal-weight index
  if (body.kind === "benchmark") entry.index = hasIndex() ? INDEX_SYMBOL : EQUAL_WEIGHT;
  saveCharts([entry, ...loadCharts()].slice(0, MAX_KEPT));
  const card = addCard(entry, true);
  card.scrollIntoView({ block: "nearest" });
  watch(entry, card);
}

// The server dropped this chart's image (its image budget): ask for the same chart again,
// which the server draws anew, and let the new card take the old one's place.
async function redraw(entry, card) {
  const button = $(".redraw", card);
  button.disabled = true;
  try {
    const job = await api(`/jobs/${encodeURIComponent(entry.id)}`);
    const { options, ...range } = job.params;
    const kept = ([k, v]) => v != null && (job.kind === "candlestick" || !CANDLESTICK_ONLY.includes(k));
    const body = { kind: job.kind, ...Object.fromEntries(Object.entries(range).filter(kept)) };
    body.options = Object.fromEntries(Object.entries(options).filter(kept));
    await postChart(body);
    forget(entry, card);
  } catch (e) {
    cardError(card, e.message);
  } finally {
    button.disabled = false;
  }
}

function loadCharts() {
  try {
    const kept = JSON.parse(localStorage.getItem(STORE_KEY) || "[]");
    return Array.isArray(kept) ? kept.filter((e) => e && typeof e.id === "string") : [];
  } catch {
    return [];
  }
}

function saveCharts(entries) {
  remember(STORE_KEY, JSON.stringify(entries));
}

function remember(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // storage off or full: the page still works, it just forgets
  }
}

const hasIndex = () => allTickers.some((t) => t.symbol === INDEX_SYMBOL);

function kindName(entry) {
  if (entry.kind === "benchmark" && entry.index === EQUAL_WEIGHT) return "Against an equal-weight index";
  return KIND_NAMES[entry.kind] || entry.kind;
}

function forget(entry, card) {
  saveCharts(loadCharts().filter((e) => e.id !== entry.id));
  card.remove();
  $("#history-empty").hidden = $("#history").children.length > 0;
}

function addCard(entry, first = false) {
  const card = $("#card-template").content.firstElementChild.cloneNode(true);
  card.dataset.jobId = entry.id;
  const range = entry.start && entry.end ? ` · ${entry.start} to ${entry.end}` : "";
  const title = `${kindName(entry)} · ${entry.symbols.join(", ")}${range}`;
  $(".card-title", card).textContent = title;
  $(".chart-img", card).alt = `${title} chart`;
  $(".chart-img", card).addEventListener("error", () => imageFailed(entry, card));
  $(".chart-img", card).addEventListener("load", () => imageLoaded(card));
  $(".remove", card).setAttribute("aria-label", `Remove ${title}`);
  $(".remove", card).addEventListener("click", () => forget(entry, card));
  $(".redraw", card).addEventListener("click", () => redraw(entry, card));
  if (first) $("#history").prepend(card);
  else $("#history").append(card);
  $("#history-empty").hidden = true;
  return card;
}

function seconds(fromIso, toIso) {
  return (Date.parse(toIso) - Date.parse(fromIso)) / 1000;
}

function showJob(card, entry, job) {
  card.dataset.status = job.status;
  const order = ["queued", "running", "finished"];
  const ended = job.status === "failed" || job.status === "cancelled";
  const at = ended ? 2 : order.indexOf(job.status);
  $(".steps li[data-step=finished]", card).textContent = ended ? sentence(job.status).slice(0, -1) : "Finished";
  for (const li of $$(".steps li", card)) {
    const i = order.indexOf(li.dataset.step);
    li.classList.toggle("done", at >= 0 && i < at);
    li.classList.toggle("current", i === at);
    if (i === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  }
  const message = $(".card-message", card);
  message.classList.toggle("error", job.status === "failed" || job.status === "cancelled");
  if (job.status === "queued") message.textContent = "Waiting for a worker…";
  else if (job.status === "running") message.textContent = "Drawing the chart…";
  else if (job.status === "failed")
    message.textContent = `The chart could not be drawn: ${job.error || "the worker gave up"}`;
  else if (job.status === "cancelled") message.textContent = "This chart was cancelled.";
  else if (job.status === "finished") {
    const took = seconds(job.created_at, job.finished_at);
    const reused = job.started_at === job.finished_at ? " (an identical chart was reused)" : "";
    card.readyText = `Ready in ${two.format(Math.max(took, 0))} s${reused}.`;
    message.textContent = card.readyText;
    const src = job.links.image;
    const img = $(".chart-img", card);
    if (img.getAttribute("src") !== src) img.src = src;
    $(".chart", card).hidden = false;
    const open = $(".open", card);
    open.href = src;
    open.hidden = false;
    const download = $(".download", card);
    download.href = src;
    download.download = `${entry.symbols.join("-").replace(/[^A-Za-z0-9.-]/g, "")}-${entry.kind}.${entry.format || "png"}`;
    download.hidden = false;
  }
}

function cardError(card, text) {
  const message = $(".card-message", card);
  message.classList.add("error");
  message.textContent = text;
}

// A stalled Redis, a restart or a flood passes, and the job goes on meanwhile: wait as the
// server asks, then ask again (until the card is removed).
async function retryLater(card, problem) {
  cardError(card, `${problem.message} Trying again in ${whole.format(problem.retryAfter)} s…`);
  await sleep(problem.retryAfter);
  return card.isConnected;
}

function showGone(entry, card) {
  card.dataset.status = "gone";
  cardError(card, "The server no longer keeps this chart: charts are kept for a limited time.");
  saveCharts(loadCharts().filter((kept) => kept.id !== entry.id));
}

async function watch(entry, card) {
  let wait = 150;
  for (;;) {
    let job;
    try {
      job = await api(`/jobs/${encodeURIComponent(entry.id)}`);
    } catch (e) {
      if (e.transient && (await retryLater(card, e))) continue;
      if (e.status === 404 || e.status === 410) showGone(entry, card);
      else if (!e.transient) cardError(card, e.message);
      return;
    }
    showJob(card, entry, job);
    if (!["queued", "running"].includes(job.status) || !card.isConnected) return;
    await sleep(wait / 1000);
    wait = Math.min(wait * 1.5, 2000);
  }
}

// The chart's image did not load: ask the server why. 410: the image budget dropped it
// (the job itself stays finished); a busy server: load it again later.
async function imageFailed(entry, card) {
  const img = $(".chart-img", card);
  const src = img.getAttribute("src");
  if (!src || !card.isConnected) return;
  const tries = Number(card.dataset.imageTries || 0) + 1;
  card.dataset.imageTries = String(tries);
  let problem = new Problem("The image did not load.");
  try {
    await api(src, { method: "HEAD" });
  } catch (e) {
    if (e.status === 410) return showDropped(card);
    if (e.status === 404) return showGone(entry, card);
    problem = new Problem(`${problem.message} ${e.message}`, e.status, e.retryAfter);
  }
  // answered 200 or busy: the load may pass on a later try
  if (problem.transient && tries <= IMAGE_TRIES && (await retryLater(card, problem))) {
    img.src = src;
  } else {
    cardError(card, problem.message);
  }
}

function imageLoaded(card) {
  if (!card.dataset.imageTries) return;
  delete card.dataset.imageTries; // loaded on a later try: the card is as if it never failed
  $(".card-message", card).classList.remove("error");
  $(".card-message", card).textContent = card.readyText;
}

function showDropped(card) {
  card.dataset.status = "dropped";
  const message = $(".card-message", card);
  message.classList.remove("error");
  message.textContent = "The server no longer keeps this image: older images make room for newer ones.";
  $(".chart", card).hidden = true;
  for (const link of [$(".open", card), $(".download", card)]) {
    link.hidden = true;
    link.removeAttribute("href");
  }
  $(".redraw", card).hidden = false;
}

function showKeptCharts() {
  const kept = loadCharts();
  $("#history-empty").hidden = kept.length > 0;
  for (const entry of kept) watch(entry, addCard(entry));
}

// --- start ---------------------------------------------------------------------------------

// The symbol in the address (#AAPL), or "" when there is none or it does not decode.
function hashSymbol() {
  try {
    return decodeURIComponent(location.hash.slice(1));
  } catch {
    return "";
  }
}

async function showDataSummary() {
  try {
    const index = await api("/");
    const sources = Object.keys(index.sources || {}).join(", ");
    $("#data-summary").textContent = `${whole.format(index.tickers)} tickers · data: ${sources || "none"}`;
  } catch (e) {
    $("#data-summary").textContent = e.message;
  }
}

async function start() {
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const first = $("#results button");
    if (first) first.click();
  });
  $("#search").addEventListener("input", showResults);
  $("#search").addEventListener("keydown", resultKeys);
  $("#results").addEventListener("keydown", resultKeys);
  $("#sector").addEventListener("change", showResults);
  for (const b of $$(".quick button")) b.addEventListener("click", () => showRange(b.dataset.period));
  $("#range-form").addEventListener("submit", customRange);
  for (const input of [$("#start"), $("#end")]) input.addEventListener("input", () => state.dateEdits++);
  for (const r of $$("input[name=kind]")) r.addEventListener("change", showKindOptions);
  $("#chart-form").addEventListener("submit", requestChart);
  window.addEventListener("hashchange", () => {
    const sym = hashSymbol();
    if (sym && sym !== state.symbol) selectTicker(sym);
  });
  showKindOptions();
  showDataSummary();
  showKeptCharts();

  try {
    allTickers = await tickersIn("");
  } catch (e) {
    $("#result-count").textContent = e.message;
    return;
  }
  const sectors = [...new Set(allTickers.map((t) => t.sector).filter(Boolean))].sort();
  $("#sector").append(...sectors.map((s) => new Option(s, s)));
  $("#symbol-list").replaceChildren(...allTickers.map((t) => new Option(t.name || "", t.symbol)));
  $("#benchmark-note").textContent = hasIndex()
    ? "Compared with the S&P 500 index (^GSPC)."
    : "^GSPC is not loaded: an equal-weight index of the loaded tickers stands in for the S&P 500.";
  await showResults();

  let wanted = hashSymbol();
  if (!wanted) {
    try {
      wanted = localStorage.getItem(LAST_KEY) || "";
    } catch {
      wanted = "";
    }
  }
  if (wanted) await selectTicker(wanted);
}

start();
