"""Tokens, claims and permissions. The only module that imports jwt.

A token is a JWT signed with one of JWT_ALGORITHMS: HS* with JWT_SECRET, the others with
the private half of JWT_PUBLIC_KEY. The key is chosen by the algorithm the token names,
and only among the allowed ones, so "none" and algorithm confusion (an HS256 token whose
secret is the public key) never verify. ``exp`` and ``sub`` are required; ``nbf`` and
``iat`` are honoured; ``iss`` and ``aud`` are checked when configured. All of them get
JWT_LEEWAY_SECONDS of clock skew.

What a token allows is in its ``push`` claim (see README, "Security"):

    {"sub": "123", "exp": 1767225600,
     "push": {"subscribe": ["kb:kb789", "task:*"],          # topic globs to read
              "service": "knowledge-service",              # the service it publishes as
              "publish": ["user:*", "kb:*"],                # topic globs it may target
              "broadcast": false,                           # may it broadcast
              "roles": ["admin"]}}                          # connection and admin APIs

Every member is optional. Without any, the holder may read its own user topic
(``user:<sub>``) and broadcasts, and nothing else.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jwt
from flask import g, request

from .engine.topics import (
    BROADCAST_TOPIC,
    SERVICE_PATTERN,
    is_valid_name,
    service_topic,
    user_topic,
)
from .errors import ForbiddenError, SettingsError, UnauthorizedError
from .message import MAX_PROBLEMS, Message
from .settings import HMAC_ALGORITHMS, Settings, auth_problems

log = logging.getLogger(__name__)

CLAIM = "push"
ADMIN_ROLE = "admin"
# A token longer than this is not one we issued; refuse it before parsing.
MAX_TOKEN_BYTES = 8192
_PATTERN = re.compile(r"[A-Za-z0-9_.:@*?-]{1,256}")
_ROLE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_PRINCIPAL_KEY = "pushservice_principal"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may do.

    ``subject`` is the token's ``sub`` (None when authentication is disabled, and then
    ``unrestricted`` is True: everything is allowed). ``expires_at`` is when the token
    stops being accepted (exp plus leeway, Unix seconds), None when it never does.
    """

    subject: str | None
    service: str | None = None
    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    broadcast: bool = False
    roles: frozenset[str] = field(default_factory=frozenset)
    expires_at: float | None = None
    unrestricted: bool = False

    @classmethod
    def open_access(cls) -> Principal:
        """The caller when ENABLE_AUTH=false: allowed everything, never expires."""
        return cls(subject=None, unrestricted=True)

    @property
    def is_admin(self) -> bool:
        return self.unrestricted or ADMIN_ROLE in self.roles

    # -- subscribing --------------------------------------------------------------------

    def may_subscribe(self, topic: str) -> bool:
        """Whether this caller may receive messages on ``topic``: its own user topic, or
        one that a ``subscribe`` pattern matches."""
        if self.unrestricted or (self.subject is not None and topic == user_topic(self.subject)):
            return True
        return _matches_any(topic, self.subscribe)

    def check_subscribe(self, topics: Sequence[str]) -> None:
        """Raise ForbiddenError naming every topic of ``topics`` this caller may not read;
        a request with one forbidden topic is refused whole."""
        refused = [topic for topic in topics if not self.may_subscribe(topic)]
        if refused:
            raise ForbiddenError(
                f"This token may not subscribe to {', '.join(refused)}.",
                details={"forbidden": refused, "subject": self.subject},
                code="topic_forbidden")

    # -- publishing ---------------------------------------------------------------------

    def check_publisher(self) -> None:
        """Raise ForbiddenError unless this caller publishes as a service at all."""
        if not self.unrestricted and self.service is None:
            raise ForbiddenError(
                "This token does not name a service to publish as (claim push.service).",
                code="publish_forbidden")

    def publish_problem(self, message: Message, broadcast: bool = False) -> dict[str, Any] | None:
        """Why this caller may not publish ``message`` (a code, an error and the topic),
        or None when it may."""
        if self.unrestricted:
            return None
        if self.service is None:
            return {"code": "publish_forbidden",
                    "error": "the token names no service to publish as"}
        if message.service != self.service:
            return {"code": "service_mismatch",
                    "error": f"the token publishes as {self.service}, not as {message.service}"}
        if broadcast:
            if not self.broadcast:
                return {"code": "broadcast_forbidden",
                        "error": "the token may not broadcast (claim push.broadcast)"}
            return None
        own = service_topic(self.service)
        for topic in message.topics:
            if topic == own:
                continue
            if topic.startswith("service:"):
                # service:<name> carries what that service publishes: no one else's.
                return {"code": "service_mismatch", "topic": topic,
                        "error": f"{topic} carries only what {topic[8:]} publishes, and the "
                                 f"token publishes as {self.service}"}
            if topic == BROADCAST_TOPIC or not _matches_any(topic, self.publish):
                return {"code": "topic_forbidden", "topic": topic,
                        "error": f"the token may not publish to {topic}"}
        return None

    def check_publish(self, messages: Sequence[Message], broadcast: bool = False) -> None:
        """Raise ForbiddenError when any of ``messages`` may not be published; nothing of
        a refused batch is published. ``details`` lists the refusals by index."""
        refusals = []
        for index, message in enumerate(messages):
            problem = self.publish_problem(message, broadcast)
            if problem is not None:
                refusals.append({"index": index, **problem})
                if len(refusals) >= MAX_PROBLEMS:
                    break
        if not refusals:
            return
        first = refusals[0]
        if len(messages) == 1:
            text = first["error"][0].upper() + first["error"][1:] + "."
            raise ForbiddenError(text, details=[first], code=first["code"])
        raise ForbiddenError(
            f"Message {first['index']}: {first['error']}; nothing was published.",
            details=refusals, code=first["code"])


