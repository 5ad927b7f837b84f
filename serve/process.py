"""A `sed-serve` process started and stopped from Python: the demo, the load test and the tests use it.

`ServerProcess.start` waits until model `sed` is ready (failing early if the process exits);
`stop` sends SIGTERM, waits, and kills whatever of the process group is left, as Kubernetes stops a
pod. Output goes to a log file (a server writing into an unread pipe blocks); the error of a failed
start quotes the end of that log, since the caller may remove the folder it is in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .client import SedClient, ServerError

LOG_TAIL_LINES = 3


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` TCP ports free on `host` now (bound, read, released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def sed_serve_command(arguments: Sequence[str], host: str = "127.0.0.1") -> tuple[list[str], str]:
    """`sed-serve ARGUMENTS -q` on free ports of `host`: (command line, its HTTP URL)."""
    http, grpc, metrics = free_ports(3, host)
    command = [sys.executable, "-m", "sed_deploy.serve.cli", *arguments, "-q", "--http-port", str(http),
               "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    return command, f"http://{host}:{http}"


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last non-empty lines of a log file, joined by " | " (one line to quote in an error)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no output"
    found = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(found) or "no output"


class ServerProcess:
    """A server started as a subprocess in its own process group.

    Args:
        command: the server's command line (for sed-serve: ... --http-port PORT).
        url: its HTTP endpoint.
        log: file for its output.
    """

    def __init__(self, command: Sequence[str], url: str, log: str | Path) -> None:
        self.command = list(command)
        self.client = SedClient(url, timeout=10)
        self.log = Path(log)
        self.process: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = 300.0, env: dict[str, str] | None = None) -> ServerProcess:
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        started = time.monotonic()
        while True:
            with contextlib.suppress(ServerError):
                if self.client.ready():
                    break
            if self.process.poll() is not None:
                self.stop()
                raise ServerError(f"the server exited with code {self.process.returncode} before it was ready: "
                                  f"{log_tail(self.log)}")
            if time.monotonic() - started > timeout:
                self.stop()
                raise ServerError(f"the server was not ready after {timeout:.0f} s: {log_tail(self.log)}")
            time.sleep(0.25)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL to what is left of the group; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.client.close()
        return self.process.poll()

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
