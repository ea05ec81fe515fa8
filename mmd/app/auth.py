"""Who may use the app: moderator accounts and API tokens from the environment, signed session cookies,
CSRF tokens for forms. Nothing here is ever read from or written to params, logs or pages.

- Accounts: `$MMD_APP_USERS` (the variable `app.users_env` names) = `alice:<hash>,bob:<hash>`, each hash
  made by `mmd app hash-password` (PBKDF2-SHA256, 600,000 iterations, a random salt:
  `pbkdf2_sha256$<iterations>$<salt>$<digest>`). Removing a user ends their sessions.
- API tokens: `$MMD_APP_TOKENS` = `ci:<token>,...` (at least 16 characters each), sent as
  `Authorization: Bearer <token>`; the caller is then `api:<name>`.
- Sessions: a cookie holding the user, an expiry and a CSRF token, signed with HMAC-SHA256 under
  `$MMD_APP_SECRET` (a random key per process when unset: sessions then end with the process).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass, field

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000
MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "mmd_session"
LOGIN_COOKIE = "mmd_login"      # the CSRF nonce of the sign-in form
FLASH_COOKIE = "mmd_flash"
MAX_FAILURES = 5                # failed sign-ins per user within FAILURE_WINDOW_S before a pause
FAILURE_WINDOW_S = 300.0


class AuthConfigError(ValueError):
    """An account or token variable that cannot be used (the message never quotes a secret)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`pbkdf2_sha256$<iterations>$<salt>$<digest>` of a password (what `$MMD_APP_USERS` holds)."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64(salt)}${_b64(digest)}"


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, encoded: str) -> bool:
    try:
        algorithm, iterations, salt, digest = encoded.split("$")
        if algorithm != ALGORITHM:
            return False
        got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), int(iterations))
        return hmac.compare_digest(got, _unb64(digest))
    except (ValueError, TypeError):
        return False


def _pairs(value: str, what: str) -> dict[str, str]:
    out = {}
    for n, entry in enumerate(e.strip() for e in value.replace("\n", ",").split(",")):
        if not entry:
            continue
        name, sep, secret = entry.partition(":")
        if not sep or not name.strip() or not secret.strip():
            raise AuthConfigError(f"{what}: entry {n + 1} is not name:value")
        out[name.strip()] = secret.strip()
    return out


def parse_users(value: str, env_name: str = "MMD_APP_USERS") -> dict[str, str]:
    users = _pairs(value, f"${env_name}")
    for name, encoded in users.items():
        if not encoded.startswith(ALGORITHM + "$") or encoded.count("$") != 3:
            raise AuthConfigError(f"${env_name}: the hash of user {name!r} is not a `mmd app hash-password` hash")
    return users


def parse_tokens(value: str, env_name: str = "MMD_APP_TOKENS") -> dict[str, str]:
    tokens = _pairs(value, f"${env_name}")
    for name, token in tokens.items():
        if len(token) < MIN_TOKEN_CHARS:
            raise AuthConfigError(f"${env_name}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters")
    return tokens


@dataclass
class Auth:
    """Accounts, tokens and the signing key, read once from the environment."""

    users: dict[str, str]
    tokens: dict[str, str]
    key: bytes
    session_s: float
    secure_cookies: bool = False
    key_is_random: bool = False
    _failures: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_env(cls, cfg, env: dict | None = None) -> "Auth":
        env = os.environ if env is None else env
        secret = env.get(cfg.secret_env, "")
        return cls(parse_users(env.get(cfg.users_env, ""), cfg.users_env),
                   parse_tokens(env.get(cfg.tokens_env, ""), cfg.tokens_env),
                   hashlib.sha256(secret.encode()).digest() if secret else secrets.token_bytes(32),
                   cfg.session_hours * 3600.0, cfg.base_url.startswith("https://"), key_is_random=not secret)

    # signing -------------------------------------------------------------------------------------
    def sign(self, payload: dict) -> str:
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())}"

    def unsign(self, value: str | None) -> dict | None:
        """The payload of a value this key signed and that has not expired; None otherwise."""
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        want = _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(mac, want):
            return None
        try:
            payload = json.loads(_unb64(body))
        except ValueError:
            return None
        if not isinstance(payload, dict) or float(payload.get("exp", 0)) < time.time():
            return None
        return payload

    # sign-in -------------------------------------------------------------------------------------
    def check_password(self, user: str, password: str) -> str | None:
        """None when the password is right; else why not (the same words for an unknown user)."""
        now = time.time()
        recent = [t for t in self._failures.get(user, []) if now - t < FAILURE_WINDOW_S]
        if len(recent) >= MAX_FAILURES:
            return "too many failed sign-ins: wait a few minutes"
        encoded = self.users.get(user)
        # an unknown user costs the same as a known one, so timing does not tell which names exist
        ok = verify_password(password, encoded or _dummy_hash()) and encoded is not None
        if ok:
            self._failures.pop(user, None)
            return None
        self._failures[user] = recent + [now]
        return "unknown user or wrong password"

    def session(self, user: str) -> tuple[str, dict]:
        payload = {"u": user, "exp": time.time() + self.session_s, "csrf": secrets.token_urlsafe(24)}
        return self.sign(payload), payload

    def session_user(self, cookie: str | None) -> dict | None:
        """The session of a signed, unexpired cookie of a user who still has an account."""
        payload = self.unsign(cookie)
        if payload is None or payload.get("u") not in self.users or not payload.get("csrf"):
            return None
        return payload

    def token_user(self, header: str | None) -> str | None:
        """`api:<name>` for a valid `Authorization: Bearer <token>`."""
        if not header or not header.lower().startswith("bearer "):
            return None
        given = header[7:].strip()
        for name, token in self.tokens.items():
            if hmac.compare_digest(given.encode(), token.encode()):
                return f"api:{name}"
        return None


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (a missing one is never equal)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())
