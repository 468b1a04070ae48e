"""The test suite's SSE client parses streams the way the HTML standard says browsers do."""

from __future__ import annotations

import socket
import threading

import pytest

from tests.support.sse_client import (
    ChunkedDecoder,
    Frame,
    SSEClient,
    SSEParser,
    SSETimeoutError,
    StreamClosedError,
)

SERVICE_STREAM = (
    "retry: 3000\n\n"
    'id: 0-1\nevent: connected\ndata: {"connection_id": "c1"}\n\n'
    ": heartbeat\n\n"
    'id: 1753859400000-0\nevent: progress\ndata: {"progress": 65, "message": "正在生成向量嵌入..."}\n\n'
    "id: 1753859400000-0\n: heartbeat\n\n"
)


def parse(text: str) -> list[Frame]:
    return SSEParser().feed(text)


def test_service_shaped_stream_parses_into_its_frames():
    frames = parse(SERVICE_STREAM)

    assert [f.retry for f in frames] == [3000, None, None, None, None]
    assert frames[1].event == "connected"
    assert frames[1].json() == {"connection_id": "c1"}
    assert frames[2].is_heartbeat and frames[2].comments == ("heartbeat",)
    assert frames[3].id == "1753859400000-0"
    assert frames[3].type == "progress"
    assert frames[3].json()["message"] == "正在生成向量嵌入..."
    assert frames[4].is_heartbeat and frames[4].id == "1753859400000-0"
    assert [f.dispatches for f in frames] == [False, True, False, True, False]


def test_multiline_data_joins_with_newlines():
    (frame,) = parse("data: first\ndata:second\ndata\ndata:  indented\n\n")

    assert frame.data == "first\nsecond\n\n indented"
    assert frame.type == "message"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_ending_gives_the_same_frames(newline):
    text = SERVICE_STREAM.replace("\n", newline)

    assert parse(text) == parse(SERVICE_STREAM)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_frames_survive_being_split_at_any_point(newline):
    text = SERVICE_STREAM.replace("\n", newline)
    expected = parse(SERVICE_STREAM)

    for cut in range(len(text) + 1):
        parser = SSEParser()
        frames = parser.feed(text[:cut]) + parser.feed(text[cut:])
        assert frames == expected, f"cut at {cut}"


def test_one_character_at_a_time_with_crlf():
    parser = SSEParser()
    frames = [f for ch in SERVICE_STREAM.replace("\n", "\r\n") for f in parser.feed(ch)]

    assert frames == parse(SERVICE_STREAM)


def test_colon_space_rules_follow_the_standard():
    (frame,) = parse("event:nospace\ndata:  two spaces\nid\n\n")

    assert frame.event == "nospace"
    assert frame.data == " two spaces"
    assert frame.id == ""


def test_invalid_retry_and_unknown_fields_are_ignored():
    (frame,) = parse("retry: 10s\nretry:\nfoo: bar\ndata: x\n\n")

    assert frame.retry is None
    assert frame.data == "x"


def test_id_with_nul_is_ignored_and_empty_id_resets():
    parser = SSEParser()
    first, second, third = parser.feed("id: 7\ndata: a\n\nid: 8\0\ndata: b\n\nid:\ndata: c\n\n")

    assert first.last_event_id == "7"
    assert second.id is None and second.last_event_id == "7"
    assert third.id == "" and third.last_event_id == ""


def test_leading_bom_is_dropped_once():
    (frame,) = parse("\ufeffdata: x\n\n")
    (kept,) = parse("data: \ufeffx\n\n")

    assert frame.data == "x"
    assert kept.data == "\ufeffx"


def test_block_cut_off_by_the_end_of_the_stream_is_not_returned():
    parser = SSEParser()

    assert parser.feed("data: whole\n\ndata: half\n") == [Frame(data="whole")]


def test_blank_lines_alone_make_no_frames():
    assert parse("\n\n\r\n\r\r") == []


def test_chunked_decoder_handles_any_split_extensions_and_trailers():
    body = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"

    for cut in range(len(body) + 1):
        decoder = ChunkedDecoder()
        out = decoder.feed(body[:cut]) + decoder.feed(body[cut:])
        assert out == b"hello, world", f"cut at {cut}"
        assert decoder.done


class CannedServer:
    """Accepts one connection on 127.0.0.1 and writes canned bytes, piece by piece."""

    def __init__(self, pieces: list[bytes], *, close: bool = True) -> None:
        self.pieces = pieces
        self.close_after = close
        self.request = b""
        self.release = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(10)
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            while b"\r\n\r\n" not in self.request:
                self.request += conn.recv(4096)
            for piece in self.pieces:
                conn.sendall(piece)
            if not self.close_after:
                self.release.wait(10)

    def stop(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.listener.close()


def chunked(*payloads: bytes) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in payloads] + [b"0\r\n\r\n"]


HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"


def test_client_reads_a_chunked_stream_split_inside_utf8_characters():
    body = SERVICE_STREAM.encode()
    cut = body.index("向".encode()) + 1  # in the middle of a three-byte character
    server = CannedServer(
        [HEAD + b"Transfer-Encoding: chunked\r\n\r\n"] + chunked(body[:cut], body[cut:])
    )
    try:
        with SSEClient(
            f"http://127.0.0.1:{server.port}/sse/user/123", last_event_id="0-0"
        ) as client:
            frames = client.collect(5, timeout=5)
            with pytest.raises(StreamClosedError):
                client.next_frame(timeout=5)
    finally:
        server.stop()

    assert client.status == 200
    assert client.headers["content-type"].startswith("text/event-stream")
    assert frames == parse(SERVICE_STREAM)
    assert bytes(client.raw_body) == body
    assert client.complete
    assert b"\r\nLast-Event-ID: 0-0\r\n" in server.request
    assert server.request.startswith(b"GET /sse/user/123 HTTP/1.1\r\n")


def test_client_reads_a_body_that_ends_with_the_connection_one_byte_at_a_time():
    body = SERVICE_STREAM.replace("\n", "\r\n").encode()
    server = CannedServer([HEAD + b"\r\n"] + [body[i : i + 1] for i in range(len(body))])
    try:
        with SSEClient(f"http://127.0.0.1:{server.port}/sse/x") as client:
            frames = list(client.frames(timeout=5))
    finally:
        server.stop()

    assert frames == parse(SERVICE_STREAM)


def test_client_times_out_with_what_it_has_so_far():
    server = CannedServer(
        [HEAD + b"Transfer-Encoding: chunked\r\n\r\n", *chunked(b"data: one\n\n")[:1]], close=False
    )
    try:
        with SSEClient(f"http://127.0.0.1:{server.port}/sse/x") as client:
            assert client.next_frame(timeout=5).data == "one"
            with pytest.raises(SSETimeoutError, match="1 frames so far"):
                client.next_frame(timeout=0.2)
            client.assert_silent(0.1)
    finally:
        server.stop()


def test_client_reads_an_error_body_with_content_length():
    body = b'{"error": {"code": "not_found"}}'
    server = CannedServer(
        [
            b"HTTP/1.1 404 NOT FOUND\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        ],
        close=False,
    )
    try:
        with SSEClient(f"http://127.0.0.1:{server.port}/sse/nope") as client:
            assert client.status == 404
            assert client.json() == {"error": {"code": "not_found"}}
    finally:
        server.stop()
