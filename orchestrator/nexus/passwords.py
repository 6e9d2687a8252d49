"""Password hashes for the HITL page's users: scrypt from the standard library.

The stored form is `scrypt$N$r$p$salt$key` (base64). Checking a password never needs the stored key in
Python: the page gets the salt and parameters from nexus.login_params, derives the key here, and
nexus.sign_in compares it in SQL.
"""

from __future__ import annotations

import base64
import hashlib
import os

N, R, P = 2**14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def derive_key(password: str, salt: bytes, n: int, r: int, p: int, dklen: int = 32) -> bytes:
    """The scrypt key of PASSWORD with a stored hash's salt and parameters: what nexus.sign_in compares.

    Parameters scrypt refuses (or that need more than 64 MiB) give an empty key, which never matches.
    """
    try:
        return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                              maxmem=64 * 1024 * 1024)
    except (ValueError, MemoryError):
        return b""
