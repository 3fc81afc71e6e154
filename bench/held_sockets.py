"""CPU of holding one remote-storage download's connection (`HeldSockets.hold`, called for
each connection the download's SDK makes) with many sockets open in the process, as in a
server holding thousands of socket.io sessions. Each connection is closed by its "SDK" before
the next is made (a storage closing after each answer, as Azure's 4 MiB ranges).

    python bench/held_sockets.py [--open 0,1000,10000] [--holds 200]
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.models.held_sockets import HeldSockets  # noqa: E402


def holds_cpu(holds: int) -> float:
    """CPU seconds per hold, the best of 3 rounds of `holds`."""
    best = float("inf")
    for _ in range(3):
        held = HeldSockets()
        pairs = [socket.socketpair() for _ in range(holds)]
        started = time.process_time()
        for sdk, _ in pairs:
            held.hold(sdk)
            sdk.close()
        best = min(best, (time.process_time() - started) / holds)
        held.close()
        for _, peer in pairs:
            peer.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", default="0,1000,10000")
    parser.add_argument("--holds", type=int, default=200)
    args = parser.parse_args()
    for count in (int(n) for n in args.open.split(",")):
        sockets = [socket.socket() for _ in range(count)]
        print(f"{count:>6} sockets open: {holds_cpu(args.holds) * 1e6:9.1f} us CPU a hold")
        for sock in sockets:
            sock.close()


if __name__ == "__main__":
    main()
