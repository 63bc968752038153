"""DataError: the one exception the data layer raises for problems a user can fix."""

from __future__ import annotations


class DataError(ValueError):
    """A data problem reported in one line that names the key or file at fault."""
