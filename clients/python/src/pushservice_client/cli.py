"""``pushservice``: the command line of pushservice-client.

    pushservice send --service knowledge-service --type progress --target task_id=t1 \\
        --data progress=65 --data message=embedding
    pushservice send --file messages.jsonl          # one JSON message per line, batched
    pushservice tail --user 123                     # print what a subscriber gets
    pushservice token knowledge-service --service knowledge-service --publish 'user:*'
    pushservice stats | connections | kick ID       # operations (an admin token)

Results go to stdout as JSON (one object, or one per line for many messages and for
``tail``); progress and errors go to stderr. Exit status: 0 success, 1 the service
refused something or could not be reached, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from . import __version__
from .client import PushClient
from .config import DEFAULT_URL
from .errors import ConfigurationError, PushError, ServiceError
from .messages import MESSAGE_TYPES, Published, build_message
from .tokens import build_claims, decode_unverified, mint_hs256

ENVIRONMENT = """environment:
  PUSHSERVICE_URL      the service (default http://localhost:8089)
  PUSHSERVICE_TOKEN    bearer token for every request (not needed with ENABLE_AUTH=false)
  PUSHSERVICE_SERVICE  default service name of the messages you send
  JWT_SECRET           the service's secret, for 'pushservice token'
"""


class UsageError(Exception):
    """Bad input on the command line or in a message file (exit status 2)."""


# -- helpers ------------------------------------------------------------------------------


def _value(text: str) -> Any:
    """A KEY=VALUE value: JSON when it parses as JSON (65, true, [1,2], "x"), else the
    text as is."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _pairs(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} takes KEY=VALUE, got {item!r}")
        result[key] = _value(value)
    return result


def _print_json(value: Any, out: TextIO = sys.stdout, *, pretty: bool = False) -> None:
    out.write(json.dumps(value, ensure_ascii=False, indent=2 if pretty else None) + "\n")
    out.flush()


def _client(args: argparse.Namespace, **options: Any) -> PushClient:
    return PushClient(args.url, token=args.token, timeout=args.timeout, **options)


# -- send ---------------------------------------------------------------------------------


def _message_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    if args.json is not None:
        try:
            message = json.loads(args.json)
        except ValueError as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
        if not isinstance(message, dict):
            raise UsageError("--json must be a JSON object (one message)")
        if args.service and "service" not in message:
            message["service"] = args.service
        return message
    if not args.type:
        raise UsageError("give --type (or --json, or --file)")
    target = _pairs(args.target, "--target")
    if not target and not args.broadcast:
        raise UsageError("give --target KEY=VALUE (e.g. --target user_id=123)")
    return build_message(args.type, target or None, _pairs(args.data, "--data"),
                         service=args.service or os.environ.get("PUSHSERVICE_SERVICE"),
                         metadata=_pairs(args.metadata, "--metadata") or None,
                         source=args.source, id=args.id)


