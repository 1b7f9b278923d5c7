"""Whether this run is CI's: there, something the tests need that is missing fails the run instead of skipping."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_unless_ci(message: str) -> NoReturn:
    """Skip the test for something this machine lacks; with ``CI`` set, fail it instead."""
    if ON_CI:
        pytest.fail(message + " (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)
