"""Load test of POST /inference: N concurrent clients × M requests each, loopback only, bounded in time.

    python scripts/load_test.py --spawn [--model DIR_OR_HUB_ID] [--clients 16] [--requests 10]
    python scripts/load_test.py --url http://127.0.0.1:7860

--spawn starts `python app.py` (the whole app: UI, Gradio API and REST) on a free loopback port with
the given model (default: the app's default, i.e. SKIN_MODEL or the bundled default_model/), and stops
it afterwards. Every answer must be 200 and correct: the same prediction and probabilities as a first,
sequential request for the same image, and a heatmap PNG of the image's size. A 503 (server busy) is
retried after its Retry-After and counted. Prints throughput, latency percentiles, errors and the
server's memory (RSS: after warm-up, after the run, peak); exits 1 on any error, or when RSS after the
run exceeds --max-rss-growth × RSS after warm-up (needs the server's pid: --spawn or --pid).
"""
from __future__ import annotations

import argparse
import base64
import io
import ipaddress
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import psutil
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
MB = 1024 * 1024


@dataclass
class Sample:
    image: str            # file name
    payload: bytes        # the JSON body, encoded once
    size: tuple[int, int]  # (width, height) the heatmap must have
    reference: dict | None = None


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    busy_retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def busy(self) -> None:
        with self.lock:
            self.busy_retries += 1


