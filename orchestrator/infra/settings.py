"""Reading settings from the environment, once, with checks: every service's settings object is built
with these readers, so a bad value stops the program with the variable, the value and the fix."""

from __future__ import annotations

import os
from collections.abc import Mapping


class SettingError(SystemExit):
    """A setting that cannot be used: the message names the variable, its value and the fix. Raised as
    SystemExit, so the program stops with that message and exit code 1, never a traceback."""

    def __init__(self, name: str, raw: str, fix: str, *, known: bool = True):
        super().__init__(f"{name}={raw!r}{':' if known else ' is not known;'} {fix}")


class Env:
    """A view of the environment (os.environ by default) with typed, range-checked readers."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = os.environ if env is None else env

    def raw(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def str(self, name: str, default: str | None = None) -> str | None:
        return self.raw(name) or default

    def int(self, name: str, default: int, lo: int, hi: int, what: str) -> int:
        raw = self.raw(name)
        if raw == "":
            return default
        try:
            v = int(raw)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise SettingError(name, raw, f"give {what} as a whole number between {lo} and {hi} (default {default}), "
                                          "or unset it")
        return v

    def float(self, name: str, default: float, lo: float, hi: float, what: str, why: str = "") -> float:
        raw = self.raw(name)
        if raw == "":
            return default
        try:
            v = float(raw)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise SettingError(name, raw, f"give {what} between {lo:g} and {hi:g} (default {default:g}), or unset it"
                                          + (f"; {why}" if why else ""))
        return v

    def bool(self, name: str, default: bool) -> bool:
        raw = self.raw(name).lower()
        if raw == "":
            return default
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise SettingError(name, raw, f"use true or false (default {str(default).lower()}), or unset it")

    def choice(self, name: str, default: str, choices: tuple[str, ...], what: str) -> str:
        raw = self.raw(name).lower()
        if raw == "":
            return default
        if raw not in choices:
            raise SettingError(name, raw, f"use {', '.join(choices)} ({what}; default {default})", known=False)
        return raw

    def port(self, name: str, default: int) -> int:
        return self.int(name, default, 0, 65535, "a TCP port (0 picks a free one)")
