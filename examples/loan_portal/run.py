"""Start idv and the Lendly portal together on 127.0.0.1, on a throwaway SQLite database.

    python -m examples.loan_portal            # from the repository root

idv runs as a real ``idv serve`` subprocess with a temporary data dir and a file SMS sink (the
portal's developer inbox shows its codes); a client with the ``verify`` and ``carrier`` scopes is
created with ``idv clients create``. Ctrl-C stops both and deletes the data.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
IDV = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def idv_env(data: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "IDV_DATA_DIR": str(data),
        "IDV_DATABASE_URL": f"sqlite:///{data / 'idv.db'}",
        "IDV_SMS_SENDER": f"file:{data / 'sms.jsonl'}",
    }


def start_idv(data: Path, port: int) -> tuple[subprocess.Popen, str]:
    """``idv serve`` in the background, ready when ``/healthz`` answers; returns it and its key."""
    env = idv_env(data)
    created = subprocess.run(
        [*IDV, "clients", "create", "lendly", "--scope", "verify", "--scope", "carrier"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]  # API.md: the key is the last line
    log = open(data / "idv.log", "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [*IDV, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, key
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            sys.exit("idv did not start:\n" + (data / "idv.log").read_text())
        time.sleep(0.1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="portal port (default 8000)")
    parser.add_argument("--idv-port", type=int, default=0, help="idv port (default: any free)")
    parser.add_argument("--keep", action="store_true", help="keep the data dir on exit")
    args = parser.parse_args(argv)

    from examples.loan_portal.app import create_app
    from examples.loan_portal.branch import register_demo_branch
    from idv_client import IdvClient

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up on kill too, not only Ctrl-C
    data = Path(tempfile.mkdtemp(prefix="lendly-"))
    proc, key = start_idv(data, args.idv_port or free_port())
    idv_url = f"http://127.0.0.1:{proc.args[proc.args.index('--port') + 1]}"
    try:
        # The demo stand-in for the tenant's face check at a branch: its key, registered with
        # idv's CLI as an operator would (API.md, Recovery: idv clients attestation-key).
        with IdvClient(idv_url, key) as idv:
            client_id = idv.whoami().client_id
        branch = register_demo_branch(
            lambda args: subprocess.run(
                [*IDV, *args], env=idv_env(data), capture_output=True, text=True
            ),
            client_id,
            data,
        )
        app = create_app(
            idv_url,
            key,
            carrier_key=key,
            sms_file=data / "sms.jsonl",
            data_file=data / "portal-users.json",
            branch=branch,
        )
        print(f"idv     {idv_url}  (data in {data})", flush=True)
        print(f"portal  http://127.0.0.1:{args.port}/  <- open this", flush=True)
        app.run(host="127.0.0.1", port=args.port, debug=False, threaded=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
