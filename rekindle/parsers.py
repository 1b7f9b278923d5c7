"""Request body parsers for the API: DRF's, made to answer every malformed body with a 400."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            data: Any = super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            # Python's decoder gives up on arrays or objects nested about a thousand deep with a
            # RecursionError, which DRF does not catch (it expects a ValueError).
            raise ParseError("JSON parse error - nested too deeply.") from exc
        if not _encodable(data):
            # "\ud800" is valid JSON but no text: it cannot be stored (PostgreSQL refuses it; SQLite
            # keeps it, and every later read of the row fails) or sent on as UTF-8.
            raise ParseError("JSON parse error - a string holds a lone surrogate (\\ud800-\\udfff).")
        return data  # type: ignore[no-any-return]


def _encodable(value: Any) -> bool:
    """Whether every string in a parsed JSON value (keys too) is valid Unicode text."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True
