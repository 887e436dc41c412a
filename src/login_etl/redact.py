"""Keep secrets out of everything the process prints, logs or raises.

libpq quotes a malformed connection string word for word in its errors,
password included, and a library may log what it was given. So every log
line and every error line passes through `scrub` on its way out: it replaces
each registered secret (the database URL and its password, the masking
keys) and anything shaped like a password in a URL or a ``password=``
keyword. Registering happens once, when settings are loaded.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_SECRET = 4  # shorter strings would blot out ordinary words
_secrets: set[str] = set()
_lock = threading.Lock()
# user:password@ in a URI (also with the "//" mistyped), and password=... keywords.
_URL_PASSWORD = re.compile(r"(?P<head>[/\s\"'=]?[^\s:/@\"']*:)(?P<pw>[^\s@/\"']+)(?P<tail>@)")
_KEYWORD_PASSWORD = re.compile(
    r"(?P<head>password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|[^\s&\"']+)", re.I
)


def register(*secrets: str | None) -> None:
    """Remember `secrets` so that `scrub` hides them wherever they appear."""
    with _lock:
        for secret in secrets:
            if secret and len(secret.strip()) >= _MIN_SECRET:
                _secrets.add(secret.strip())
                for password in passwords_in(secret):
                    if len(password) >= _MIN_SECRET:
                        _secrets.add(password)


def passwords_in(text: str) -> list[str]:
    """Whatever looks like a password in a connection string, even a malformed one."""
    found = [m.group("pw") for m in _URL_PASSWORD.finditer(text)]
    found += [m.group("pw").strip("'") for m in _KEYWORD_PASSWORD.finditer(text)]
    return found


def scrub(text: str) -> str:
    """`text` with every registered secret and password-shaped substring replaced."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}{m.group('tail')}", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}", text)


def forget_all() -> None:
    """Drop every registered secret (tests)."""
    with _lock:
        _secrets.clear()
