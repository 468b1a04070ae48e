"""A minimal raw-gevent SSE fan-out server: the ceiling a gevent design can approach.

No WSGI, no Redis, one process: a gevent StreamServer parses just enough HTTP/1.1, each
SSE connection is a greenlet blocked on its own bounded gevent queue, a message's frame is
formatted once and offered to every subscriber's queue, and the frames waiting in a queue
are joined into one send. One greenlet offers a heartbeat comment to every queue every
``--heartbeat-s`` seconds (no timer per connection). A full queue drops that connection.

Paths are the service's: ``GET /sse/stream/{channels}``, ``GET /sse/user/{id}``,
``GET /sse/service/{name}``, ``POST /api/v1/messages/send``, ``.../broadcast``,
``.../batch``, ``GET /health``. Run: ``python -m bench.baselines.raw_gevent --port P``.
"""

from __future__ import annotations

import argparse
import itertools
import time
from urllib.parse import unquote

import gevent
import gevent.queue
import gevent.server
import orjson

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\nX-Accel-Buffering: no\r\n\r\nretry: 3000\n\n"
)
HEARTBEAT = b": heartbeat\n\n"


class Connection:
    """One subscriber: its socket, its topics and its bounded queue of frames."""

    __slots__ = ("alive", "id", "queue", "sock", "topics")

    def __init__(self, sock, topics: list[str], queue_size: int, conn_id: str) -> None:
        self.sock = sock
        self.topics = topics
        self.queue = gevent.queue.Queue(queue_size)
        self.alive = True
        self.id = conn_id

    def offer(self, frame: bytes) -> None:
        """Queue ``frame`` without blocking; a full queue drops the connection."""
        try:
            self.queue.put_nowait(frame)
        except gevent.queue.Full:
            self.alive = False
            self.sock.close()

    def serve(self) -> None:
        """Write queued frames until the client goes away, joining what is waiting."""
        get, sendall, queue = self.queue.get, self.sock.sendall, self.queue
        while self.alive:
            frame = get()
            if queue.qsize():
                frames = [frame]
                while queue.qsize():
                    frames.append(queue.get_nowait())
                frame = b"".join(frames)
            sendall(frame)


class Hub:
    """The registry of connections by topic and the fan-out of published messages."""

    def __init__(self, queue_size: int) -> None:
        self.queue_size = queue_size
        self.by_topic: dict[str, set[Connection]] = {}
        self.everyone: set[Connection] = set()
        self._ids = itertools.count(1)

    def add(self, conn: Connection) -> None:
        self.everyone.add(conn)
        for topic in conn.topics:
            self.by_topic.setdefault(topic, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        self.everyone.discard(conn)
        for topic in conn.topics:
            subs = self.by_topic.get(topic)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self.by_topic[topic]

    def publish(self, msg: dict, broadcast: bool = False) -> str:
        """Assign an id, format the frame once, offer it to every matching connection."""
        seq = next(self._ids)
        msg.setdefault("id", f"msg_{seq}")
        msg.setdefault("timestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        event_type = str(msg.get("type", "message"))
        frame = b"id: %d\nevent: %s\ndata: %s\n\n" % (
            seq,
            event_type.encode(),
            orjson.dumps(msg),
        )
        if broadcast:
            targets = list(self.everyone)
        else:
            topics = [f"service:{msg.get('service', '')}"]
            for key, value in (msg.get("target") or {}).items():
                if key == "channel":
                    topics.append(str(value))
                elif key.endswith("_id"):
                    topics.append(f"{key[:-3]}:{value}")
            found = [self.by_topic[t] for t in topics if t in self.by_topic]
            if not found:
                return msg["id"]
            targets = found[0] if len(found) == 1 else set().union(*found)
        for conn in list(targets):
            if conn.alive:
                conn.offer(frame)
        return msg["id"]

    def heartbeat_forever(self, interval: float) -> None:
        """Offer a heartbeat comment to every connection every ``interval`` seconds."""
        while True:
            gevent.sleep(interval)
            for conn in list(self.everyone):
                if conn.alive:
                    conn.offer(HEARTBEAT)


def _reply(sock, status: str, body: dict) -> None:
    payload = orjson.dumps(body)
    sock.sendall(
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (status.encode(), len(payload), payload)
    )


def _topics_of(path: str, query: str) -> list[str] | None:
    if path.startswith("/sse/stream/"):
        topics = [unquote(c) for c in path[len("/sse/stream/") :].split(",") if c]
        topics += [unquote(p[8:]) for p in query.split("&") if p.startswith("channel=")]
        return topics
    if path.startswith("/sse/user/"):
        return [f"user:{unquote(path[len('/sse/user/') :])}"]
    if path.startswith("/sse/service/"):
        return [f"service:{unquote(path[len('/sse/service/') :])}"]
    return None


class Server:
    """HTTP/1.1 handling on top of gevent's StreamServer."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._conn_ids = itertools.count(1)

    def handle(self, sock, _address) -> None:
        """Serve keep-alive requests on one client socket until it closes or turns SSE."""
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                while len(buf) < length:
                    chunk = sock.recv(max(65536, length - len(buf)))
                    if not chunk:
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                path, _, query = target.partition("?")
                if method == "GET" and path.startswith("/sse/"):
                    self._stream(sock, path, query)
                    return
                self._api(sock, method, path, body)
        except OSError:
            return
        finally:
            sock.close()

    def _api(self, sock, method: str, path: str, body: bytes) -> None:
        hub = self.hub
        if method == "GET" and path == "/health":
            _reply(sock, "200 OK", {"status": "ok", "connections": len(hub.everyone)})
        elif method == "POST" and path == "/api/v1/messages/send":
            _reply(sock, "202 Accepted", {"id": hub.publish(orjson.loads(body))})
        elif method == "POST" and path == "/api/v1/messages/broadcast":
            _reply(sock, "202 Accepted", {"id": hub.publish(orjson.loads(body), True)})
        elif method == "POST" and path == "/api/v1/messages/batch":
            ids = [hub.publish(m) for m in orjson.loads(body)["messages"]]
            _reply(sock, "202 Accepted", {"accepted": len(ids), "ids": ids})
        else:
            _reply(sock, "404 Not Found", {"error": {"code": "not_found", "message": path}})

    def _stream(self, sock, path: str, query: str) -> None:
        topics = _topics_of(path, query)
        if topics is None:
            _reply(sock, "404 Not Found", {"error": {"code": "not_found", "message": path}})
            return
        conn_id = f"c{next(self._conn_ids)}"
        conn = Connection(sock, topics, self.hub.queue_size, conn_id)
        sock.sendall(
            SSE_HEAD + b'event: connected\ndata: {"connection_id":"%s"}\n\n' % conn_id.encode()
        )
        self.hub.add(conn)
        try:
            conn.serve()
        finally:
            conn.alive = False
            self.hub.remove(conn)


def main(argv: list[str] | None = None) -> None:
    """Serve on ``--host``:``--port`` until killed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--heartbeat-s", type=float, default=30.0)
    p.add_argument("--queue-size", type=int, default=10000)
    args = p.parse_args(argv)
    hub = Hub(args.queue_size)
    gevent.spawn(hub.heartbeat_forever, args.heartbeat_s)
    server = gevent.server.StreamServer((args.host, args.port), Server(hub).handle, backlog=4096)
    server.serve_forever()


if __name__ == "__main__":
    main()
