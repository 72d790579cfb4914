"""What every operator returns when it refuses an input."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    """An operator's verdict on bad data: a short reason code and a detail.

    Operators return this for bad *data*; programming errors still raise.
    """

    reason: str
    detail: str = ""
