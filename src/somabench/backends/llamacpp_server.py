"""llama-cpp-python's OpenAI-compatible server with a bounded lifetime, on loopback only.

Why a wrapper: ``python -m llama_cpp.server`` serves until killed. When somabench starts it for
a run, it must stop with the run even if the run is killed with SIGKILL (no ``finally`` runs
then). A watchdog thread here exits the server when its parent process is gone or when
``--lifetime-seconds`` have passed; ``--host`` is forced to 127.0.0.1.

    python -m somabench.backends.llamacpp_server --parent-pid PID --lifetime-seconds S \
        -- --model FILE.gguf --port N [llama_cpp.server options]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

LOOPBACK_HOST = "127.0.0.1"
WATCHDOG_POLL_SECONDS = 1.0  # how often the watchdog looks at the parent; not a serving knob


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


def watchdog(parent_pid: int | None, lifetime_seconds: float | None) -> threading.Thread:
    """A daemon thread that ends the process when the parent dies or the lifetime is up."""
    started = time.monotonic()

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_POLL_SECONDS)
            if parent_pid is not None and not _parent_alive(parent_pid):
                print(f"[llamacpp_server] parent {parent_pid} is gone; exiting", file=sys.stderr,
                      flush=True)
                os._exit(0)
            if lifetime_seconds is not None and time.monotonic() - started > lifetime_seconds:
                print(f"[llamacpp_server] lifetime {lifetime_seconds:g}s reached; exiting",
                      file=sys.stderr, flush=True)
                os._exit(0)

    thread = threading.Thread(target=watch, name="llamacpp-watchdog", daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m somabench.backends.llamacpp_server")
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends")
    parser.add_argument("--lifetime-seconds", type=float, default=None, help="exit after S seconds")
    args = parser.parse_args(ours)
    if "--host" in rest:
        host = rest[rest.index("--host") + 1]
        if host not in (LOOPBACK_HOST, "localhost"):
            print(f"error: refusing --host {host}: this server listens on {LOOPBACK_HOST} only",
                  file=sys.stderr)
            return 2
    else:
        rest += ["--host", LOOPBACK_HOST]
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
