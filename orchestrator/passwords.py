"""Password hashes for the HITL page's users: scrypt from the standard library, constant-time checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str | None) -> bool:
    """True when PASSWORD matches STORED; a missing user still costs one scrypt (no timing oracle)."""
    try:
        algo, n, r, p, salt, dk = (stored or "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$").split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return stored is not None and algo == "scrypt" and hmac.compare_digest(got, base64.b64decode(dk))
