"""The job API via Flask's test client on a real Redis; an in-process queue moves the jobs."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from conftest import business_days, random_bars, store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stocks import jobs
from stocks.api.app import MAX_BODY_BYTES, create_app

YEAR_2017 = business_days("2017-01-02", "2017-12-29")
KEY = "job-test-key"


@pytest.fixture
def app(settings):
    return create_app(settings.replace(api_keys=(KEY,)), {"TESTING": True})


@pytest.fixture
def client(client):
    """Every request carries the key, so the jobs it makes are the ones it lists."""
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {KEY}"
    return client


@pytest.fixture(autouse=True)
def stored(r0):
    for seed, sym in enumerate(("AAPL", "MSFT", "BRK.B", "^GSPC")):
        store(r0, sym, random_bars(YEAR_2017, seed), source="synthetic")


def post(client, body, **kw):
    return client.post("/jobs", json=body, **kw)


def test_post_returns_202_with_location_and_a_queued_record(client, settings):
    resp = post(client, {"kind": "line", "symbols": ["aapl", "brk-b"], "start": "2017-02-01"})
    assert resp.status_code == 202
    body = resp.get_json()
    job_id = body["id"]
    assert body == {
        "id": job_id,
        "status": "queued",
        "links": {"self": f"/jobs/{job_id}", "image": f"/jobs/{job_id}/image"},
    }
    assert resp.headers["Location"] == f"/jobs/{job_id}"
    rec = client.get(f"/jobs/{job_id}").get_json()
    assert rec["status"] == "queued" and rec["kind"] == "line" and rec["attempts"] == 0
    assert rec["params"] == {
        "symbols": ["AAPL", "BRK.B"],
        "start": "2017-02-01",
        "end": None,
        "options": {
            "width": 1200,
            "height": 700,
            "format": "png",
            "title": None,
        },
    }
    assert rec["created_at"].endswith("Z")
    assert abs(dt.datetime.fromisoformat(rec["created_at"]) - dt.datetime.now(dt.UTC)).seconds < 60
    assert rec["started_at"] is None and rec["finished_at"] is None and rec["error"] is None
    assert jobs.JobQueue(settings).count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "pie", "symbols": ["AAPL"]},
        {"symbols": ["AAPL"]},
        {"kind": "line"},
        {"kind": "line", "symbols": []},
        {"kind": "line", "symbols": "AAPL"},
        {"kind": "line", "symbols": ["AAPL"] * 11},
        {"kind": "candlestick", "symbols": ["AAPL", "MSFT"]},
        {"kind": "compare", "symbols": ["AAPL"]},
        {"kind": "benchmark", "symbols": ["AAPL", "MSFT"]},
        {"kind": "line", "symbols": ["AAPL"], "start": "2017-13-01"},
        {"kind": "line", "symbols": ["AAPL"], "start": "20170101"},
        {"kind": "line", "symbols": ["AAPL"], "start": "2018-01-01", "end": "2017-01-01"},
        {"kind": "line", "symbols": ["AAPL"], "options": {"width": 50}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"height": 99999}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"width": "800"}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"format": "gif"}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"colour": "red"}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"title": "a\nb"}},
        {"kind": "line", "symbols": ["AAPL"], "options": {"moving_averages": [20]}},
        {
            "kind": "candlestick",
            "symbols": ["AAPL"],
            "options": {"moving_averages": [5, 10, 20, 50]},
        },
        {"kind": "candlestick", "symbols": ["AAPL"], "options": {"moving_averages": [1]}},
        {"kind": "candlestick", "symbols": ["AAPL"], "options": {"moving_averages": [20, 20]}},
        {"kind": "candlestick", "symbols": ["AAPL"], "options": {"moving_averages": [50] * 3}},
        {"kind": "candlestick", "symbols": ["AAPL"], "options": {"volume": "yes"}},
        {"kind": "line", "symbols": ["AAPL"], "extra": 1},
        {"kind": "compare", "symbols": ["AAPL", "aapl"]},
        {"kind": "line", "symbols": ["AA PL\u0000"]},
        [1, 2, 3],
        "line",
    ],
)
def test_bad_requests_are_400(client, body, settings):
    resp = post(client, body)
    assert resp.status_code == 400, resp.get_json()
    assert resp.get_json()["error"]["status"] == 400
    assert jobs.JobQueue(settings).count() == 0


def test_unknown_symbol_is_404(client):
    resp = post(client, {"kind": "compare", "symbols": ["AAPL", "NOPE"]})
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "unknown_symbol"


def test_invalid_json_non_json_and_oversized_bodies(client, settings):
    bad = client.post("/jobs", data=b'{"kind": "line",', content_type="application/json")
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid_json"
    form = client.post("/jobs", data={"kind": "line"})
    assert form.status_code == 415
    text = client.post("/jobs", data=b'{"kind":"line"}', content_type="text/plain")
    assert text.status_code == 415
    big = b'{"kind": "line", "symbols": ["AAPL"], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    huge = client.post("/jobs", data=big, content_type="application/json")
    assert huge.status_code == 413 and huge.get_json()["error"]["status"] == 413
    assert jobs.JobQueue(settings).count() == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["kind", "symbols", "start", "end", "options", "width", "format"]),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_bodies_never_500(client, body):
    resp = client.post("/jobs", data=json.dumps(body), content_type="application/json")
    assert resp.status_code in (202, 400, 404), resp.get_data()


def test_unknown_and_malformed_ids_are_404(client):
    for path in ("/jobs/" + "0" * 28, "/jobs/nope", "/jobs/" + "0" * 28 + "/image"):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "unknown_job"
    assert client.delete("/jobs/" + "f" * 28).status_code == 404


def test_list_newest_first_with_cursor_and_status(client):
    ids = [post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"] for _ in range(5)]
    assert client.delete(f"/jobs/{ids[1]}").status_code == 200
    page = client.get("/jobs?limit=2").get_json()
    assert [j["id"] for j in page["jobs"]] == [ids[4], ids[3]]
    page2 = client.get(f"/jobs?limit=2&cursor={page['next_cursor']}").get_json()
    assert [j["id"] for j in page2["jobs"]] == [ids[2], ids[1]]
    page3 = client.get(f"/jobs?limit=2&cursor={page2['next_cursor']}").get_json()
    assert [j["id"] for j in page3["jobs"]] == [ids[0]] and page3["next_cursor"] is None
    cancelled = client.get("/jobs?status=cancelled").get_json()
    assert [j["id"] for j in cancelled["jobs"]] == [ids[1]]
    queued = client.get("/jobs?status=queued&limit=100").get_json()
    assert len(queued["jobs"]) == 4
    for bad in ("limit=101", "limit=0", "status=done", "cursor=xyz"):
        assert client.get(f"/jobs?{bad}").status_code == 400


def test_expired_records_drop_out_of_the_list(client, redis_url):
    import redis

    ids = [post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"] for _ in range(3)]
    redis.Redis.from_url(redis_url, db=2).delete(f"job:{ids[2]}")
    page = client.get("/jobs?limit=1").get_json()
    assert [j["id"] for j in page["jobs"]] == [ids[1]]


def test_cancel_delete_and_image_states(client, settings):
    queue = jobs.JobQueue(settings)
    first = post(client, {"kind": "candlestick", "symbols": ["MSFT"]}).get_json()["id"]
    second = post(client, {"kind": "line", "symbols": ["MSFT"]}).get_json()["id"]

    image = client.get(f"/jobs/{second}/image")
    assert image.status_code == 409 and image.get_json()["error"]["job_status"] == "queued"
    resp = client.delete(f"/jobs/{second}")
    assert resp.status_code == 200 and resp.get_json()["status"] == "cancelled"
    assert client.get(f"/jobs/{second}/image").status_code == 409

    job = queue.get(timeout=0.5)
    assert job.id == first
    assert queue.get(block=False) is None  # the cancelled one is never handed out
    assert client.get(f"/jobs/{first}").get_json()["status"] == "running"
    assert client.delete(f"/jobs/{first}").status_code == 409
    assert client.get(f"/jobs/{first}/image").get_json()["error"]["job_status"] == "running"

    assert queue.finish(job, b"<svg/>", "image/svg+xml").status == "finished"
    image = client.get(f"/jobs/{first}/image")
    assert image.status_code == 200 and image.data == b"<svg/>"
    assert image.mimetype == "image/svg+xml"
    rec = client.get(f"/jobs/{first}").get_json()
    assert rec["status"] == "finished" and rec["attempts"] == 1
    assert rec["started_at"] <= rec["finished_at"]

    assert client.delete(f"/jobs/{first}").status_code == 204
    assert client.get(f"/jobs/{first}").status_code == 404
    assert client.get(f"/jobs/{first}/image").status_code == 404
    assert client.delete(f"/jobs/{second}").status_code == 204
    assert client.get("/jobs").get_json()["jobs"] == []


def test_failed_job_image_says_why(client, settings):
    queue = jobs.JobQueue(settings)
    job_id = post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"]
    queue.fail(queue.get(timeout=0.5), "no prices between 2030-01-01 and 2030-02-01")
    resp = client.get(f"/jobs/{job_id}/image")
    assert resp.status_code == 409
    error = resp.get_json()["error"]
    assert error["job_status"] == "failed" and "no prices" in error["job_error"]
    assert client.get(f"/jobs/{job_id}").get_json()["error"].startswith("no prices")


def test_identical_request_reuses_the_image_until_the_data_changes(client, r0, settings):
    queue = jobs.JobQueue(settings)
    body = {"kind": "benchmark", "symbols": ["AAPL"], "options": {"title": "t"}}
    first = post(client, body).get_json()["id"]
    queue.finish(queue.get(timeout=0.5), b"PNG1", "image/png")

    second = post(client, body).get_json()["id"]
    assert queue.get(timeout=0.2) is None  # taken and finished from the cache, not handed out
    rec = client.get(f"/jobs/{second}").get_json()
    assert rec["status"] == "finished"
    assert client.get(f"/jobs/{second}/image").data == b"PNG1"
    # deleting the first job keeps the second one's copy
    assert client.delete(f"/jobs/{first}").status_code == 204
    assert client.get(f"/jobs/{second}/image").data == b"PNG1"

    store(
        r0, "^GSPC", random_bars(YEAR_2017, 99), source="synthetic"
    )  # the index changed: a benchmark must be drawn again
    third = post(client, body).get_json()["id"]
    job = queue.get(timeout=0.5)
    assert job is not None and job.id == third


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "line", "symbols": ["aapl", "brk-b"], "options": {"title": "two"}},
        {"kind": "compare", "symbols": ["MSFT", "AAPL"], "start": "2017-03-01"},
        {"kind": "benchmark", "symbols": ["msft"], "end": "2017-06-30"},
        {"kind": "candlestick", "symbols": ["AAPL"]},
        {
            "kind": "candlestick",
            "symbols": ["brk.b"],
            "options": {"volume": False, "moving_averages": [50, 20], "format": "svg"},
        },
    ],
)
def test_a_records_params_post_again_as_the_same_request(client, settings, body):
    """The 410 of a dropped image says to post the same request again: what GET /jobs/<id>
    shows is that request, and it shares the first one's cache key (and image)."""
    queue = jobs.JobQueue(settings)
    first = post(client, body).get_json()["id"]
    queue.finish(queue.get(timeout=0.5), b"IMAGE1", "image/png")
    rec = client.get(f"/jobs/{first}").get_json()
    again = post(client, {"kind": rec["kind"], **rec["params"]})
    assert again.status_code == 202, again.get_json()
    second = again.get_json()["id"]
    assert queue.get_job(second)["cache_key"] == queue.get_job(first)["cache_key"]
    assert client.get(f"/jobs/{second}").get_json()["params"] == rec["params"]
    assert queue.get(timeout=0.2) is None  # answered from the first one's image
    assert client.get(f"/jobs/{second}/image").data == b"IMAGE1"


