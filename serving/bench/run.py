#!/usr/bin/env python3
"""Benchmark: ailab-serving against the naive FastAPI + ``model(img)`` baseline, in one run.

    .venv/bin/python serving/bench/run.py            # baseline + server, 1/4/8 clients, ~4 min
    .venv/bin/python serving/bench/run.py --all      # + torch engine and CPU batching variants
    .venv/bin/python serving/bench/run.py --quick    # a smoke run (seconds), used by the tests

Same model (YOLOv8n, random weights: same compute as trained ones, built offline), same images
(bus.jpg and zidane.jpg from ../shared when present, else generated), same client, closed loop:
each client sends its next request when the previous one answered. Both servers are separate
processes on 127.0.0.1; the client runs here. Prints a Markdown table; ``--json`` writes the numbers.

Two more lines put the server against the machine's limit in the same run:
* forward only: the fastest installed runtime on the server's own ONNX export, one single-threaded
  stream per core, on the letterboxed first image (no HTTP, decoding or NMS): what the cores can do;
* overload: 10x the largest client count against a server with a queue deadline; goodput (accepted
  requests/s), the latency of the 429 answers, and the accepted requests' p50/p99. Clients send
  their next request as soon as one is answered, 429 or not (no back-off: the worst case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test helpers make models and manage processes
sys.path.insert(0, str(HERE.parents[1] / "tests" / "support"))  # what pytest's pythonpath gives them

from serving_testlib import (  # noqa: E402
    SHARED,
    free_port,
    jpeg,
    make_plain_model,
    shapes_image,
    stop_process,
    wait_http,
)

Target = tuple[str, contextlib.AbstractContextManager[None]]  # base URL, running process


@dataclass
class Overload:
    clients: int
    backoff: bool  # clients wait the Retry-After of a 429 (True) or resend at once (False)
    queue_delay_ms: float
    seconds: float
    goodput: float  # accepted (200) requests per second
    accepted: int
    refused: int  # 429
    errors: int  # anything else
    accepted_p50_ms: float
    accepted_p99_ms: float
    refused_p50_ms: float
    refused_p99_ms: float


@dataclass
class Run:
    target: str
    clients: int
    requests: int
    errors: int
    seconds: float
    throughput: float  # successful requests per second
    p50_ms: float
    p99_ms: float


def load_images() -> list[bytes]:
    shared = [SHARED / "data" / "images" / n for n in ("bus.jpg", "zidane.jpg")]
    if all(p.exists() for p in shared):
        return [p.read_bytes() for p in shared]
    return [jpeg(shapes_image(810, 1080, seed=1)), jpeg(shapes_image(1280, 720, seed=2))]


def multipart(image: bytes) -> tuple[bytes, str]:
    """Encode the upload once, so the client spends no CPU on it during the run."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="img.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def run_threads(target: Callable[[int], None], count: int) -> None:
    """Run ``target(0) .. target(count - 1)`` in threads and wait for all of them."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def closed_loop(
    url: str,
    bodies: list[tuple[bytes, str]],
    clients: int,
    seconds: float,
    max_requests: int,
    *,
    refused: list[float] | None = None,
    backoff: bool = False,
) -> tuple[list[float], int, float]:
    """``clients`` threads, each sending the next request when the last answered, for ``seconds``.

    Returns the latencies of successful requests, the error count and the wall time; with
    ``refused``, the latencies of 429 answers go there instead of counting as errors. With
    ``backoff`` a client waits the ``Retry-After`` of a 429 before its next request.
    """
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    sent = 0

    def client(index: int) -> None:
        nonlocal errors, sent
        with httpx.Client(timeout=120) as http:
            i = index
            while time.perf_counter() < stop_at:
                with lock:
                    if sent >= max_requests:
                        return
                    sent += 1
                body, ctype = bodies[i % len(bodies)]
                i += 1
                t0 = time.perf_counter()
                response = http.post(url, content=body, headers={"content-type": ctype})
                elapsed = time.perf_counter() - t0
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    elif response.status_code == 429 and refused is not None:
                        refused.append(elapsed)
                    else:
                        errors += 1
                if backoff and response.status_code == 429:
                    time.sleep(
                        min(float(response.headers["retry-after"]), max(0.0, stop_at - time.perf_counter()))
                    )

    started = time.perf_counter()
    run_threads(client, clients)
    return latencies, errors, time.perf_counter() - started


def summarise(target: str, clients: int, latencies: list[float], errors: int, seconds: float) -> Run:
    return Run(
        target=target,
        clients=clients,
        requests=len(latencies),
        errors=errors,
        seconds=round(seconds, 2),
        throughput=round(len(latencies) / seconds, 2) if seconds else 0.0,
        p50_ms=round(percentile(latencies, 0.5) * 1000, 1) if latencies else float("nan"),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 1) if latencies else float("nan"),
    )


@contextlib.contextmanager
def process(
    cmd: list[str], env: dict[str, str], health: str, log: Path, cwd: Path | None = None
) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        wait_http(health, proc, log, 180, "the benchmark target")
        yield
    finally:
        stop_process(proc)


def baseline(model_dir: Path, work: Path) -> Target:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    env = {"BENCH_MODEL_DIR": str(model_dir), "YOLO_OFFLINE": "1", "PYTHONPATH": str(HERE)}
    base = f"http://127.0.0.1:{port}"
    return base, process(cmd, env, f"{base}/health", work / "baseline.log", cwd=HERE)


def server(model_dir: Path, work: Path, name: str, extra: dict[str, str]) -> Target:
    port = free_port()
    env = {
        "AILAB_SERVE_HOST": "127.0.0.1",
        "AILAB_SERVE_PORT": str(port),
        "AILAB_SERVE_MODEL_DIR": str(model_dir),
        "AILAB_SERVE_CACHE_DIR": str(work / f"cache-{name}"),
        "AILAB_SERVE_LOG_LEVEL": "warning",
        "AILAB_SERVE_QUEUE_SIZE": "256",
        **extra,
    }
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "ailab_serving", "serve"]
    return base, process(cmd, env, f"{base}/v2/health/ready", work / f"{name}.log")


def timed_post(url: str, body: tuple[bytes, str]) -> float:
    t0 = time.perf_counter()
    # Single timed requests (warm-up, model switches) are no overload: no queue deadline for them.
    headers = {"content-type": body[1], "x-max-queue-delay-ms": "600000"}
    response = httpx.post(url, content=body[0], headers=headers, timeout=300)
    response.raise_for_status()
    return time.perf_counter() - t0


def model_switch(predict_url: str, bodies: list[tuple[bytes, str]], repeats: int) -> dict[str, float]:
    """Cold switch (first request to a model not loaded) and warm switch (alternating two loaded ones)."""
    cold = timed_post(predict_url.format(model="yolo_b"), bodies[0])
    same = [timed_post(predict_url.format(model="yolo_a"), bodies[0]) for _ in range(repeats)]
    alternating = []
    for i in range(repeats):
        alternating.append(
            timed_post(predict_url.format(model="yolo_b" if i % 2 == 0 else "yolo_a"), bodies[0])
        )
    return {
        "cold_switch_ms": round(cold * 1000, 1),
        "same_model_ms": round(statistics.median(same) * 1000, 1),
        "alternating_ms": round(statistics.median(alternating) * 1000, 1),
    }


def forward_limit(model: Path, cache: Path, images: list[bytes], seconds: float) -> dict[str, Any]:
    """Images/s of the fastest installed runtime alone: one single-threaded stream per core.

    The streams take the clients' images in turn, letterboxed as the server does, so both sides
    do the same mix of input shapes.
    """
    import cv2  # noqa: PLC0415  (heavy imports of the server package, only for this line)
    import numpy as np  # noqa: PLC0415
    from ailab_serving.engines import OnnxEngine, OpenVinoEngine, export_onnx  # noqa: PLC0415
    from ailab_serving.images import letterbox, network_shape  # noqa: PLC0415
    from ailab_serving.runtime import CPU_RUNTIMES, installed_packages  # noqa: PLC0415

    cores = os.cpu_count() or 1
    runtime = next(r for r in CPU_RUNTIMES if r in installed_packages())
    onnx = export_onnx(model, cache, 640)
    if runtime == "openvino":
        engine: Any = OpenVinoEngine(onnx, workers=cores, threads=1, default_imgsz=640)
    else:
        engine = OnnxEngine(onnx, threads=1, default_imgsz=640)
    batches = []
    for image in images:
        decoded = cv2.imdecode(np.frombuffer(image, np.uint8), cv2.IMREAD_COLOR)
        batches.append(letterbox(decoded, network_shape(decoded.shape[:2], 640, 32, rect=True)).array[None])
    counts = [0] * cores
    for stream in range(cores):
        for batch in batches:
            engine.forward(batch, stream)
    stop_at = time.perf_counter() + seconds

    def stream_loop(stream: int) -> None:
        while time.perf_counter() < stop_at:
            engine.forward(batches[(counts[stream] + stream) % len(batches)], stream)
            counts[stream] += 1

    started = time.perf_counter()
    run_threads(stream_loop, cores)
    rate = sum(counts) / (time.perf_counter() - started)
    shapes = [list(b.shape) for b in batches]
    return {"runtime": runtime, "streams": cores, "shapes": shapes, "images_per_s": round(rate, 2)}


def overload(
    url: str, bodies: list[tuple[bytes, str]], clients: int, seconds: float, delay_ms: float, *, backoff: bool
) -> Overload:
    refused: list[float] = []
    accepted, errors, wall = closed_loop(
        url, bodies, clients, seconds, 10**9, refused=refused, backoff=backoff
    )

    def ms(values: list[float], q: float) -> float:
        return round(percentile(values, q) * 1000, 1) if values else float("nan")

    return Overload(
        clients=clients,
        backoff=backoff,
        queue_delay_ms=delay_ms,
        seconds=round(wall, 2),
        goodput=round(len(accepted) / wall, 2),
        accepted=len(accepted),
        refused=len(refused),
        errors=errors,
        accepted_p50_ms=ms(accepted, 0.5),
        accepted_p99_ms=ms(accepted, 0.99),
        refused_p50_ms=ms(refused, 0.5),
        refused_p99_ms=ms(refused, 0.99),
    )


VARIANTS = {
    "server": {},  # the defaults: ONNX Runtime, one single-threaded worker per core, no batching
    "server-torch": {"AILAB_SERVE_BACKEND": "torch"},
    "server-batch8": {
        "AILAB_SERVE_WORKERS": "1",
        "AILAB_SERVE_THREADS_PER_WORKER": str(os.cpu_count() or 1),
        "AILAB_SERVE_MAX_BATCH_SIZE": "8",
        "AILAB_SERVE_MAX_BATCH_WAIT_MS": "10",
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="1,4,8", help="concurrency levels (comma list)")
    parser.add_argument("--seconds", type=float, default=20, help="duration of each level")
    parser.add_argument("--max-requests", type=int, default=100_000, help="bound on requests per level")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per level")
    parser.add_argument("--all", action="store_true", help="also run the torch and CPU-batching variants")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 and 2 clients, 6 requests each")
    parser.add_argument(
        "--queue-delay-ms", type=float, default=300, help="the server's queue deadline (overload line)"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    overload_seconds = args.seconds
    if args.quick:
        levels, args.seconds, args.max_requests, args.rounds, overload_seconds = [1, 2], 30, 6, 1, 3
    variants = list(VARIANTS) if args.all else ["server"]
    os.environ.setdefault("YOLO_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="ailab-bench-") as tmp:
        work = Path(tmp)
        models = work / "models"
        make_plain_model(models / "yolo_a.pt", seed=1)
        make_plain_model(models / "yolo_b.pt", seed=2)
        bodies = [multipart(image) for image in load_images()]
        runs: list[Run] = []
        switches: dict[str, dict[str, float]] = {}
        targets = [("baseline", *baseline(models, work), "{base}/predict/{{model}}")]
        for name in variants:
            extra = {**VARIANTS[name], "AILAB_SERVE_MAX_QUEUE_DELAY_MS": str(args.queue_delay_ms)}
            targets.append((name, *server(models, work, name, extra), "{base}/v1/predict/{{model}}"))
        with contextlib.ExitStack() as stack:
            # All servers run at once (idle ones cost nothing) and the measurements interleave in
            # short rounds, so a machine whose load changes (shared CI runners) treats them alike.
            urls = {}
            for name, base, ctx, pattern in targets:
                stack.enter_context(ctx)
                urls[name] = pattern.format(base=base)
                for _ in range(3):  # load, warm up, fill caches
                    timed_post(urls[name].format(model="yolo_a"), bodies[0])
            images = load_images()
            limit_seconds = 3.0 if args.quick else args.seconds / 2
            limits = [forward_limit(models / "yolo_a.pt", work / "forward", images, limit_seconds)]
            for clients in levels:
                collected = {name: ([], 0, 0.0) for name in urls}
                for _round in range(args.rounds):
                    for name, url in urls.items():
                        lat, err, secs = closed_loop(
                            url.format(model="yolo_a"),
                            bodies,
                            clients,
                            args.seconds / args.rounds,
                            max(1, args.max_requests // args.rounds),
                        )
                        old = collected[name]
                        collected[name] = (old[0] + lat, old[1] + err, old[2] + secs)
                for name, (lat, err, secs) in collected.items():
                    run = summarise(name, clients, lat, err, secs)
                    runs.append(run)
                    print(
                        f"  {name:14} {clients} clients: {run.throughput} req/s, p50 {run.p50_ms} ms, "
                        f"p99 {run.p99_ms} ms, {run.errors} errors",
                        file=sys.stderr,
                    )
            limits.append(forward_limit(models / "yolo_a.pt", work / "forward", images, limit_seconds))
            limit = {
                **limits[0],
                "images_per_s": round(statistics.mean(x["images_per_s"] for x in limits), 2),
            }
            overloads = [
                overload(
                    urls["server"].format(model="yolo_a"),
                    bodies,
                    10 * max(levels),
                    overload_seconds,
                    args.queue_delay_ms,
                    backoff=backoff,
                )
                for backoff in (False, True)
            ]
            for over in overloads:
                print(f"  overload: {over}", file=sys.stderr)
            for name, url in urls.items():
                switches[name] = model_switch(url, bodies, 2 if args.quick else 6)

    report = render(runs, switches, levels, limit, overloads)
    print(report)
    if args.json:
        result = {
            "runs": [asdict(r) for r in runs],
            "switch": switches,
            "forward_limit": limit,
            "overload": [asdict(o) for o in overloads],
        }
        args.json.write_text(json.dumps(result, indent=2))
    return 0 if all(r.requests > 0 for r in runs) and all(o.accepted > 0 for o in overloads) else 1


def render(
    runs: list[Run],
    switches: dict[str, dict[str, float]],
    levels: list[int],
    limit: dict[str, Any],
    overloads: list[Overload],
) -> str:
    by = {(r.target, r.clients): r for r in runs}
    lines = [
        f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, "
        f"load average at the end {os.getloadavg()[0]:.1f}",
        "",
        "| target | clients | req/s | vs baseline | p50 ms | p99 ms | p99/p50 | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for target in dict.fromkeys(r.target for r in runs):
        for clients in levels:
            run = by.get((target, clients))
            if run is None:
                continue
            base = by.get(("baseline", clients))
            ratio = f"{run.throughput / base.throughput:.2f}x" if base and base.throughput else "-"
            spread = f"{run.p99_ms / run.p50_ms:.2f}" if run.p50_ms else "-"
            lines.append(
                f"| {target} | {clients} | {run.throughput} | {ratio} | {run.p50_ms} | {run.p99_ms} | "
                f"{spread} | {run.errors} |"
            )
    top = by.get(("server", max(levels)))
    share = f"{top.throughput / limit['images_per_s']:.0%}" if top and limit["images_per_s"] else "-"
    lines += [
        "",
        f"Forward only ({limit['runtime']}, {limit['streams']} single-threaded streams, shapes "
        f"{' and '.join('x'.join(map(str, s[2:])) for s in limit['shapes'])}): "
        f"**{limit['images_per_s']} img/s**; the server at {max(levels)} clients reaches {share} of it.",
    ]
    for over in overloads:
        clients = "wait Retry-After after a 429" if over.backoff else "resend at once after a 429"
        lines += [
            "",
            f"Overload: {over.clients} clients that {clients}, queue deadline {over.queue_delay_ms:g} ms, "
            f"{over.seconds} s: goodput **{over.goodput} req/s**"
            + (
                f" ({over.goodput / top.throughput:.0%} of {max(levels)} clients)"
                if top and top.throughput
                else ""
            )
            + f", {over.accepted} accepted (p50 {over.accepted_p50_ms} ms, p99 {over.accepted_p99_ms} ms), "
            f"{over.refused} refused with 429 (p50 {over.refused_p50_ms} ms, p99 {over.refused_p99_ms} ms), "
            f"{over.errors} other errors.",
        ]
    lines += [
        "",
        "| target | cold switch ms | same model ms | alternating two models ms |",
        "|---|---|---|---|",
    ]
    for target, s in switches.items():
        lines.append(f"| {target} | {s['cold_switch_ms']} | {s['same_model_ms']} | {s['alternating_ms']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
