"""A strict server: API key, CORS, tight limits, a tiny queue, one cached model, a short idle timeout.

It also runs the torch engine with dynamic batching (what a GPU node does), so that path is exercised
end to end on CPU.
"""

from __future__ import annotations

import base64
import concurrent.futures
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serving_testlib import jpeg, run_server, shapes_image

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def strict(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("strict")
    env = {
        "AILAB_SERVE_MODEL_DIR": str(model_repo),
        "AILAB_SERVE_CACHE_DIR": str(root / "cache"),
        "AILAB_SERVE_API_KEY": KEY,
        "AILAB_SERVE_CORS_ORIGINS": "http://lab.example",
        "AILAB_SERVE_BACKEND": "torch",
        "AILAB_SERVE_WORKERS": "1",
        "AILAB_SERVE_MAX_BATCH_SIZE": "4",
        "AILAB_SERVE_MAX_BATCH_WAIT_MS": "20",
        "AILAB_SERVE_QUEUE_SIZE": "3",
        "AILAB_SERVE_MAX_INFLIGHT_REQUESTS": "6",
        "AILAB_SERVE_MAX_LOADED_MODELS": "1",
        "AILAB_SERVE_IDLE_TIMEOUT_S": "3",
        "AILAB_SERVE_MAX_REQUEST_BYTES": str(300_000),
        "AILAB_SERVE_MAX_IMAGE_PIXELS": str(1000 * 1000),
        "AILAB_SERVE_MAX_IMAGES_PER_REQUEST": "2",
        "AILAB_SERVE_DEFAULT_IMGSZ": "320",
    }
    with run_server(env, root / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def authed(strict: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=strict, timeout=60, headers={"X-API-Key": KEY}) as client:
        yield client


def image_files(n: int = 1, size: tuple[int, int] = (320, 240)) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.jpg", jpeg(shapes_image(*size, seed=i)), "image/jpeg")) for i in range(n)]


def metric(client: httpx.Client, pattern: str) -> float:
    text = client.get("/metrics").text
    return sum(float(m) for m in re.findall(pattern + r" ([0-9.e+]+)", text))


def test_api_key_is_required_except_for_probes_metrics_and_page(strict: str) -> None:
    with httpx.Client(base_url=strict, timeout=60) as anon:
        assert anon.get("/v2/health/live").status_code == 200
        assert anon.get("/v2/health/ready").status_code == 200
        assert anon.get("/metrics").status_code == 200
        assert anon.get("/").status_code == 200
        for method, path in [("GET", "/v1/models"), ("GET", "/v2"), ("POST", "/v1/predict/circles")]:
            response = anon.request(method, path)
            assert response.status_code == 401 and "API key" in response.json()["error"]
        assert anon.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert anon.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert anon.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200


def test_cors_allows_only_configured_origins(strict: str) -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
    ok = httpx.options(f"{strict}/v1/models", headers={"Origin": "http://lab.example", **preflight})
    assert ok.headers.get("access-control-allow-origin") == "http://lab.example"
    other = httpx.options(f"{strict}/v1/models", headers={"Origin": "http://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


def test_request_limits(authed: httpx.Client) -> None:
    big_body = [("file", ("big.png", b"\x89PNG" + b"\0" * 400_000, "image/png"))]
    assert authed.post("/v1/predict/circles", files=big_body).status_code == 413
    many_pixels = image_files(1, size=(1200, 900))
    response = authed.post("/v1/predict/circles", files=many_pixels)
    assert response.status_code == 413 and "pixels" in response.json()["error"]
    too_many = authed.post("/v1/predict/circles", files=image_files(3))
    assert too_many.status_code == 413 and "limit is 2" in too_many.json()["error"]
    assert authed.post("/v1/predict/circles", files=image_files(2)).status_code == 200


def test_lru_keeps_one_model_and_switching_works(authed: httpx.Client) -> None:
    for model in ("circles", "animals", "circles", "shapes"):
        response = authed.post(f"/v1/predict/{model}", files=image_files())
        assert response.status_code == 200, response.text
        assert response.json()["engine"] == ("onnx" if model == "shapes" else "pt")
        loaded = [m["name"] for m in authed.get("/v1/models").json()["models"] if m["loaded"]]
        assert loaded == [model]
    # Unloaded by the LRU bound (or by the idle timeout, on a machine slow enough to take 3 s between calls).
    assert metric(authed, r'ailab_model_unloads_total\{model="[a-z]+",reason="(?:lru|idle)"\}') >= 3


def test_concurrent_first_requests_load_the_model_once(authed: httpx.Client) -> None:
    # animals v1 is not loaded (the cache holds one model, the last test left "shapes").
    before = metric(authed, r'ailab_model_loads_total\{model="animals"\}')
    files = image_files()

    def call(_: int) -> int:
        return authed.post("/v1/predict/animals", params={"version": "1"}, files=files).status_code

    # As many as the queue holds (3), so none is refused; all arrive while the model loads.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(call, range(3)))
    assert statuses == [200] * 3
    assert metric(authed, r'ailab_model_loads_total\{model="animals"\}') == before + 1


def test_dynamic_batching_forms_batches(authed: httpx.Client) -> None:
    files = image_files()

    def call(_: int) -> httpx.Response:
        return authed.post("/v1/predict/circles", files=files)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(call, range(6)))
    ok = [r for r in responses if r.status_code == 200]
    assert ok, [r.text for r in responses]
    sizes = [img["timings_ms"]["batch_size"] for r in ok for img in r.json()["images"]]
    assert max(sizes) > 1, sizes
    # Batched images share the forward pass yet each gets its own, correct, answer.
    assert all(d["class_name"] == "circle" for r in ok for d in r.json()["images"][0]["detections"])


def test_backpressure_answers_429_or_503_and_recovers(authed: httpx.Client) -> None:
    """Bounded overload: 24 requests at once against a queue of 3 and 6 requests in flight."""
    files = image_files(1, size=(640, 480))

    def call(_: int) -> httpx.Response:
        return authed.post("/v1/predict/circles", files=files, data={"imgsz": "640"})

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(call, range(24)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429, 503}, statuses
    refused = [r for r in responses if r.status_code in (429, 503)]
    assert refused and statuses.count(200) >= 3, statuses
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and r.json()["error"]
    assert time.monotonic() - started < 120
    assert metric(authed, r'ailab_rejected_total\{reason="[a-z_]+"\}') >= len(refused)
    # Still healthy and serving afterwards.
    assert authed.get("/v2/health/ready").status_code == 200
    assert authed.post("/v1/predict/circles", files=image_files()).status_code == 200


def oip_infer(client: httpx.Client, image: bytes, parameters: dict[str, object]) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(image).decode()]}
        ],
        "parameters": parameters,
    }
    return client.post("/v2/models/circles/infer", json=body)


