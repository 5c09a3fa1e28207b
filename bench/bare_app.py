"""The ceiling: a bare Flask app with ``/healthz`` under the same gunicorn settings as
``idv serve`` (``service.http.server.configure``: the same worker class, workers and threads).
Every idv figure is read as a ratio to it.

    python bench/bare_app.py --port 8081 --workers 1 --threads 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from flask import Flask, jsonify
from gunicorn.app.base import BaseApplication

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.http.server import configure  # noqa: E402
from service.settings import Settings  # noqa: E402


def create_app() -> Flask:
    """A Flask app that answers ``/healthz`` like idv does, and nothing else."""
    app = Flask("bare")

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok"})

    return app


class Server(BaseApplication):  # type: ignore[misc]
    """``app`` under gunicorn, configured as ``idv serve`` configures itself (also
    ``floor_app.py``'s server)."""

    def __init__(
        self, bind: str, workers: int, threads: int, app: Callable[[], Flask] = create_app
    ) -> None:
        self.bind, self.workers, self.threads, self.app = bind, workers, threads, app
        super().__init__()

    def load_config(self) -> None:
        # IDV_PIN_THREADS and IDV_CLIENT_TIMEOUT, read as idv serve reads them
        configure(
            self.cfg,
            Settings.from_env(),
            bind=self.bind,
            workers=self.workers,
            threads=self.threads,
        )

    def load(self) -> Flask:
        return self.app()


def main() -> None:
    """Serve the bare app."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    Server(f"{args.host}:{args.port}", args.workers, args.threads).run()


if __name__ == "__main__":
    main()
