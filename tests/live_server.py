"""The app `python app.py` serves, run in-process on a free localhost port for tests that need real HTTP."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 300  # generous: the test machine may be busy with other work


@dataclass
class LiveServer:
    url: str
    cache_dir: Path  # Gradio's cache (GRADIO_TEMP_DIR): uploads, overlays and reports live here
    _server: object
    _thread: threading.Thread

    def stop(self) -> None:
        """Shut down as on Ctrl+C (the app's shutdown hooks run); safe to call twice."""
        self._server.should_exit = True
        self._thread.join(timeout=60)
        if self._thread.is_alive():
            raise RuntimeError("the app server did not stop within 60 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(model_spec: str, cache_dir: Path):
    import app

    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(cache_dir)
    try:
        port = free_port()
        server = app.server(app.create_app(model_spec), "127.0.0.1", port)
        thread = threading.Thread(target=server.run, name="app-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.05)
        live = LiveServer(f"http://127.0.0.1:{port}", cache_dir, server, thread)
        try:
            yield live
        finally:
            live.stop()
    finally:
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