def test_options_a_kind_does_not_use_are_not_stored(client):
    """A line chart's options never mention candlestick-only ones, defaults or not."""
    plain = post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"]
    assert set(client.get(f"/jobs/{plain}").get_json()["params"]["options"]) == {
        "width",
        "height",
        "format",
        "title",
    }
    candle = post(client, {"kind": "candlestick", "symbols": ["AAPL"]}).get_json()["id"]
    options = client.get(f"/jobs/{candle}").get_json()["params"]["options"]
    assert options["volume"] is True and options["moving_averages"] == []


def test_a_duplicate_moving_average_is_named(client):
    body = {"kind": "candlestick", "symbols": ["AAPL"], "options": {"moving_averages": [5, 9, 5]}}
    error = post(client, body).get_json()["error"]
    assert error["message"] == "options.moving_averages: window 5 is listed twice"


def test_an_identical_request_queued_behind_is_answered_when_the_first_finishes(client, settings):
    queue = jobs.JobQueue(settings)
    body = {"kind": "line", "symbols": ["AAPL"], "options": {"title": "twice"}}
    first = post(client, body).get_json()["id"]
    second = post(client, body).get_json()["id"]
    job = queue.get(timeout=0.5)
    assert job.id == first
    # finishing stores the image before the next job starts, so the twin is not drawn
    outcome = queue.finish(job, b"PNG1", "image/png", take_next=True)
    assert outcome.status == "finished" and outcome.next_job is None
    assert client.get(f"/jobs/{second}").get_json()["status"] == "finished"
    assert client.get(f"/jobs/{second}/image").data == b"PNG1"


