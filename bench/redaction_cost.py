"""Log redaction's cost per line, for the kinds of line a server logs, with ten secrets
registered (flags, endpoints.yml, credentials.yml): CPU microseconds a line, or, under
callgrind, instructions.

    python bench/redaction_cost.py [--lines 1000000]
    valgrind --tool=callgrind python bench/redaction_cost.py --kind 0 --lines 10000
        (less the same with --lines 0, over 10,000: instructions a line)
    python bench/redaction_cost.py --register 200
        (CPU seconds to register 200 secrets, as endpoints.yml's may be, then to redact the
        first line after them)

PYTHONPATH=<tree> measures that tree's `server`.
"""

from __future__ import annotations

import argparse
import time

from server.auth import log_redaction

SECRETS = [f"secret-value-{i:02d}.x~y" for i in range(10)]
LINES = {
    "access line, no '%'": '127.0.0.1:52814 - "POST /webhooks/rest/webhook HTTP/1.1" 200',
    "access line with '%', no secret": (
        '127.0.0.1:52814 - "GET /conversations/caf%C3%A9%20user/tracker?include_events=ALL '
        'HTTP/1.1" 200'
    ),
    "access line with an encoded secret": (
        '127.0.0.1:52814 - "GET /status?tokn=secret%2Dvalue%2D03%2Ex%7Ey HTTP/1.1" 200'
    ),
    "debug line, 300 characters": "predicted next action 'utter_greet' with confidence 0.93; " * 5,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--kind", type=int, help="one line only (its index in LINES)")
    parser.add_argument("--register", type=int, help="time registering this many secrets")
    args = parser.parse_args()
    if args.register is not None:
        start = time.process_time()
        for i in range(args.register):
            log_redaction.redact_also(f"registered-secret-{i:04d}.x~y")
        registered = time.process_time()
        log_redaction.redact(LINES["access line with an encoded secret"])
        print(
            f"{args.register} secrets: {registered - start:.3f} s to register, "
            f"{time.process_time() - registered:.3f} s to redact the first line after them"
        )
        return
    for secret in SECRETS:
        log_redaction.redact_also(secret)
    redact = log_redaction.redact
    kinds = list(LINES.items())
    for name, line in kinds if args.kind is None else [kinds[args.kind]]:
        redact(line)  # compiled and warm
        start = time.process_time()
        for _ in range(args.lines):
            redact(line)
        spent = time.process_time() - start
        if args.kind is None:
            print(f"{name}: {spent / max(args.lines, 1) * 1e6:.2f} us a line -> {redact(line)!r}")


if __name__ == "__main__":
    main()
