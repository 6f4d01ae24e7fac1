"""The explorer's web server (aiohttp): the page, its static files, one WebSocket per page.

Each connected page owns one Session (one medium). Its messages are checked
(messages.parse) and applied in a worker thread under the connection's lock; while the
medium runs, a pump advances it one frame at a time (at most `max_fps` frames a
second) and sends each frame as one binary message (session.FRAME_HEADER, uint8
pixels). A refused message gets {"type": "error", "message": one line} and the
connection goes on; a page that goes away ends its own pump and frees its medium,
nothing else. A WebSocket from a page served by another origin is refused (a web site
open in the same browser must not drive a local explorer).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import traceback
from pathlib import Path

from aiohttp import WSMsgType, web

from explorer.messages import MAX_IMAGE_BYTES, MessageError, parse
from explorer.session import Session
from substrate import SimulationError

STATIC = Path(__file__).resolve().parent / "static"
MAX_FPS = 30
IDLE_POLL_S = 0.05
TARGET_MESSAGES = ("pattern", "clear_pattern", "new", "load", "rule")
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
log = logging.getLogger("explorer")
FOLDER, GRID = web.AppKey("folder", Path), web.AppKey("grid", int)
MAX_PAGES, FPS, PAGES = web.AppKey("max_pages", int), web.AppKey("max_fps", float), \
    web.AppKey("pages", set)
LOOPBACK = web.AppKey("loopback", bool)


class Connection:
    """One page: its session, the lock that orders its messages and frames, its pump."""

    def __init__(self, ws: web.WebSocketResponse, session: Session, max_fps: float):
        self.ws, self.session, self.interval = ws, session, 1.0 / max_fps
        self.lock = asyncio.Lock()

    async def send(self, payload) -> bool:
        """Send JSON (dict) or a frame (bytes); False once the page has gone."""
        if self.ws.closed:
            return False
        try:
            if isinstance(payload, bytes):
                await self.ws.send_bytes(payload)
            else:
                await self.ws.send_json(payload)
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def send_view(self, with_target: bool = False) -> None:
        async with self.lock:
            frames = [self.session.frame()] + ([self.session.frame("target")] if with_target
                                               else [])
            state = self.session.state()
        for frame in frames:
            await self.send(frame)
        await self.send(state)

    async def _apply(self, work, *args):
        """Run session work in a thread under the lock; errors become one line back."""
        try:
            async with self.lock:
                return await asyncio.to_thread(work, *args), None
        except (MessageError, ValueError, FileNotFoundError, SimulationError) as exc:
            return None, str(exc)
        except Exception as exc:   # a bug: keep serving, say so, log the traceback
            log.error("explorer: internal error\n%s", traceback.format_exc())
            return None, f"internal error ({exc.__class__.__name__}); the server goes on"

    async def on_text(self, text: str) -> None:
        try:
            msg = parse(text, self.session.limits())
        except MessageError as exc:
            await self.send({"type": "error", "message": str(exc)})
            return
        if msg["type"] == "list":
            await self.send(self.session.state())
            return
        event, error = await self._apply(self.session.apply, msg)
        if error:
            await self.send({"type": "error", "message": error})
        elif event and event.get("type") != "frame":
            await self.send(event)
        await self.send_view(with_target=msg["type"] in TARGET_MESSAGES or
                             (msg["type"] == "paint" and msg["layer"] == "target"))

    async def on_image(self, data: bytes) -> None:
        event, error = await self._apply(self.session.load_image, data)
        await self.send({"type": "error", "message": error} if error else event)
        await self.send_view(with_target=True)

    async def pump(self) -> None:
        """While the medium runs: advance a frame, send it, keep to the frame rate."""
        loop = asyncio.get_running_loop()
        while not self.ws.closed:
            start = loop.time()
            if not self.session.running:
                await asyncio.sleep(IDLE_POLL_S)
                continue
            event, error = await self._apply(self._advance)
            if error:
                self.session.running = False
                if not await self.send({"type": "error", "message": error}):
                    return
                continue
            frame, note = event
            if not await self.send(frame):
                return
            if note:
                await self.send(note)
                await self.send(self.session.state())
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - start)))

    def _advance(self):
        if not self.session.running:
            return self.session.frame(), None
        note = self.session.advance()
        return self.session.frame(), note


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin in (f"http://{request.host}", f"https://{request.host}")


async def websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    if not _same_origin(request):
        raise web.HTTPForbidden(text="the explorer's channel is for its own page only")
    ws = web.WebSocketResponse(max_msg_size=MAX_IMAGE_BYTES + 4096, heartbeat=20.0)
    await ws.prepare(request)
    pages = app[PAGES]
    if len(pages) >= app[MAX_PAGES]:
        await ws.send_json({"type": "error", "message": f"{len(pages)} pages are connected "
                            f"(the limit, --max-pages); close one and reload"})
        await ws.close()
        return ws
    pages.add(ws)
    pump = None
    try:
        session = await asyncio.to_thread(Session, app[FOLDER], app[GRID])
        connection = Connection(ws, session, app[FPS])
        pump = asyncio.create_task(connection.pump())
        await connection.send_view(with_target=True)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await connection.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await connection.on_image(msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        pages.discard(ws)
    return ws


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


def _host_name(host: str) -> str:
    """The name part of a Host header ("127.0.0.1:8765", "[::1]:8765", "localhost")."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@web.middleware
async def security_headers(request, handler):
    # Bound to loopback, only loopback names are served: a page whose own name was made
    # to point at this machine (DNS rebinding) gets nothing
    if request.app[LOOPBACK] and not is_loopback(_host_name(request.host)):
        raise web.HTTPForbidden(text="the explorer answers to localhost and 127.0.0.1 only")
    response = await handler(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def make_app(folder, grid: int = 128, max_pages: int = 4, max_fps: float = MAX_FPS,
             host: str = "127.0.0.1"):
    """The explorer's aiohttp application. folder: the only place it reads and writes;
    host: the address it will listen on (loopback: it answers to loopback names only)."""
    app = web.Application(client_max_size=64 << 10, middlewares=[security_headers])
    app[LOOPBACK] = is_loopback(host)
    app[FOLDER], app[GRID] = Path(folder), int(grid)
    app[MAX_PAGES], app[FPS], app[PAGES] = int(max_pages), float(max_fps), set()
    app.router.add_get("/", index)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/favicon.ico", no_icon)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(app, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving app; returns the runner and the port bound (port 0: a free one)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
