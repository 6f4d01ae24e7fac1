"""python -m explorer: serve the explorer page and print its address.

    python -m explorer                     # http://127.0.0.1:8765/, a 128 x 128 medium
    python -m explorer --port 0 --grid 256 # any free port; a 256 x 256 medium
"""
from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import dataclass

from common import cli
from common.cli import arg

MAX_GRID = 512   # explorer.messages.MAX_GRID (repeated: --help must not import torch)


@dataclass
class Args:
    host: str = arg("127.0.0.1", "address to listen on; anything but a loopback address "
                                 "lets other machines drive the explorer")
    port: int = arg(8765, "port (0: any free one)", lo=0, hi=65535)
    grid: int = arg(128, "grid side of each page's medium (the page can change it)", lo=16,
                    hi=MAX_GRID)
    folder: str = arg("scarring_results/explorer", "the explorer's own folder: saved sessions "
                      "in FOLDER/sessions, uploaded images pass through FOLDER/uploads; it "
                      "reads and writes nowhere else")
    threads: int = arg(1, "torch CPU threads", lo=1, hi=256)
    max_pages: int = arg(4, "pages connected at once (each holds its own medium)", lo=1,
                         hi=64)


def reach_note(host: str, port: int) -> str:
    """Who can reach a server bound to a non-loopback address."""
    if host in ("0.0.0.0", "::", ""):
        try:
            addresses = sorted(set(socket.gethostbyname_ex(socket.gethostname())[2]))
        except OSError:
            addresses = []
        where = f" (this machine: {', '.join(addresses)})" if addresses else ""
        return (f"listening on every network interface{where}: anyone who can reach this "
                f"machine on port {port} can drive the explorer and write session files; "
                f"there is no password")
    return (f"listening on {host}: anyone who can reach that address on port {port} can "
            f"drive the explorer and write session files; there is no password")


async def _main(args: Args) -> None:
    from explorer.server import is_loopback, make_app, serve

    app = make_app(args.folder, args.grid, args.max_pages, host=args.host)
    runner, port = await serve(app, args.host, args.port)
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(
        args.host, f"[{args.host}]" if ":" in args.host else args.host)   # what to open here
    print(f"explorer: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True)
    if not is_loopback(args.host):
        print(f"explorer: WARNING: {reach_note(args.host, port)}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv=None) -> None:
    args = cli.parse(Args, argv, description=__doc__.splitlines()[0])
    cli.apply_threads(args.threads)
    try:
        asyncio.run(_main(args))
    except OSError as exc:   # the port is taken, the address is not this machine's
        raise ValueError(f"--host {args.host} --port {args.port}: cannot listen "
                         f"({exc.strerror or exc})") from None
    except KeyboardInterrupt:
        print("explorer: stopped", file=sys.stderr)


if __name__ == "__main__":
    cli.run_cli(main)
