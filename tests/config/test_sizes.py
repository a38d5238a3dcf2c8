"""Byte sizes in the configuration: integers or strings with a unit."""

from __future__ import annotations

import pytest

from nfork.config.sizes import parse_size


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (1048576, 1048576),
        ("1048576", 1048576),
        ("1MiB", 1024**2),
        ("1 mib", 1024**2),
        ("64KiB", 65536),
        ("2GiB", 2 * 1024**3),
        ("500KB", 500_000),
        ("10B", 10),
    ],
)
def test_sizes(value: object, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    "value", ["1.5MiB", "MiB", "1 MiBs", "-1", "1TB", "", "9" * 40]
)
def test_bad_sizes_are_named(value: str) -> None:
    with pytest.raises(ValueError, match='size such as "64KiB"'):
        parse_size(value)


@pytest.mark.parametrize("value", [True, 1.5, None, [1]])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="a number of bytes"):
        parse_size(value)
