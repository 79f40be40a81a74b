"""App names end up in Redis keys and directory names: keep them plain."""

from __future__ import annotations

import re

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class InvalidName(ValueError):
    pass


def check_app_name(name: str) -> str:
    if not _APP_NAME.match(name):
        raise InvalidName(
            f"app name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name
