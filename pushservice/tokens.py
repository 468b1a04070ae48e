"""``python -m pushservice.tokens``: mint tokens for development and tests.

    python -m pushservice.tokens subscriber 123 --subscribe 'kb:kb789' --subscribe 'task:*'
    python -m pushservice.tokens publisher knowledge-service --publish 'user:*' --broadcast
    python -m pushservice.tokens admin ops

The token goes to stdout (``TOKEN=$(python -m pushservice.tokens subscriber 123)``), its
claims to stderr with ``--show-claims``. HS* tokens are signed with JWT_SECRET; RS*, PS*,
ES* and EdDSA tokens with ``--private-key FILE``. JWT_ALGORITHMS (its first entry),
JWT_ISSUER and JWT_AUDIENCE are taken from the environment, like the service does.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .auth import ADMIN_ROLE, build_claims, mint_token
from .errors import SettingsError
from .settings import HMAC_ALGORITHMS, PUBLIC_KEY_ALGORITHMS, Settings, secret_problem

KINDS = {
    "subscriber": "a user who reads /sse/user/<NAME> (plus --subscribe patterns)",
    "publisher": "a service NAME that publishes (to --publish patterns, default '*')",
    "admin": "an operator NAME with the admin role",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pushservice.tokens",
        description="Mint a pushservice token (JWT) for development and tests.",
        epilog="kinds: " + "; ".join(f"{kind}: {what}" for kind, what in KINDS.items()))
    parser.add_argument("kind", choices=tuple(KINDS))
    parser.add_argument("name", help="the user id (sub), service name or operator name")
    parser.add_argument("--subscribe", action="append", default=[], metavar="PATTERN",
                        help="a topic glob the holder may subscribe to (repeatable)")
    parser.add_argument("--publish", action="append", default=[], metavar="PATTERN",
                        help="a topic glob the holder may publish to (repeatable)")
    parser.add_argument("--broadcast", action="store_true", help="allow broadcasts")
    parser.add_argument("--admin", action="store_true", help="add the admin role")
    parser.add_argument("--ttl", type=float, default=3600, metavar="SECONDS",
                        help="lifetime from now (default 3600; negative: already expired)")
    parser.add_argument("--not-before", type=float, default=None, metavar="SECONDS",
                        help="not valid until this many seconds from now (nbf)")
    parser.add_argument("--algorithm", default=None,
                        help="signing algorithm (default: the first of JWT_ALGORITHMS)")
    parser.add_argument("--private-key", default=None, metavar="FILE",
                        help="PEM private key for RS*, PS*, ES* and EdDSA")
    parser.add_argument("--issuer", default=None, help="iss (default: JWT_ISSUER)")
    parser.add_argument("--audience", default=None, help="aud (default: JWT_AUDIENCE)")
    parser.add_argument("--show-claims", action="store_true",
                        help="also print the claims, as JSON, to stderr")
    return parser


def main(argv: Sequence[str] | None = None, settings: Settings | None = None) -> int:
    """Run the command; returns the exit status (2 for unusable settings or options)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings or Settings.from_env()
    except SettingsError as exc:
        print(f"pushservice.tokens: {exc}", file=sys.stderr)
        return 2
    algorithm = args.algorithm or settings.jwt_algorithms[0]
    if algorithm in HMAC_ALGORITHMS:
        problem = secret_problem(settings.jwt_secret, (algorithm,))
        if problem:
            print(f"pushservice.tokens: {problem}", file=sys.stderr)
            return 2
        key: str | bytes = settings.jwt_secret
    elif algorithm in PUBLIC_KEY_ALGORITHMS:
        if not args.private_key:
            parser.error(f"{algorithm} tokens are signed with --private-key FILE (PEM)")
        try:
            with open(args.private_key, "rb") as handle:
                key = handle.read()
        except OSError as exc:
            parser.error(f"cannot read --private-key: {exc}")
    else:
        parser.error(f"unknown algorithm {algorithm!r}; use one of "
                     + ", ".join(HMAC_ALGORITHMS + PUBLIC_KEY_ALGORITHMS))

    service = args.name if args.kind == "publisher" else None
    publish = args.publish or (["*"] if args.kind == "publisher" else [])
    roles = [ADMIN_ROLE] if args.kind == "admin" or args.admin else []
    audience = args.audience or (settings.jwt_audience[0] if settings.jwt_audience else None)
    claims = build_claims(
        args.name, service=service, subscribe=args.subscribe, publish=publish,
        broadcast=args.broadcast, roles=roles, ttl_seconds=args.ttl,
        not_before_seconds=args.not_before, issuer=args.issuer or settings.jwt_issuer,
        audience=audience)
    try:
        token = mint_token(claims, key, algorithm)
    except (ValueError, TypeError) as exc:
        print(f"pushservice.tokens: cannot sign with {algorithm}: {exc}", file=sys.stderr)
        return 2
    if args.show_claims:
        print(json.dumps(claims, indent=2), file=sys.stderr)
    print(token)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
