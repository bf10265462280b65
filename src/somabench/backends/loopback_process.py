"""A local OpenAI-compatible server as a child process on 127.0.0.1: start, wait, stop.

Why one class: the llama.cpp server behind ``backend=llamacpp`` and the vLLM server the vLLM
tests start need the same lifecycle — a free loopback port, a log file, readiness when
``GET /v1/models`` lists a model, a clear error quoting the log when the process dies or is
not ready in time, and terminate-then-kill on stop. Subclasses give the command line and how
a failure is raised. Nothing here ever binds or calls an address other than 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path

LOOPBACK_HOST = "127.0.0.1"


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        return int(sock.getsockname()[1])


class LoopbackServerProcess(ABC):
    """One server child process on ``127.0.0.1:<port>`` speaking the OpenAI API."""

    def __init__(self, log_path: Path, port: int | None = None, *, poll_seconds: float,
                 stop_grace_seconds: float, own_process_group: bool = False) -> None:
        self.log_path = log_path
        self.port = port or free_port()
        self.poll_seconds = poll_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.own_process_group = own_process_group
        """True: the server gets its own process group, and stop() signals the whole group
        (servers that spawn engine workers)."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK_HOST}:{self.port}/v1"

    @abstractmethod
    def command(self) -> list[str]:
        """The server's command line (it must listen on LOOPBACK_HOST:self.port)."""

    def failure(self, what: str, reason: str) -> Exception:
        """The error start() raises; ``reason`` is ``connection`` (exited) or ``timeout``."""
        return RuntimeError(f"{type(self).__name__} {what}; log {self.log_path}:\n{self.log_tail()}")

    def on_ready(self, seconds: float) -> None:
        """Hook called once the server answers (e.g. to log where it listens)."""

    def start(self, timeout: float) -> LoopbackServerProcess:
        """Start the process and wait until ``/v1/models`` lists a model (at most ``timeout`` s)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log_path.open("ab") as log_fh:
            self.proc = subprocess.Popen(self.command(), stdout=log_fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         start_new_session=self.own_process_group)
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise self.failure(f"exited with code {self.proc.returncode}", "connection")
            if self.ready():
                self.on_ready(time.monotonic() - started)
                return self
            time.sleep(self.poll_seconds)
        self.stop()
        raise self.failure(f"was not ready after {timeout:g}s", "timeout")

    def ready(self) -> bool:
        """True once ``GET /v1/models`` answers with at least one model."""
        try:
            with urllib.request.urlopen(f"{self.base_url}/models",  # noqa: S310 - loopback only
                                        timeout=self.poll_seconds * 4) as resp:
                return bool(json.loads(resp.read()).get("data"))
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """Terminate the server (its process group when it has one), then kill it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=self.stop_grace_seconds)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL)
            proc.wait(timeout=self.stop_grace_seconds)

    def _signal(self, proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        if self.own_process_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
