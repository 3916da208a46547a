"""The real server in its own process: cold start, /inference round trips on loopback, peak memory."""
from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set size (Linux VmHWM), in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) * 1024 / 1e6, 1)
    except OSError:
        pass
    return None


class _Client:
    """POSTs /inference over one kept-alive loopback connection."""

    def __init__(self, port: int, image_bytes: bytes, timeout: float):
        self.port, self.timeout = port, timeout
        self.body = json.dumps({"image_data": base64.b64encode(image_bytes).decode("ascii")}).encode()
        self.connection: http.client.HTTPConnection | None = None

    def post(self) -> tuple[float, dict]:
        """(round trip ms, answer); raises OSError while the server is not listening yet."""
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        start = time.perf_counter()
        try:
            self.connection.request("POST", "/inference", self.body, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            raise
        elapsed = (time.perf_counter() - start) * 1000.0
        if response.status != 200:
            raise RuntimeError(f"/inference answered {response.status}: {payload[:300]!r}")
        return elapsed, json.loads(payload)

    def close(self):
        if self.connection is not None:
            self.connection.close()


def measure_server(spec: str, backend: str, image_bytes: bytes, requests: int, start_timeout: float) -> dict:
    """Start `python app.py` for one backend and time it from process start to its answers.

    cold_start_s: from spawning the process to the first answered /inference (import, model load,
    ONNX session, server start, first request). first_request_ms and second_request_ms show whether
    the first request pays for lazy work; rest_inference_ms is the median of `requests` warm round
    trips. peak_rss_mb is read from the server process after all of them.
    """
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(REPO_ROOT / "app.py"), "--model", spec, "--backend", backend,
               "--host", "127.0.0.1", "--port", str(port)]
    client = _Client(port, image_bytes, timeout=max(60.0, start_timeout))
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"the server exited with status {process.returncode}: " + _tail(log))
                if time.perf_counter() - start > start_timeout:
                    raise RuntimeError(f"no answer within {start_timeout:.0f} s: " + _tail(log))
                try:
                    first_ms, answer = client.post()
                    break
                except OSError:
                    time.sleep(0.05)
            cold_start_s = time.perf_counter() - start
            second_ms, _ = client.post()
            warm = [client.post()[0] for _ in range(requests)]
            rss = peak_rss_mb(process.pid)
        finally:
            client.close()
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return {"cold_start_s": round(cold_start_s, 3), "first_request_ms": round(first_ms, 3),
            "second_request_ms": round(second_ms, 3),
            "rest_inference_ms": {"median_ms": round(statistics.median(warm), 3), "min_ms": round(min(warm), 3),
                                  "max_ms": round(max(warm), 3), "samples_ms": [round(x, 3) for x in warm]},
            "peak_rss_mb": rss, "predicted_label": answer.get("predicted_label")}


def _tail(log, limit: int = 1500) -> str:
    log.flush()
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-limit:].strip()
