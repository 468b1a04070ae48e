"""flask-sse behind the service's paths: the Python peer users would otherwise pick.

flask-sse's own machinery does the work (its Redis client per access, one Redis Pub/Sub
subscription per connection, its ``Message`` formatting); this file only adds:

* ``POST /api/v1/messages/send`` and ``/batch``: publish each message with
  ``sse.publish`` to the channel its target names (``channel`` as is, ``user_id`` ->
  ``user:<id>``), as a user of flask-sse would write it;
* ``GET /sse/stream/{channel}`` and ``/sse/user/{id}``: flask-sse's stream of that channel,
  preceded by an ``event: connected`` frame once the Pub/Sub subscription is in place
  (flask-sse itself sends nothing until the first message, so a client could not tell
  when it may publish);
* ``GET /health``.

Run: ``REDIS_URL=redis://127.0.0.1:6379/0 gunicorn -k gevent bench.baselines.flasksse_app:app``.
"""

from __future__ import annotations

import json
import os

import flask_sse
from flask import Flask, Response, jsonify, request, stream_with_context


class ConnectedSSE(flask_sse.ServerSentEventsBlueprint):
    """flask-sse's blueprint whose message generator says when it has subscribed."""

    def messages_after_connected(self, channel: str):
        """Yield a connected frame once subscribed, then flask-sse's messages as text."""
        pubsub = self.redis.pubsub()
        pubsub.subscribe(channel)
        try:
            connected = json.dumps({"connection_id": str(id(pubsub))})
            yield f"retry: 3000\n\nevent: connected\ndata: {connected}\n\n"
            for item in pubsub.listen():
                if item["type"] == "message":
                    yield str(flask_sse.Message(**flask_sse.json.loads(item["data"])))
        finally:
            try:
                pubsub.unsubscribe(channel)
            except flask_sse.ConnectionError:
                pass


sse = ConnectedSSE("sse", __name__)


def _channel_of(message: dict) -> str:
    target = message.get("target") or {}
    if "user_id" in target:
        return f"user:{target['user_id']}"
    return str(target.get("channel", "sse"))


def create_app() -> Flask:
    """The Flask app, configured from REDIS_URL."""
    app = Flask(__name__)
    app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    app.register_blueprint(sse, url_prefix="/stream")

    def stream(channel: str) -> Response:
        return Response(
            stream_with_context(sse.messages_after_connected(channel)),
            mimetype="text/event-stream",
        )

    @app.get("/sse/stream/<channel>")
    def stream_channel(channel: str) -> Response:
        return stream(channel)

    @app.get("/sse/user/<user_id>")
    def stream_user(user_id: str) -> Response:
        return stream(f"user:{user_id}")

    @app.post("/api/v1/messages/send")
    def send():
        message = request.get_json()
        sse.publish(message, type=message.get("type"), channel=_channel_of(message))
        return jsonify(accepted=1), 202

    @app.post("/api/v1/messages/batch")
    def batch():
        messages = request.get_json()["messages"]
        for message in messages:
            sse.publish(message, type=message.get("type"), channel=_channel_of(message))
        return jsonify(accepted=len(messages)), 202

    @app.get("/health")
    def health():
        return jsonify(status="ok")

    return app


app = create_app()