def _matches_any(topic: str, patterns: Iterable[str]) -> bool:
    # Topics cannot hold glob characters (names exclude them), so a pattern only ever
    # matches as a glob, never by accident.
    return any(fnmatch.fnmatchcase(topic, pattern) for pattern in patterns)


class Authenticator:
    """Verifies tokens against one app's settings.

    Raises SettingsError at construction when the settings cannot authenticate anything
    (no usable secret or key), so that a misconfigured service refuses to start.
    """

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.enable_auth
        self.algorithms = settings.jwt_algorithms
        self.issuer = settings.jwt_issuer or None
        self.audience = list(settings.jwt_audience) or None
        self.leeway = settings.jwt_leeway_seconds
        self.cookie_name = settings.auth_cookie_name
        self.max_name_length = settings.max_name_length
        self._keys: dict[str, Any] = {}
        if not self.enabled:
            return
        problems = auth_problems(True, settings.jwt_algorithms, settings.jwt_secret,
                                 settings.jwt_public_key)
        if problems:
            raise SettingsError(problems)
        available = jwt.algorithms.get_default_algorithms()
        for alg in self.algorithms:
            if alg in HMAC_ALGORITHMS:
                self._keys[alg] = settings.jwt_secret.encode()
                continue
            if alg not in available:
                needs = f"JWT_ALGORITHMS: {alg} needs the 'cryptography' package (PyJWT[crypto])"
                raise SettingsError([needs])
            try:
                self._keys[alg] = available[alg].prepare_key(settings.jwt_public_key)
            except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
                raise SettingsError([f"JWT_PUBLIC_KEY is not a public key for {alg}: {exc}"]
                                    ) from None
        self._required = ["exp", "sub"]
        if self.issuer:
            self._required.append("iss")
        if self.audience:
            self._required.append("aud")

    def verify(self, token: str) -> Principal:
        """The principal a token stands for; UnauthorizedError (401) when it is not
        acceptable: malformed, forged, expired, not yet valid, for another issuer or
        audience, or with claims of the wrong shape."""
        if not self.enabled:
            return Principal.open_access()
        if not token:
            raise _invalid("The token is empty.")
        if len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise _invalid("The token is not a JWT.")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid("The token is not a JWT.") from None
        alg = header.get("alg")
        key = self._keys.get(alg) if isinstance(alg, str) else None
        if key is None:
            raise _invalid("The token's signing algorithm is not accepted here "
                           f"(JWT_ALGORITHMS: {', '.join(self.algorithms)}).",
                           code="invalid_token")
        try:
            payload = jwt.decode(
                token, key, algorithms=[alg], audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": self._required},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("The token has expired; get a fresh one.",
                           code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("The token is not valid yet (nbf or iat is in the future).",
                           code="token_not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise _invalid("The token is meant for another audience.",
                           code="invalid_audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("The token comes from another issuer.",
                           code="invalid_issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"The token lacks the {exc.claim!r} claim.") from None
        except jwt.InvalidSignatureError:
            raise _invalid("The token's signature does not verify.") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            log.debug("token refused: %s", type(exc).__name__)
            raise _invalid("The token is malformed.") from None
        return self._principal(payload)

    def _principal(self, payload: Mapping[str, Any]) -> Principal:
        for name in _TIME_CLAIMS:
            if name in payload and not _is_unix_seconds(payload[name]):
                # RFC 7519 NumericDate: a JSON number of seconds. PyJWT would take "17..."
                # as well, and an exp in milliseconds or past year 9999 is no date at all.
                raise _invalid(f"Claim {name} must be a number of seconds since 1970 "
                               "(a JSON number, before year 10000).")
        subject = payload["sub"]
        if not is_valid_name(subject, self.max_name_length):
            raise _invalid(f"Claim sub must be 1-{self.max_name_length} letters, digits, "
                           "'_', '-', '.', ':', '@'.")
        claim = payload.get(CLAIM, {})
        if not isinstance(claim, dict):
            raise _invalid(f"Claim {CLAIM} must be a JSON object.")
        service = claim.get("service")
        if service is not None and not (isinstance(service, str) and SERVICE_PATTERN.fullmatch(service)):
            raise _invalid(f"Claim {CLAIM}.service must be a service name "
                           "(1-64 letters, digits, '_', '-', '.').")
        broadcast = claim.get("broadcast", False)
        if not isinstance(broadcast, bool):
            raise _invalid(f"Claim {CLAIM}.broadcast must be true or false.")
        roles = _strings(claim, "roles", _ROLE)
        return Principal(
            subject=subject,
            service=service,
            subscribe=_strings(claim, "subscribe", _PATTERN),
            publish=_strings(claim, "publish", _PATTERN),
            broadcast=broadcast,
            roles=frozenset(roles),
            expires_at=float(payload["exp"]) + self.leeway,
        )


_TIME_CLAIMS = ("exp", "nbf", "iat")
# 9999-12-31T23:59:59Z: later "dates" are milliseconds or nonsense.
_LAST_UNIX_SECOND = 253_402_300_799


def _is_unix_seconds(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and 0 <= value <= _LAST_UNIX_SECOND)


def _strings(claim: Mapping[str, Any], name: str, pattern: re.Pattern) -> tuple[str, ...]:
    values = claim.get(name, [])
    if not isinstance(values, list) or len(values) > 1000 or not all(
        isinstance(value, str) and pattern.fullmatch(value) for value in values
    ):
        raise _invalid(f"Claim {CLAIM}.{name} must be a list of "
                       + ("roles." if name == "roles" else
                          "topic patterns (letters, digits, '_ - . : @' and the globs * ?)."))
    return tuple(values)


def _invalid(message: str, code: str = "invalid_token") -> UnauthorizedError:
    return UnauthorizedError(message, code=code, error="invalid_token")


# -- the request's token ---------------------------------------------------------------------


def token_from_request(stream: bool = False) -> str | None:
    """The request's token, or None when it carries none.

    ``Authorization: Bearer`` always counts. A stream (``stream=True``) also takes
    ``?token=`` and then the auth cookie, because EventSource cannot set headers. The first
    source present is used, even when its token is bad: a bad token is never passed over
    for another one, nor for anonymous access.
    """
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise UnauthorizedError(
                "Send the token as 'Authorization: Bearer <token>'.",
                code="invalid_token", error="invalid_request")
        return value.strip()
    if stream:
        if "token" in request.args:
            return request.args.get("token", "")
        from .web.extension import push_service

        cookie = request.cookies.get(push_service().auth.cookie_name)
        if cookie is not None:
            return cookie
    return None


def authenticate(stream: bool = False) -> Principal:
    """The principal of the current request (cached for the request).

    With authentication disabled, an unrestricted principal. Otherwise the request's
    token must verify (see ``token_from_request`` for where it is looked for):
    UnauthorizedError (401) when there is none or it is not acceptable.
    """
    cached = g.get(_PRINCIPAL_KEY)
    if cached is not None:
        return cached
    from .web.extension import push_service

    authenticator = push_service().auth
    if not authenticator.enabled:
        principal = Principal.open_access()
    else:
        token = token_from_request(stream)
        if token is None:
            where = ("an 'Authorization: Bearer' header, a ?token= parameter or the "
                     f"{authenticator.cookie_name} cookie") if stream else (
                "an 'Authorization: Bearer' header")
            raise UnauthorizedError(f"This endpoint needs a token: send it in {where}.",
                                    code="missing_token", error=None)
        principal = authenticator.verify(token)
    setattr(g, _PRINCIPAL_KEY, principal)
    return principal


def admin_only() -> None:
    """Authenticate the request and require the admin role; 401 or 403 otherwise.

    Use as a blueprint's ``before_request`` to protect every view of it (it returns
    None, so the view runs when it passes). CORS preflights pass: they carry no
    credentials, and the request they announce is checked when it comes.
    """
    if request.method == "OPTIONS":
        return
    if not authenticate().is_admin:
        raise ForbiddenError(f"This endpoint needs the {ADMIN_ROLE} role "
                             f"(claim {CLAIM}.roles).", code="admin_required")


# -- minting (development, tests, the tokens command) ----------------------------------------


def build_claims(subject: str, *, service: str | None = None,
                 subscribe: Sequence[str] = (), publish: Sequence[str] = (),
                 broadcast: bool = False, roles: Sequence[str] = (),
                 ttl_seconds: float = 3600, not_before_seconds: float | None = None,
                 issuer: str | None = None, audience: str | Sequence[str] | None = None,
                 now: float | None = None) -> dict[str, Any]:
    """The claims of a token for ``subject`` valid for ``ttl_seconds`` from ``now``.

    ``not_before_seconds`` sets ``nbf`` that far from now (None: no nbf). Members of the
    ``push`` claim are only included when they grant something.
    """
    now = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": subject, "iat": int(now), "exp": int(now + ttl_seconds)}
    if not_before_seconds is not None:
        claims["nbf"] = int(now + not_before_seconds)
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience if isinstance(audience, str) else list(audience)
    push: dict[str, Any] = {}
    if subscribe:
        push["subscribe"] = list(subscribe)
    if service is not None:
        push["service"] = service
    if publish:
        push["publish"] = list(publish)
    if broadcast:
        push["broadcast"] = True
    if roles:
        push["roles"] = list(roles)
    if push:
        claims[CLAIM] = push
    return claims


def mint_token(claims: Mapping[str, Any], key: str | bytes, algorithm: str = "HS256",
               headers: Mapping[str, Any] | None = None) -> str:
    """Sign ``claims``: ``key`` is the shared secret for HS*, a PEM private key otherwise.

    Raises ValueError when the key does not suit the algorithm.
    """
    try:
        return jwt.encode(dict(claims), key, algorithm=algorithm,
                          headers=dict(headers) if headers else None)
    except jwt.PyJWTError as exc:
        raise ValueError(str(exc)) from exc