def _read_messages(stream: TextIO, service: str | None) -> Iterator[tuple[int, Any]]:
    """(line number, message) for each non-blank line; a line that is not JSON is
    yielded as a UsageError so that it is reported like a refused message."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except ValueError as exc:
            yield number, UsageError(f"line {number} is not JSON: {exc}")
            continue
        if not isinstance(message, dict):
            yield number, UsageError(f"line {number} is not a JSON object")
            continue
        if service and "service" not in message:
            message["service"] = service
        yield number, message


class Progress:
    """Counts on stderr: rewritten in place on a terminal, a line every few seconds
    otherwise (logs), and a final line."""

    def __init__(self, total: int | None, out: TextIO = sys.stderr, quiet: bool = False) -> None:
        self.total = total
        self.out = out
        self.quiet = quiet
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.shown = 0.0
        self.sent = self.failed = self.duplicates = 0

    def count(self, outcome: Published | BaseException) -> None:
        if isinstance(outcome, Published):
            self.sent += 1
            self.duplicates += outcome.duplicate
        else:
            self.failed += 1
        now = time.monotonic()
        if now - self.shown >= (0.2 if self.tty else 5.0):
            self.shown = now
            self.show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = self.sent + self.failed
        of = f"/{self.total}" if self.total is not None else ""
        return (f"{done}{of} messages: {self.sent} sent ({self.duplicates} duplicates), "
                f"{self.failed} failed, {done / elapsed:.0f} msg/s")

    def show(self, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            self.out.write("\r" + self.line() + ("\n" if final else ""))
        else:
            self.out.write(self.line() + "\n")
        self.out.flush()


def _outcome_json(number: int | None, outcome: Published | BaseException) -> dict[str, Any]:
    line = {} if number is None else {"line": number}
    if isinstance(outcome, Published):
        return {**line, **outcome.to_dict()}
    if isinstance(outcome, ServiceError):
        return {**line, **outcome.to_dict()}
    return {**line, "error": {"code": type(outcome).__name__, "message": str(outcome),
                              "details": None}}


def command_send(args: argparse.Namespace) -> int:
    if args.file is None:
        message = _message_from_flags(args)
        with _client(args, batching=False) as client:
            result = client.broadcast(message) if args.broadcast else client.send(message)
        _print_json(result.to_dict())
        return 0
    if args.broadcast or args.json or args.type:
        raise UsageError("--file sends the messages in the file; leave out --type, --json "
                         "and --broadcast")
    if args.file == "-":
        stream, total = sys.stdin, None
    else:
        try:
            stream = open(args.file, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc}") from None
        with stream:
            total = sum(1 for line in stream if line.strip())
        stream = open(args.file, encoding="utf-8")  # noqa: SIM115 - closed below
    progress = Progress(total, quiet=args.quiet)
    failed = 0
    try:
        with _client(args, max_batch_size=args.batch_size) as client:
            lines = _read_messages(stream, args.service
                                   or os.environ.get("PUSHSERVICE_SERVICE"))
            while True:
                chunk = [pair for _, pair in zip(range(args.batch_size), lines, strict=False)]
                if not chunk:
                    break
                sendable = [(n, m) for n, m in chunk if isinstance(m, dict)]
                outcomes = dict(zip([n for n, _ in sendable],
                                    client.send_many([m for _, m in sendable]), strict=True))
                for number, message in chunk:
                    outcome = outcomes.get(number, message)
                    failed += not isinstance(outcome, Published)
                    progress.count(outcome)
                    if not args.quiet or not isinstance(outcome, Published):
                        _print_json(_outcome_json(number, outcome))
    finally:
        if stream is not sys.stdin:
            stream.close()
    progress.show(final=True)
    return 1 if failed else 0


# -- tail ---------------------------------------------------------------------------------


def command_tail(args: argparse.Namespace) -> int:
    with _client(args) as client:
        subscription = client.subscribe(
            user=args.user, channels=args.channel, service=args.service,
            session_id=args.session_id, named=False if args.unnamed else None,
            heartbeat_events=True if args.heartbeat_events else None,
            last_event_id=args.last_event_id, history_lost="event", control=args.control,
            max_attempts=args.max_attempts)
        seen = 0
        with subscription:
            for event in subscription:
                _print_json(event.to_dict())
                if not event.is_control:
                    seen += 1
                    if args.count and seen >= args.count:
                        break
    return 0


# -- token --------------------------------------------------------------------------------


def command_token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("JWT_SECRET")
    if not secret:
        raise UsageError("give --secret or set JWT_SECRET (the value the service runs with)")
    roles = list(args.role or [])
    if args.admin and "admin" not in roles:
        roles.append("admin")
    publish = list(args.publish or [])
    if args.service and not publish:
        publish = ["*"]  # a publisher without --publish may target any topic
    claims = build_claims(args.subject, service=args.service, subscribe=args.subscribe or (),
                          publish=publish, broadcast=args.broadcast, roles=roles,
                          ttl_seconds=args.ttl, issuer=args.issuer, audience=args.audience)
    try:
        token = mint_hs256(claims, secret)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.show_claims:
        _print_json(decode_unverified(token), sys.stderr, pretty=True)
    print(token)
    return 0


# -- operations ---------------------------------------------------------------------------


def command_stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(client.stats(), pretty=args.pretty)
    return 0


def command_connections(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.connections(user=args.user, topic=args.topic, instance=args.instance,
                                  limit=args.limit, cursor=args.cursor)
        if args.all:
            everything = list(page.get("connections", []))
            while page.get("next_cursor"):
                page = client.connections(user=args.user, topic=args.topic,
                                          instance=args.instance, limit=args.limit,
                                          cursor=page["next_cursor"])
                everything.extend(page.get("connections", []))
            page = {"connections": everything, "count": len(everything), "next_cursor": None}
    _print_json(page, pretty=args.pretty)
    return 0


def command_kick(args: argparse.Namespace) -> int:
    with _client(args) as client:
        _print_json(client.kick(args.connection_id), pretty=args.pretty)
    return 0


# -- the parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pushservice", formatter_class=formatter,
        description="Publish to pushservice, watch its streams, mint development tokens "
                    "and look after its connections.",
        epilog=ENVIRONMENT + "\nRun 'pushservice COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--url", default=None,
                        help=f"the service (default: PUSHSERVICE_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=None,
                        help="bearer token (default: PUSHSERVICE_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="timeout of each request (default 10)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    send = commands.add_parser(
        "send", formatter_class=formatter, help="publish one message, or many from a file",
        description="Publish one message (from flags or --json), or many from a file or "
                    "stdin (one JSON message per line, sent in batches, in order).",
        epilog="""examples:
  pushservice send --service knowledge-service --type progress --target task_id=t1 \\
      --data progress=65 --data message='处理进度: 65%'
  pushservice send --json '{"type": "info", "service": "billing", "target": {"user_id": "123"},
      "data": {"message": "invoice ready"}}'
  pushservice send --service billing --type info --broadcast --data message=maintenance
  pushservice send --service billing --file messages.jsonl > results.jsonl
  produce-messages | pushservice send --file -