def test_bad_queue_deadlines_are_refused_before_any_work(authed: httpx.Client) -> None:
    files = image_files()
    assert authed.post("/v1/predict/circles?max_queue_delay_ms=-5", files=files).status_code == 422
    refused = authed.post("/v1/predict/circles", files=files, headers={"X-Max-Queue-Delay-Ms": "soon"})
    assert refused.status_code == 422 and "max_queue_delay_ms" in refused.json()["error"]
    bad_timeout = oip_infer(authed, files[0][1][1], {"timeout": "1s"})
    assert bad_timeout.status_code == 400 and "timeout" in bad_timeout.json()["error"]


def test_a_request_that_would_wait_past_its_deadline_is_refused_at_once(authed: httpx.Client) -> None:
    """A backlog of slow images, then callers that accept 1 ms of queueing: 429, never inferred.

    Refused at once when the estimate says so, or dropped from the queue when their deadline passes
    before a worker is free (here the worker batches the backlog into one pass): either way the
    model never sees them.
    """
    slow = image_files(1, size=(640, 480))
    quick = image_files()
    before = metric(authed, r'ailab_rejected_total\{reason="queue_(?:delay|timeout)"\}')
    inferred_before = metric(authed, r'ailab_images_total\{model="circles"\}')
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        # Three sizes, three input shapes: the worker cannot batch them into one pass.
        backlog = [
            pool.submit(authed.post, "/v1/predict/circles", files=slow, data={"imgsz": size})
            for size in ("640", "608", "576")
        ]
        deadline = time.monotonic() + 60
        while metric(authed, "ailab_queue_depth") < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # polling the server's own gauge, bounded
        by_header = authed.post("/v1/predict/circles", files=quick, headers={"X-Max-Queue-Delay-Ms": "1"})
        by_query = authed.post("/v1/predict/circles?max_queue_delay_ms=1", files=quick)
        by_oip = oip_infer(authed, quick[0][1][1], {"timeout": 1000})  # microseconds, as Triton's
        statuses = [f.result().status_code for f in backlog]
    for response in (by_header, by_query, by_oip):
        assert response.status_code == 429, response.text
        assert int(response.headers["retry-after"]) >= 1
        assert "deadline" in response.json()["error"]
    assert statuses.count(200) == 3  # the backlog itself was served
    assert metric(authed, r'ailab_images_total\{model="circles"\}') == inferred_before + 3
    assert metric(authed, r'ailab_rejected_total\{reason="queue_(?:delay|timeout)"\}') >= before + 3


def test_idle_model_is_unloaded(authed: httpx.Client) -> None:
    assert authed.post("/v1/predict/circles", files=image_files()).status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not any(m["loaded"] for m in authed.get("/v1/models").json()["models"]):
            break
        time.sleep(0.5)
    else:
        pytest.fail("the model was still loaded 15 s after its last use (idle timeout 3 s)")
    assert metric(authed, r'ailab_model_unloads_total\{model="circles",reason="idle"\}') >= 1
    # And it comes back on the next request.
    assert authed.post("/v1/predict/circles", files=image_files()).status_code == 200
