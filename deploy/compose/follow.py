"""Follow a pushservice stream as a browser's EventSource would, and say which instance
serves it: reconnect after the stream ends, after the delay the server asked for
(``retry:``), sending ``Last-Event-ID``. Standard library only.

    python3 deploy/compose/follow.py "http://localhost:8080/sse/user/123?token=$TOKEN"

Prints one line per event: ``connected`` with the instance and worker, each message's
id and type, ``closing`` with its reason, ``history-lost`` if anything could not be
replayed. Ctrl-C stops it.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request


def events(response):
    """Yield (id, event, data, retry_ms) for each frame of an SSE response."""
    event_id = event = retry = None
    data: list[str] = []
    for raw in response:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data or event or retry is not None:
                yield event_id, event or "message", "\n".join(data), retry
            event = retry = None
            data = []
            continue
        if line.startswith(":"):
            continue  # a heartbeat comment
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "retry" and value.isdigit():
            retry = int(value)


def follow(url: str) -> None:
    last_event_id = ""
    delay = 3.0
    while True:
        request = urllib.request.Request(url, headers={"Accept": "text/event-stream"})
        if last_event_id:
            request.add_header("Last-Event-ID", last_event_id)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                for event_id, event, data, retry in events(response):
                    if retry is not None:
                        delay = retry / 1000
                    if event_id:
                        last_event_id = event_id
                    show(event, data, event_id)
            print(f"-- stream ended; reconnecting in {delay:.1f} s", flush=True)
        except urllib.error.HTTPError as exc:
            print(f"-- {exc.code} {exc.read()[:200]!r}; retrying in {delay:.1f} s", flush=True)
        except OSError as exc:
            print(f"-- {exc}; retrying in {delay:.1f} s", flush=True)
        time.sleep(delay)


def show(event: str, data: str, event_id: str | None) -> None:
    try:
        body = json.loads(data) if data else {}
    except ValueError:
        body = {}
    if event == "connected":
        print(f"connected to {body.get('instance')} (worker {body.get('worker')})", flush=True)
    elif event in ("closing", "history-lost"):
        print(f"{event}: {body.get('reason')}", flush=True)
    elif data:
        print(f"{event_id} {event} {body.get('id', '')}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        follow(sys.argv[1])
    except KeyboardInterrupt:
        pass
