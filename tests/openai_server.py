"""A real, local OpenAI-compatible HTTP server for tests and benchmarks.

It speaks enough HTTP/1.1 (keep-alive, Content-Length) for the official `openai` client, runs an
asyncio server in a background thread on 127.0.0.1 (a free port), records every request, and answers
with whatever a test scripts, faults included:

    from tests.openai_server import OpenAIServer, Reply, completion, error

    def answer(req):                       # called for every request not served from the queue
        return '{"ok": true}'              # a str becomes a chat completion with that content

    with OpenAIServer(answer, latency=0.2) as srv:
        srv.enqueue(error(429, retry_after=1), Reply(drop=True), Reply(delay=30))  # served first, in order
        client = openai.OpenAI(base_url=srv.url, api_key="not-needed")
        ...
        srv.requests[0].body["messages"]   # every request received, in arrival order

A handler returns a `Reply`, a `str` (the assistant's content), or a `dict` (a 200 JSON body as is);
an exception in the handler becomes a 500 naming it. `Reply(delay=s)` answers late (past the client's
timeout = a timeout fault), `Reply(drop=True)` closes the connection without answering, `Reply(text=...)`
sends a raw (e.g. malformed) body. `python -m tests.openai_server --latency 0.2 --content '{...}'` serves
a fixed answer from a separate process and prints its URL (benchmarks use that to keep the server off
the client's interpreter).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self


@dataclass
class Reply:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages", []) if isinstance(self.body, dict) else []

    @property
    def user_text(self) -> str:
        """Content of the last user message ('' if none)."""
        users = [m.get("content") or "" for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


_ids = itertools.count()


def completion(
    content: str,
    *,
    model: str = "test-model",
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    finish_reason: str = "stop",
) -> Reply:
    """A 200 chat completion whose assistant message is `content`."""
    return Reply(
        json={
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def error(status: int, message: str = "injected fault", *, retry_after: float | None = None) -> Reply:
    """An OpenAI-shaped error body with `status` (and a Retry-After header when given)."""
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return Reply(status=status, json={"error": {"message": message, "type": "test", "code": status}},
                 headers=headers)


Handler = Callable[[Request], "Reply | str | dict"]


class OpenAIServer:
    """Start with `with OpenAIServer(handler) as srv:` (or `.start()` / `.stop()`); `srv.url` is the base_url."""

    def __init__(self, handler: Handler | None = None, *, latency: float = 0.0):
        self.handler: Handler = handler or (lambda req: req.user_text)
        self.latency = latency
        self.requests: list[Request] = []
        self._queue: deque[Reply | str | dict] = deque()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def enqueue(self, *replies: Reply | str | dict) -> None:
        """Serve these replies to the next requests, in order, before falling back to the handler."""
        with self._lock:
            self._queue.extend(replies)

    def clear(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()

    # lifecycle ---------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=512)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="openai-test-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # HTTP ----------------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                req = Request(method, path, headers, body, time.monotonic())
                with self._lock:
                    self.requests.append(req)
                    queued = self._queue.popleft() if self._queue else None
                reply = self._as_reply(queued if queued is not None else self._call_handler(req))
                if self.latency or reply.delay:
                    await asyncio.sleep(self.latency + reply.delay)
                if reply.drop:
                    writer.transport.abort()
                    return
                writer.write(self._encode(reply))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def _call_handler(self, req: Request) -> Reply | str | dict:
        try:
            return self.handler(req)
        except Exception as e:  # noqa: BLE001 (a broken test handler should be visible, not hang the client)
            return error(500, f"handler raised {type(e).__name__}: {e}")

    @staticmethod
    def _as_reply(r: Reply | str | dict) -> Reply:
        if isinstance(r, Reply):
            return r
        if isinstance(r, str):
            return completion(r)
        return Reply(json=r)

    @staticmethod
    def _encode(r: Reply) -> bytes:
        body = (r.text if r.text is not None else json.dumps(r.json if r.json is not None else {})).encode()
        try:
            reason = HTTPStatus(r.status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {r.status} {reason}", "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in r.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve a fixed chat completion until killed.")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--content", default="{}", help="the assistant message content of every answer")
    args = ap.parse_args()
    srv = OpenAIServer(lambda req: args.content, latency=args.latency).start()
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":
    main()
