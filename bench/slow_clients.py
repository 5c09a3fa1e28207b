"""The slow-client attack of issue 20 (item 5), against a running server.

``drippers`` connections each send a request line, then one header line every ``period``
seconds and never the blank line that ends the head; a connection the server drops (or
answers) is opened again at once. Meanwhile a normal caller asks ``GET /healthz`` ``tries``
times, each with a deadline of ``deadline`` seconds.

    python bench/slow_clients.py http://127.0.0.1:8080            # the issue's bar
    python bench/slow_clients.py http://127.0.0.1:8080 --drippers 80 --tries 40

Prints how many tries were answered in time and their p50 / max latency. The bar (issue 20):
40 drippers every 2 s, at least 15 of 20 tries answered within 3 s.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Outcome:
    """What the normal caller saw, and how often the drippers had to reconnect."""

    answered: list[float] = field(default_factory=list)  # latencies of the answers in time
    failed: int = 0
    reconnects: int = 0

    def summary(self) -> str:
        """One line: answered in time, p50 and max latency, reconnections."""
        lat = sorted(self.answered)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        worst = lat[-1] if lat else float("nan")
        total = len(self.answered) + self.failed
        return (
            f"{len(self.answered)}/{total} answered in time, p50 {p50 * 1000:.0f} ms, "
            f"max {worst * 1000:.0f} ms, {self.reconnects} reconnections"
        )


def _drip(
    host: str, port: int, drippers: int, period: float, stop: threading.Event, out: Outcome
) -> None:
    """Keep ``drippers`` connections dripping header lines until ``stop`` is set."""
    sel = selectors.DefaultSelector()
    lines = [0] * drippers

    def connect(i: int) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=2)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: idv\r\n")
        except OSError:
            return
        sock.setblocking(False)
        lines[i] = 0
        sel.register(sock, selectors.EVENT_READ, i)

    for i in range(drippers):
        connect(i)
    next_drip = time.monotonic() + period
    while not stop.is_set():
        for key, _ in sel.select(timeout=max(0.0, min(0.2, next_drip - time.monotonic()))):
            with contextlib.suppress(OSError):  # closed or answered: open it again at once
                key.fileobj.recv(65536)  # type: ignore[union-attr]
            sel.unregister(key.fileobj)
            key.fileobj.close()  # type: ignore[union-attr]
            out.reconnects += 1
            connect(key.data)
        open_now = {key.data for key in sel.get_map().values()}
        for i in set(range(drippers)) - open_now:
            connect(i)
        if time.monotonic() >= next_drip:
            next_drip += period
            for key in list(sel.get_map().values()):
                lines[key.data] += 1
                try:
                    key.fileobj.send(b"X-Drip-%d: a\r\n" % lines[key.data])  # type: ignore[union-attr]
                except OSError:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()  # type: ignore[union-attr]
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()


def _healthz(host: str, port: int, deadline: float) -> bool:
    """One ``GET /healthz`` on a new connection (as a caller without a pool makes it): 200?"""
    try:
        with socket.create_connection((host, port), timeout=deadline) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: idv\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return False
    return data.startswith(b"HTTP/1.1 200 ")


def attack(
    url: str,
    *,
    drippers: int = 40,
    period: float = 2.0,
    tries: int = 20,
    deadline: float = 3.0,
    warmup: float = 3.0,
) -> Outcome:
    """Run the attack against ``url`` and return what the normal caller saw."""
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    out = Outcome()
    stop = threading.Event()
    thread = threading.Thread(
        target=_drip, args=(host, int(port), drippers, period, stop, out), daemon=True
    )
    thread.start()
    try:
        time.sleep(warmup)  # every dripper connected and a line or two in
        for _ in range(tries):
            started = time.monotonic()
            ok = _healthz(host, int(port), deadline)
            took = time.monotonic() - started
            if ok and took <= deadline:
                out.answered.append(took)
            else:
                out.failed += 1
            time.sleep(max(0.0, 0.5 - took))
    finally:
        stop.set()
        thread.join(timeout=10)
    return out


def main() -> None:
    """Command line: attack a running server and print the outcome."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--drippers", type=int, default=40)
    parser.add_argument("--period", type=float, default=2.0)
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=3.0)
    args = parser.parse_args()
    outcome = attack(
        args.url,
        drippers=args.drippers,
        period=args.period,
        tries=args.tries,
        deadline=args.deadline,
    )
    print(outcome.summary())


if __name__ == "__main__":
    main()
