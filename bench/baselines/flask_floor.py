"""The floor of the stack the service is built on: Flask under gunicorn's gevent worker,
doing as little as a push endpoint can.

``POST /api/v1/messages/send`` and ``/batch`` parse the JSON body, give each message an
id and hand its frame to the in-process queues of the connections on its channel; ``GET
/sse/stream/{channels}`` streams those frames. No Redis, no validation, no auth, no
metrics: what a request costs in Flask and gunicorn alone, measured in the same run as
the service, so that publish-path figures can be read against it. Run by the suite as
``gunicorn -c bench/baselines/flasksse_gunicorn.py bench.baselines.flask_floor:app``.
"""

from __future__ import annotations

import itertools

import gevent.queue
import orjson
from flask import Flask, Response, request

app = Flask(__name__)
_ids = itertools.count(1)
_subscribers: dict[str, set[gevent.queue.Queue]] = {}


def _publish(message: dict) -> str:
    number = next(_ids)
    message["id"] = f"msg_{number}"
    frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (
        number, str(message.get("type", "message")).encode(), orjson.dumps(message))
    channel = str((message.get("target") or {}).get("channel", ""))
    for queue in list(_subscribers.get(channel, ())):
        try:
            queue.put_nowait(frame)
        except gevent.queue.Full:
            pass
    return message["id"]


@app.post("/api/v1/messages/send")
def send():
    message_id = _publish(orjson.loads(request.get_data()))
    return Response(orjson.dumps({"id": message_id}), status=202, mimetype="application/json")


@app.post("/api/v1/messages/batch")
def batch():
    ids = [_publish(message) for message in orjson.loads(request.get_data())["messages"]]
    return Response(orjson.dumps({"accepted": len(ids), "ids": ids}), status=202,
                    mimetype="application/json")


@app.get("/sse/stream/<channels>")
def stream(channels: str):
    queue: gevent.queue.Queue = gevent.queue.Queue(10000)
    names = [name for name in channels.split(",") if name]
    for name in names:
        _subscribers.setdefault(name, set()).add(queue)

    def body():
        try:
            yield b"retry: 3000\n\nevent: connected\ndata: {}\n\n"
            while True:
                frames = [queue.get()]
                while queue.qsize():
                    frames.append(queue.get_nowait())
                yield b"".join(frames)
        finally:
            for name in names:
                _subscribers.get(name, set()).discard(queue)

    return Response(body(), mimetype="text/event-stream")


@app.get("/health")
def health():
    return {"status": "ok"}