KEY=VALUE values are JSON when they parse as JSON (65, true, [1,2]), text otherwise.
One message prints its result ({"id", "event_id", "topics", "duplicate"}); a file
prints one line per message ({"line": N, ...the result or {"error": ...}}) while
progress goes to stderr. Exit status 1 when any message was refused.""")
    send.add_argument("--service", help="service name (default: PUSHSERVICE_SERVICE); "
                                        "fills in messages from --json/--file that have none")
    send.add_argument("--type", choices=MESSAGE_TYPES, help="message type")
    send.add_argument("--target", action="append", metavar="KEY=VALUE",
                      help="routing key: user_id=123, task_id=t1, channel=news (repeatable)")
    send.add_argument("--data", action="append", metavar="KEY=VALUE",
                      help="a field of data (repeatable)")
    send.add_argument("--metadata", action="append", metavar="KEY=VALUE",
                      help="a field of metadata: priority=high, ttl=600 (repeatable)")
    send.add_argument("--source", help="the message's source")
    send.add_argument("--id", help="your idempotency id (default: a new one)")
    send.add_argument("--broadcast", action="store_true",
                      help="send to every connection (the token needs push.broadcast)")
    send.add_argument("--json", metavar="MESSAGE", help="the whole message as JSON")
    send.add_argument("--file", metavar="PATH", help="messages, one JSON per line; - for stdin")
    send.add_argument("--batch-size", type=int, default=1000, metavar="N",
                      help="messages per request with --file (default 1000)")
    send.add_argument("--quiet", action="store_true",
                      help="with --file: print only refused messages, no progress")
    send.set_defaults(run=command_send)

    tail = commands.add_parser(
        "tail", formatter_class=formatter, help="subscribe and print what arrives",
        description="Subscribe to a stream and print each message as a JSON line "
                    '{"id", "event", "data"}; reconnects by itself and resumes where it '
                    "stopped. Ctrl-C stops.",
        epilog="""examples:
  pushservice tail --user 123
  pushservice tail --channel news --channel alerts --control
  pushservice tail --service knowledge-service --count 10
  pushservice tail --user 123 --last-event-id ec379e9b-1795696500837-0