def test_job_records_and_images_expire_together(redis_url, settings):
    import redis

    settings = settings.replace(result_ttl=100)
    client = create_app(settings).test_client()
    queue = jobs.JobQueue(settings)
    job_id = post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"]
    queue.finish(queue.get(timeout=0.5), b"x", "image/png")
    rec_ttl = redis.Redis.from_url(redis_url, db=2).ttl(f"job:{job_id}")
    img_ttl = redis.Redis.from_url(redis_url, db=3).ttl(f"image:{job_id}")
    assert 90 <= rec_ttl <= 100 and 90 <= img_ttl <= 100


def test_post_jobs_is_rate_limited_per_client(settings):
    client = create_app(settings.replace(job_rate="3/minute", api_keys=(KEY,))).test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {KEY}"
    answers = [post(client, {"kind": "line", "symbols": ["AAPL"]}) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[0].headers["Retry-After"] == "1"  # poll in a second, not the window's reset
    assert not [name for name, _ in answers[0].headers if name.startswith("X-RateLimit")]
    resp = post(client, {"kind": "line", "symbols": ["AAPL"]})
    assert resp.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60  # when the minute's window resets
    other = post(
        client, {"kind": "line", "symbols": ["AAPL"]}, environ_base={"REMOTE_ADDR": "10.0.0.9"}
    )
    assert other.status_code == 202
    assert client.get("/jobs").status_code == 200  # reads are not limited
    assert jobs.JobQueue(settings).count() == 4


def test_filtered_listing_stops_at_the_scan_budget_with_a_cursor(client, monkeypatch):
    ids = [post(client, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"] for _ in range(5)]
    assert client.delete(f"/jobs/{ids[0]}").status_code == 200
    monkeypatch.setattr(jobs, "LIST_SCAN_BUDGET", 2)
    page = client.get("/jobs?status=cancelled").get_json()
    assert page["jobs"] == [] and page["next_cursor"] == ids[3]
    while page["next_cursor"] and not page["jobs"]:
        page = client.get(f"/jobs?status=cancelled&cursor={page['next_cursor']}").get_json()
    assert [j["id"] for j in page["jobs"]] == [ids[0]]


def test_each_key_lists_only_its_own_jobs_and_listing_needs_a_key(settings):
    app = create_app(settings.replace(api_keys=("alice-key", "bob-key")), {"TESTING": True})
    alice, bob, anyone = app.test_client(), app.test_client(), app.test_client()
    alice.environ_base["HTTP_AUTHORIZATION"] = "Bearer alice-key"
    bob.environ_base["HTTP_AUTHORIZATION"] = "Bearer bob-key"
    mine = post(alice, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"]
    theirs = post(bob, {"kind": "line", "symbols": ["MSFT"]}).get_json()["id"]
    nobodys = post(anyone, {"kind": "line", "symbols": ["AAPL"]}).get_json()["id"]
    assert [j["id"] for j in alice.get("/jobs").get_json()["jobs"]] == [mine]
    assert [j["id"] for j in bob.get("/jobs").get_json()["jobs"]] == [theirs]
    assert anyone.get("/jobs").status_code == 401
    wrong = post(
        anyone, {"kind": "line", "symbols": ["AAPL"]}, headers={"Authorization": "Bearer x"}
    )
    assert wrong.status_code == 401  # a wrong key is refused, not made anonymous
    assert alice.get(f"/jobs/{theirs}").status_code == 200  # the id is the capability
    assert anyone.get(f"/jobs/{nobodys}").status_code == 200
    no_keys = create_app(settings, {"TESTING": True}).test_client()
    assert error_code(no_keys.get("/jobs"), 403) == "listing_disabled"


def error_code(resp, status: int) -> str:
    assert resp.status_code == status, resp.data
    return resp.get_json()["error"]["code"]
