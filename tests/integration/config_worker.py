"""A process that increments one shared-config key: ``python config_worker.py APP KEY COUNT GO_FILE``.

Waits until GO_FILE exists (so every worker starts at once), then runs COUNT ``update(key, +1)`` and prints
``done <count>``; any error surfaced to it fails it (exit status 1).
"""

from __future__ import annotations

import os
import sys
import time

import session_monitor


def main() -> None:
    app, key, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    cfg = session_monitor.shared_config(app)
    if not cfg.wait_loaded(30):
        raise SystemExit("the server's values never arrived")
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("never told to go")
        time.sleep(0.005)
    for _ in range(count):
        cfg.update(key, lambda n: n + 1, default=0)
    sys.stdout.write(f"done {count}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