history-lost events (messages that can no longer be replayed) are always printed.""")
    which = tail.add_mutually_exclusive_group(required=True)
    which.add_argument("--user", help="the user's stream (/sse/user/ID)")
    which.add_argument("--channel", action="append", help="a channel (repeatable)")
    which.add_argument("--service", help="everything a service publishes")
    tail.add_argument("--session-id", help="also the session's messages")
    tail.add_argument("--last-event-id", help="resume after this event id")
    tail.add_argument("--control", action="store_true",
                      help="also print connected, closing and heartbeat events")
    tail.add_argument("--heartbeat-events", action="store_true",
                      help="ask for visible heartbeat events (print them with --control)")
    tail.add_argument("--unnamed", action="store_true", help="ask for frames without event:")
    tail.add_argument("--count", type=int, default=0, metavar="N",
                      help="stop after N messages (default: run until Ctrl-C)")
    tail.add_argument("--max-attempts", type=int, default=None, metavar="N",
                      help="give up after N failed connection attempts in a row")
    tail.set_defaults(run=command_tail)

    token = commands.add_parser(
        "token", formatter_class=formatter, help="mint a development token (HS256)",
        description="Mint an HS256 token signed with the service's JWT_SECRET and print "
                    "it. For development and tests; production tokens come from your "
                    "identity provider.",
        epilog="""examples:
  export JWT_SECRET=...                 # the value the service runs with
  pushservice token 123                                  # reads /sse/user/123
  pushservice token 123 --subscribe 'kb:kb789' --subscribe 'task:*'
  pushservice token knowledge-service --service knowledge-service --publish 'user:*' --broadcast
  pushservice token ops-alice --admin                    # stats, connections, kick
  export PUSHSERVICE_TOKEN=$(pushservice token knowledge-service --service knowledge-service)

A token with --service and no --publish may publish to any topic ('*').""")
    token.add_argument("subject", help="sub: the user id, service or operator name")
    token.add_argument("--service", help="push.service: the service it publishes as")
    token.add_argument("--publish", action="append", metavar="GLOB",
                       help="push.publish: topics it may target (repeatable)")
    token.add_argument("--subscribe", action="append", metavar="GLOB",
                       help="push.subscribe: topics it may read (repeatable)")
    token.add_argument("--broadcast", action="store_true", help="push.broadcast: true")
    token.add_argument("--role", action="append", metavar="ROLE", help="push.roles entry")
    token.add_argument("--admin", action="store_true", help="the admin role")
    token.add_argument("--ttl", type=float, default=3600, metavar="SECONDS",
                       help="lifetime (default 3600)")
    token.add_argument("--secret", help="signing secret (default: JWT_SECRET)")
    token.add_argument("--issuer", help="iss (when the service sets JWT_ISSUER)")
    token.add_argument("--audience", help="aud (when the service sets JWT_AUDIENCE)")
    token.add_argument("--show-claims", action="store_true", help="print the claims to stderr")
    token.set_defaults(run=command_token)

    for name, run, text in (
        ("stats", command_stats, "connection and message statistics (admin token)"),
        ("connections", command_connections, "list open connections (admin token)"),
        ("kick", command_kick, "close a connection wherever it is (admin token)"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("--pretty", action="store_true", help="indented JSON")
        sub.set_defaults(run=run)
        if name == "connections":
            sub.add_argument("--user", help="only this user's connections")
            sub.add_argument("--topic", help="only connections subscribed to this topic")
            sub.add_argument("--instance", help="only this instance's connections")
            sub.add_argument("--limit", type=int, help="page size (1-1000, default 100)")
            sub.add_argument("--cursor", help="the next_cursor of the previous page")
            sub.add_argument("--all", action="store_true", help="follow the cursor to the end")
        if name == "kick":
            sub.add_argument("connection_id", help="as listed by 'pushservice connections'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # A closed pipe (| head) ends the output quietly.
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        return args.run(args)
    except (UsageError, ConfigurationError) as exc:
        parser.error(str(exc))
    except ServiceError as exc:
        _print_json(exc.to_dict(), sys.stderr)
        return 1
    except PushError as exc:
        print(f"pushservice: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0  # pragma: no cover - parser.error exits


if __name__ == "__main__":
    raise SystemExit(main())