class RssMonitor(threading.Thread):
    """Samples the server's resident memory (its child processes included) every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.process, self.interval = psutil.Process(pid), interval
        self.peak, self._stop_event = 0, threading.Event()

    def current(self) -> int:
        try:
            processes = [self.process] + self.process.children(recursive=True)
            return sum(p.memory_info().rss for p in processes if p.is_running())
        except psutil.Error:
            return 0

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, self.current())

    def stop(self) -> None:
        self._stop_event.set()


def load_samples(paths: list[Path]) -> list[Sample]:
    samples = []
    for path in paths:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            size = ImageOps.exif_transpose(image).size
        body = json.dumps({"image_data": base64.b64encode(data).decode("ascii")}).encode()
        samples.append(Sample(path.name, body, size))
    return samples


def check_answer(sample: Sample, response: httpx.Response) -> str | None:
    """None when the answer is right, else what is wrong with it."""
    if response.status_code != 200:
        return f"{sample.image}: HTTP {response.status_code} {response.text[:200]}"
    try:
        body = response.json()
        classes, probabilities = body["classes"], np.asarray(body["probabilities"], float)
        if len(classes) != 7 or probabilities.shape != (7,) or abs(probabilities.sum() - 1) > 1e-4:
            return f"{sample.image}: malformed classes/probabilities"
        if body["predicted_label"] != classes[int(probabilities.argmax())]:
            return f"{sample.image}: predicted_label is not the most probable class"
        reference = sample.reference
        if reference is not None and (body["predicted_label"] != reference["predicted_label"]
                                      or classes != reference["classes"]
                                      or np.abs(probabilities - reference["probabilities"]).max() > 1e-4):
            return f"{sample.image}: answer differs from the first answer for the same image"
        with Image.open(io.BytesIO(base64.b64decode(body["heatmap"], validate=True))) as heatmap:
            if heatmap.format != "PNG" or heatmap.size != sample.size:
                return f"{sample.image}: heatmap is {heatmap.format} {heatmap.size}, expected PNG {sample.size}"
    except (ValueError, KeyError, TypeError, OSError) as exc:
        return f"{sample.image}: unreadable answer ({exc.__class__.__name__}: {exc})"
    return None


def post(client: httpx.Client, sample: Sample, deadline: float, results: Results) -> httpx.Response | None:
    """POST one sample, retrying 503s after Retry-After, until the deadline."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            results.error(f"{sample.image}: no answer before the time limit")
            return None
        start = time.monotonic()
        try:
            response = client.post("/inference", content=sample.payload, timeout=remaining,
                                   headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            results.error(f"{sample.image}: {exc.__class__.__name__}: {exc}")
            return None
        if response.status_code == 503 and "retry-after" in response.headers:
            results.busy()
            time.sleep(min(float(response.headers["retry-after"]), max(deadline - time.monotonic(), 0)))
            continue
        error = check_answer(sample, response)
        if error:
            results.error(error)
        else:
            results.ok(time.monotonic() - start)
        return response


def run_clients(base_url: str, samples: list[Sample], clients: int, requests: int, deadline: float,
                results: Results) -> float:
    """`clients` threads, each sending `requests` requests (cycling through the samples); wall seconds."""
    def client_loop(index: int) -> None:
        with httpx.Client(base_url=base_url) as client:
            for n in range(requests):
                post(client, samples[(index + n) % len(samples)], deadline, results)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 0) + 5)
    if any(thread.is_alive() for thread in threads):
        results.error("client threads still running after the time limit")
    return time.monotonic() - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(model: str | None, backend: str | None, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    if model:
        command += ["--model", model]
    if backend:
        command += ["--backend", backend]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    return process, f"http://127.0.0.1:{port}"


def wait_until_healthy(base_url: str, timeout: float, process: subprocess.Popen | None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready")
        try:
            response = httpx.get(f"{base_url}/health", timeout=5)
            if response.status_code == 200 and response.json().get("ready"):
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready within {timeout:g} s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


def require_loopback(url: str) -> str:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"error: {url} is not a loopback address; this script only loads local servers.")
    return url.rstrip("/")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--spawn", action="store_true", help="start `python app.py` on a free loopback port")
    target.add_argument("--url", help="a server already running on this machine (loopback only)")
    parser.add_argument("--model", help="with --spawn: checkpoint folder or Hub id (default: the app's default)")
    parser.add_argument("--backend", choices=("torch", "onnx", "auto"), help="with --spawn: inference backend")
    parser.add_argument("--pid", type=int, help="with --url: the server's pid, to measure its memory")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (default 10)")
    parser.add_argument("--timeout", type=float, default=300,
                        help="seconds allowed for warm-up plus load, after the server is ready (default 300)")
    parser.add_argument("--startup-timeout", type=float, default=600,
                        help="seconds allowed for the spawned server to load its model (default 600)")
    parser.add_argument("--max-rss-growth", type=float, default=1.1,
                        help="fail when RSS after the run exceeds this × RSS after warm-up (default 1.1)")
    parser.add_argument("--images", nargs="+", type=Path,
                        default=sorted(EXAMPLES.glob("*.jpg")), help="images to send (default: examples/*.jpg)")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be at least 1")
    if not args.images:
        parser.error("no images: pass --images")

    samples = load_samples(args.images)
    process, log = None, tempfile.TemporaryFile()
    try:
        if args.spawn:
            process, base_url = spawn_server(args.model, args.backend, log)
            pid = process.pid
        else:
            base_url, pid = require_loopback(args.url), args.pid
        started = time.monotonic()
        health = wait_until_healthy(base_url, args.startup_timeout, process)
        startup_s = time.monotonic() - started
        monitor = RssMonitor(pid) if pid else None
        rss_ready = monitor.current() if monitor else 0
        if monitor:
            monitor.start()
        deadline = time.monotonic() + args.timeout
        results = Results()

        # Warm-up: one sequential request per image gives each image's reference answer, then one
        # concurrent burst lets the server reach its working set (threads, allocator pools, caches).
        warmup = Results()
        with httpx.Client(base_url=base_url) as client:
            for sample in samples:
                response = post(client, sample, deadline, warmup)
                if response is not None and response.status_code == 200:
                    sample.reference = response.json()
                    sample.reference["probabilities"] = np.asarray(sample.reference["probabilities"])
        if not warmup.errors:
            run_clients(base_url, samples, args.clients, 1, deadline, warmup)
        rss_warm = monitor.current() if monitor else 0

        if not warmup.errors:
            wall = run_clients(base_url, samples, args.clients, args.requests, deadline, results)
        else:
            wall = 0.0
        rss_after = monitor.current() if monitor else 0
        if monitor:
            monitor.stop()
            monitor.peak = max(monitor.peak, rss_after)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _print_server_log(log)
        return 2
    finally:
        if process is not None:
            stop_server(process)

    errors = warmup.errors + results.errors
    leaked = _server_log_mentions(log, samples)
    if leaked:
        errors.append("the server's output contains image data")
    lat = results.latencies
    report = {
        "model": health["model"], "clients": args.clients, "requests_per_client": args.requests,
        "startup_s": round(startup_s, 1), "wall_s": round(wall, 2), "ok": len(lat), "errors": len(errors),
        "busy_retries": warmup.busy_retries + results.busy_retries,
        "throughput_rps": round(len(lat) / wall, 3) if wall else 0.0,
        "latency_s": {"p50": percentile(lat, 50), "p95": percentile(lat, 95), "p99": percentile(lat, 99),
                      "mean": statistics.fmean(lat) if lat else float("nan"), "max": max(lat, default=float("nan"))},
        "rss_mb": {"ready": rss_ready / MB, "after_warmup": rss_warm / MB, "after_run": rss_after / MB,
                   "peak": (monitor.peak / MB) if monitor else 0.0} if pid else None,
    }
    print(f"model {health['model']['id']} ({health['model']['architecture']}, {health['model']['backend']}); "
          f"server ready in {startup_s:.1f} s")
    print(f"{args.clients} clients × {args.requests} requests: {len(lat)} ok, {len(errors)} errors, "
          f"{report['busy_retries']} busy retries, {wall:.1f} s")
    print(f"throughput {report['throughput_rps']:.2f} requests/s")
    print("latency (s): " + ", ".join(f"{k} {v:.3f}" for k, v in report["latency_s"].items()))
    growth_ok = True
    if pid:
        rss = report["rss_mb"]
        growth = rss_after / rss_warm if rss_warm else float("nan")
        growth_ok = bool(rss_warm) and growth <= args.max_rss_growth
        report["rss_growth"] = round(growth, 3)
        print(f"server RSS (MiB): ready {rss['ready']:.0f}, after warm-up {rss['after_warmup']:.0f}, "
              f"after run {rss['after_run']:.0f}, peak {rss['peak']:.0f}; after/warm-up {growth:.3f} "
              f"(limit {args.max_rss_growth:g})")
    for error in errors[:20]:
        print(f"  error: {error}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))
    if errors or len(lat) != args.clients * args.requests:
        print("FAILED: not every request was answered correctly", file=sys.stderr)
        return 1
    if not growth_ok:
        print("FAILED: server memory grew during the run", file=sys.stderr)
        return 1
    return 0


def _server_log_mentions(log, samples: list[Sample]) -> bool:
    """Whether the server printed any piece of the images it was sent (privacy: it must not)."""
    log.seek(0)
    text = log.read()
    for sample in samples:
        encoded = json.loads(sample.payload)["image_data"]
        if any(piece.encode() in text for piece in (encoded[:40], encoded[len(encoded) // 2:][:40], encoded[-40:])):
            return True
    return False


def _print_server_log(log) -> None:
    log.seek(0)
    tail = log.read()[-4000:].decode(errors="replace")
    if tail:
        print("--- server output (last lines) ---\n" + tail, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
