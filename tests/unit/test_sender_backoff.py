"""Export retry schedule."""

import pytest

from service.export.sender import next_delay_s


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (5, 480.0), (6, 600.0), (20, 600.0)],
)
def test_exponential_backoff_with_cap(attempts: int, expected: float) -> None:
    assert next_delay_s(attempts, 30.0, 600.0) == expected


def test_backoff_needs_a_failed_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        next_delay_s(0, 30.0, 600.0)
