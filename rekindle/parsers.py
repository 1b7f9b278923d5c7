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
            return super().parse(stream, media_type, parser_context)
        except RecursionError as exc:
            # Python's decoder gives up on arrays or objects nested about a thousand deep with a
            # RecursionError, which DRF does not catch (it expects a ValueError).
            raise ParseError("JSON parse error - nested too deeply.") from exc
