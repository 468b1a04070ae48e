"""Closed-loop publishing through PushClient: THREADS threads each call ``send()`` in a
loop (each waits for its answer) for SECONDS seconds against a running service.

    python clients/python/bench_send.py --url http://127.0.0.1:8089 --seconds 10 --subscribe

It starts nothing itself. It prints the accepted messages per second (JSON on stdout)
and, with ``--subscribe``, checks that a subscriber (in a separate process, so that it
does not compete with the publishers for the interpreter lock) received every accepted
message exactly once. The subscription is a channel of its own per run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time

from pushservice_client import PushClient


def _subscriber(url: str, channel: str, ready, result_queue) -> None:
    """Count what arrives on ``channel`` up to the end marker, which is published after
    every other message was accepted, so it comes after all of them in the stream."""
    counts: dict[str, int] = {}
    with PushClient(url) as client, client.subscribe(channels=[channel], control=True,
                                                     read_timeout=30) as subscription:
        for event in subscription:
            if event.type == "connected":
                ready.set()
            elif not event.is_control:
                if event.data["data"].get("end"):
                    break
                counts[event.data["id"]] = counts.get(event.data["id"], 0) + 1
    duplicates = sum(1 for count in counts.values() if count > 1)
    result_queue.put({"received": len(counts), "duplicates": duplicates})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("PUSHSERVICE_URL",
                                                        "http://localhost:8089"))
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--linger", type=float, default=0.002, help="seconds (default 0.002)")
    parser.add_argument("--max-in-flight", type=int, default=2)
    parser.add_argument("--subscribe", action="store_true",
                        help="verify exactly-once delivery to a subscriber")
    args = parser.parse_args(argv)

    channel = f"bench-{os.getpid()}-{int(time.time())}"
    subscriber = None
    if args.subscribe:
        context = multiprocessing.get_context("spawn")
        ready, result_queue = context.Event(), context.Queue()
        subscriber = context.Process(target=_subscriber, daemon=True,
                                     args=(args.url, channel, ready, result_queue))
        subscriber.start()
        if not ready.wait(30):
            print("the subscriber did not connect within 30 s", file=sys.stderr)
            return 1

    accepted = [0] * args.threads
    failed = [0] * args.threads
    ids: list[set[str]] = [set() for _ in range(args.threads)]
    stop = threading.Event()

    with PushClient(args.url, service="bench", linger=args.linger,
                    max_in_flight=args.max_in_flight) as push:
        def publish(index: int) -> None:
            number = 0
            while not stop.is_set():
                number += 1
                try:
                    result = push.progress({"channel": channel}, number % 101, f"n{number}")
                except Exception as exc:  # noqa: BLE001 - count it and go on
                    failed[index] += 1
                    print(f"send failed: {exc!r}", file=sys.stderr)
                else:
                    accepted[index] += 1
                    ids[index].add(result.id)

        threads = [threading.Thread(target=publish, args=(i,)) for i in range(args.threads)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        if subscriber is not None:
            push.info({"channel": channel}, "end of the run", data={"end": True})

    total = sum(accepted)
    report = {"threads": args.threads, "seconds": round(elapsed, 2), "accepted": total,
              "failed": sum(failed), "accepted_per_second": round(total / elapsed),
              "linger": args.linger, "max_in_flight": args.max_in_flight}
    if subscriber is not None:
        try:
            delivered = result_queue.get(timeout=120)
        except Exception:  # noqa: BLE001 - a subscriber that never finished
            delivered = {"received": None, "duplicates": None}
        subscriber.join(10)
        report.update(delivered=delivered["received"], duplicates=delivered["duplicates"],
                      exactly_once=delivered["received"] == total
                      and delivered["duplicates"] == 0)
    print(json.dumps(report))
    return 0 if report.get("exactly_once", True) and not report["failed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
