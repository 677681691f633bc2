"""An OpenAI-compatible chat endpoint on loopback, served by uvicorn in a thread, for tests that
call experts over real HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route


@contextlib.contextmanager
def chat_server(completions) -> Iterator[str]:
    """Serves `completions` (a Starlette handler) at /v1/chat/completions; yields the base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.should_exit = True
        thread.join(timeout=5)
