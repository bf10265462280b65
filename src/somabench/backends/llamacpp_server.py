"""A llama.cpp OpenAI-compatible server with a bounded lifetime, on loopback only.

Why a wrapper: ``python -m llama_cpp.server`` (llama-cpp-python) and llama.cpp's own
``llama-server`` binary serve until killed. When somabench starts one for a run, it must stop
with the run even if the run is killed with SIGKILL (no ``finally`` runs then). A watchdog
thread here exits the server when its parent process is gone or when ``--lifetime-seconds``
have passed; ``--host`` is forced to 127.0.0.1. With ``--exec BINARY`` the wrapper runs the
binary as its child, which the kernel kills when the wrapper dies (``PR_SET_PDEATHSIG``), and
the watchdog kills it first.

    python -m somabench.backends.llamacpp_server --parent-pid PID --lifetime-seconds S \
        -- --model FILE.gguf --port N [llama_cpp.server options]
    python -m somabench.backends.llamacpp_server --parent-pid PID --exec /path/llama-server \
        -- --model FILE.gguf --port N [llama-server options]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

LOOPBACK_HOST = "127.0.0.1"
WATCHDOG_POLL_SECONDS = 1.0  # how often the watchdog looks at the parent; not a serving knob
PR_SET_PDEATHSIG = 1  # prctl(2) option: signal the child when its parent thread exits


def _parent_alive(pid: int) -> bool:
    if os.getppid() != pid:  # re-parented: the parent exited
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watchdog(parent_pid: int | None, lifetime_seconds: float | None,
             before_exit: Callable[[], None] | None = None) -> threading.Thread:
    """A daemon thread that ends the process when the parent dies or the lifetime is up
    (calling ``before_exit`` first, e.g. to kill a child server)."""
    started = time.monotonic()

    def leave(why: str) -> None:
        print(f"[llamacpp_server] {why}; exiting", file=sys.stderr, flush=True)
        if before_exit is not None:
            before_exit()
        os._exit(0)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_POLL_SECONDS)
            if parent_pid is not None and not _parent_alive(parent_pid):
                leave(f"parent {parent_pid} is gone")
            if lifetime_seconds is not None and time.monotonic() - started > lifetime_seconds:
                leave(f"lifetime {lifetime_seconds:g}s reached")

    thread = threading.Thread(target=watch, name="llamacpp-watchdog", daemon=True)
    thread.start()
    return thread


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the wrapper exits (Linux; elsewhere the
    watchdog and the SIGTERM handler below are the only guards)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def run_binary(binary: str, args: list[str], parent_pid: int | None,
               lifetime_seconds: float | None) -> int:
    """Run ``binary args`` as a child bounded like the in-process server; its exit code."""
    child = subprocess.Popen([binary, *args], preexec_fn=_die_with_parent)  # noqa: S603

    def kill_child() -> None:
        if child.poll() is None:
            child.kill()

    def on_term(signum: int, _frame: object) -> None:
        kill_child()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    watchdog(parent_pid, lifetime_seconds, before_exit=kill_child)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m somabench.backends.llamacpp_server")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends")
    parser.add_argument("--lifetime-seconds", type=float, default=None, help="exit after S seconds")
    parser.add_argument("--exec", dest="binary", default=None,
                        help="run this server binary (llama.cpp's llama-server) as a child")
    args = parser.parse_args(ours)
    if "--host" in rest:
        host = rest[rest.index("--host") + 1]
        if host not in (LOOPBACK_HOST, "localhost"):
            print(f"error: refusing --host {host}: this server listens on {LOOPBACK_HOST} only",
                  file=sys.stderr)
            return 2
    else:
        rest += ["--host", LOOPBACK_HOST]
    if args.binary is not None:
        return run_binary(args.binary, rest, args.parent_pid, args.lifetime_seconds)
    try:
        from llama_cpp.server.__main__ import main as server_main
    except ImportError as exc:
        print(f"error: llama-cpp-python is not installed ({exc}). Fix: pip install -e '.[llamacpp]'",
              file=sys.stderr)
        return 2
    watchdog(args.parent_pid, args.lifetime_seconds)
    sys.argv = ["llama_cpp.server", *rest]
    server_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
