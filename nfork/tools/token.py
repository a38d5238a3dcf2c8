"""The control API's token, read from a file by the command-line clients."""

from __future__ import annotations

__all__ = ["read_token_file"]


def read_token_file(path: str) -> str:
    """The token in the file at C{path}, without surrounding spaces.

    @raise ValueError: if it cannot be read or holds no token.
    """
    try:
        with open(path, "rb") as f:
            token = f.read().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ValueError(f"cannot read the token file {path}: {reason}") from None
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token
