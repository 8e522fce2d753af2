"""Verifying bearer JWTs for :mod:`app.auth`, in a module of its own so that a server
without ``auth_jwt_key`` or ``auth_jwks_url`` never imports PyJWT and cryptography
(tens of milliseconds of its start-up)."""

from __future__ import annotations

import logging
from typing import Any, cast

import anyio.to_thread
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.auth import Principal, Unauthorized, principal_from_claims
from app.errors import Unavailable
from app.settings import Settings

log = logging.getLogger("dvid_cloud")

PEM_MARK = "-----BEGIN"


def load_static_key(text: str) -> Any:
    """A PEM public key or certificate as a key object; anything else is an HMAC secret."""
    if not text.lstrip().startswith(PEM_MARK):
        return text
    data = text.strip().encode()
    if b"CERTIFICATE" in data.split(b"\n", 1)[0]:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def asymmetric(algorithms: list[str]) -> list[str]:
    """The public-key algorithms among ``algorithms`` (never HS*, against key confusion)."""
    return [a for a in algorithms if not a.upper().startswith("HS")]


def symmetric(algorithms: list[str]) -> list[str]:
    """The shared-secret (HS*) algorithms among ``algorithms``."""
    return [a for a in algorithms if a.upper().startswith("HS")]


class TokenVerifier:
    """Checks bearer JWTs against a static key and/or the keys of a JWKS URL."""

    def __init__(self, settings: Settings) -> None:
        self.audience = settings.auth_audience
        self.issuer = settings.auth_issuer
        self.key: Any = None
        self.key_algorithms: list[str] = []
        if settings.auth_jwt_key:
            self.key = load_static_key(settings.auth_jwt_key)
            pick = symmetric if isinstance(self.key, str) else asymmetric
            self.key_algorithms = pick(settings.auth_jwt_algorithms)
            if not self.key_algorithms:
                raise ValueError(
                    f"auth_jwt_algorithms {settings.auth_jwt_algorithms} has none that "
                    "suits auth_jwt_key"
                )
        self.jwks: jwt.PyJWKClient | None = None
        self.jwks_algorithms = asymmetric(settings.auth_jwt_algorithms)
        if settings.auth_jwks_url:
            self.jwks = jwt.PyJWKClient(settings.auth_jwks_url, cache_keys=True, timeout=10)

    async def verify(self, token: str) -> Principal:
        """The caller a valid token names; Unauthorized when it is not valid."""
        try:
            key, algorithms = await self._key_for(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token has expired", invalid_token=True) from None
        except jwt.PyJWKClientConnectionError as e:
            log.warning("JWKS unavailable", extra={"error": str(e)})
            raise Unavailable("cannot fetch the keys that verify bearer tokens") from None
        except (jwt.PyJWTError, ValueError, TypeError) as e:
            raise Unauthorized(f"invalid bearer token: {e}", invalid_token=True) from None
        return principal_from_claims(claims)

    async def _key_for(self, token: str) -> tuple[Any, list[str]]:
        """The key (and algorithms) to check ``token`` with: the JWKS key of its ``kid`` if a
        JWKS URL is configured and the token names one (or no static key exists)."""
        if self.jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid is not None or self.key is None:
                # A None kid matches a JWKS key without one (PyJWT's own rule).
                kid_text = cast(str, kid)
                signing = await anyio.to_thread.run_sync(self.jwks.get_signing_key, kid_text)
                return signing, self.jwks_algorithms
        return self.key, self.key_algorithms
