"""Bearer-token authentication: JWT verification, the principal, and dev tokens.

Tokens are HS256 with the configured secret, or (when a public key file or a JWKS file is
configured) RS*/PS*/ES* signed. The algorithm is chosen by the key that is configured for it,
never trusted from the token alone; a JWKS key is picked by the token's ``kid``. Missing,
expired or badly signed tokens are ``UNAUTHORIZED`` (401).

A client sends the same token with every request until it expires, so a verified token's
principal is kept (bounded, per gateway process) and reused while its ``exp``/``nbf`` window
holds; outside it, or for any other token, the full verification runs again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp

from infraflow.gateway.core.access import Principal, principal_from_claims
from infraflow.gateway.core.errors import UnauthorizedError
from infraflow.gateway.settings import AuthSettings

PUBLIC_PATHS: Final = ("^/healthz$", "^/readyz$", "^/schema")
EXCLUDE_OPT_KEY: Final = "exclude_from_auth"
_RSA_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS: Final = ("ES256", "ES384", "ES512")
_VERIFIED_CACHE: Final = 4096


class JwtVerifier:
    """Verifies bearer tokens against the configured keys and builds the ``Principal``."""

    def __init__(self, settings: AuthSettings) -> None:
        self._keys: dict[str, Any] = {}
        if settings.jwt_hs256_secret is not None:
            secret = settings.jwt_hs256_secret.get_secret_value()
            if secret:
                self._keys["HS256"] = secret
        if settings.jwt_public_key_file:
            pem = Path(settings.jwt_public_key_file).read_bytes()
            key = load_pem_public_key(pem)
            if isinstance(key, rsa.RSAPublicKey):
                self._keys.update(dict.fromkeys(_RSA_ALGORITHMS, key))
            elif isinstance(key, ec.EllipticCurvePublicKey):
                self._keys.update(dict.fromkeys(_EC_ALGORITHMS, key))
            else:
                raise ValueError("the JWT public key must be an RSA or EC key")
        self._jwks: dict[str | None, dict[str, Any]] = {}
        if settings.jwt_jwks_file:
            self._jwks = _load_jwks(Path(settings.jwt_jwks_file))
        if not self._keys and not self._jwks:
            raise ValueError(
                "no JWT key configured: set INFRAFLOW_AUTH__JWT_HS256_SECRET, "
                "INFRAFLOW_AUTH__JWT_PUBLIC_KEY_FILE or INFRAFLOW_AUTH__JWT_JWKS_FILE"
            )
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.leeway_s
        self._verified: dict[str, tuple[Principal, float, float]] = {}

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``UnauthorizedError`` otherwise."""
        hit = self._verified.get(token)
        if hit is not None:
            principal, not_before, expires = hit
            if not_before <= time.time() <= expires:
                return principal
            del self._verified[token]
        claims = self._verified_claims(token)
        principal = principal_from_claims(claims)
        if len(self._verified) >= _VERIFIED_CACHE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        nbf = claims.get("nbf")
        self._verified[token] = (
            principal,
            float(nbf) - self._leeway if isinstance(nbf, (int, float)) else float("-inf"),
            float(claims["exp"]) + self._leeway,
        )
        return principal

    def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError("the bearer token is malformed") from exc
        algorithm = header.get("alg")
        key = self._key_for(algorithm, header.get("kid"))
        if key is None or not isinstance(algorithm, str):
            raise UnauthorizedError("the bearer token is signed with an unaccepted algorithm")
        required = (
            ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": required, "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise UnauthorizedError("the bearer token has expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise UnauthorizedError("the bearer token's signature is not valid") from exc
        except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
            raise UnauthorizedError("the bearer token was not issued for this API") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise UnauthorizedError(f"the bearer token has no '{exc.claim}' claim") from exc
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError("the bearer token is not valid") from exc
        return claims

    def _key_for(self, algorithm: object, kid: object) -> Any:
        """The key that verifies ``algorithm`` (and ``kid``, for a JWKS), or None."""
        if not isinstance(algorithm, str):
            return None
        if self._jwks:
            entry = self._jwks.get(kid if isinstance(kid, str) else None)
            if entry is None and kid is None and len(self._jwks) == 1:
                entry = next(iter(self._jwks.values()))
            if entry is not None and algorithm in entry["algorithms"]:
                return entry["key"]
        return self._keys.get(algorithm)


def _load_jwks(path: Path) -> dict[str | None, dict[str, Any]]:
    """``kid`` -> {key, algorithms} of the public keys in a JWKS file (private or symmetric
    keys are refused: this file is for verification only)."""
    document = json.loads(path.read_text())
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError(f"{path} is not a JSON Web Key Set with keys")
    out: dict[str | None, dict[str, Any]] = {}
    for data in keys:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        if "d" in data or data.get("kty") not in ("RSA", "EC"):
            raise ValueError(f"{path} may hold only RSA or EC public keys")
        key = jwt.PyJWK(data).key
        algorithms: tuple[str, ...]
        if isinstance(key, rsa.RSAPublicKey):
            algorithms = (data["alg"],) if "alg" in data else _RSA_ALGORITHMS
        elif isinstance(key, ec.EllipticCurvePublicKey):
            algorithms = (data["alg"],) if "alg" in data else _EC_ALGORITHMS
        else:
            raise ValueError(f"{path} may hold only RSA or EC public keys")
        out[data.get("kid")] = {"key": key, "algorithms": algorithms}
    if not out:
        raise ValueError(f"{path} has no signature keys")
    return out


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        raise UnauthorizedError("an Authorization: Bearer <token> header is required")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates every route except the public ones (health, the API document)."""

    def __init__(self, app: ASGIApp, verifier: JwtVerifier) -> None:
        super().__init__(app, exclude=list(PUBLIC_PATHS), exclude_from_auth_key=EXCLUDE_OPT_KEY)
        self._verifier = verifier

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection.headers.get("authorization"))
        return AuthenticationResult(user=self._verifier.verify(token), auth=None)


def mint_token(
    secret: str,
    sub: str,
    *,
    roles: Sequence[str] = (),
    projects: Mapping[str, str] | None = None,
    ttl_s: float = 3600.0,
    org: str | None = None,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
) -> str:
    """An HS256 token for development and tests (the local stack prints one)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "roles": list(roles),
        "iat": issued,
        "exp": issued + int(ttl_s),
    }
    if projects:
        claims["projects"] = dict(projects)
    if org:
        claims["org"] = org
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
