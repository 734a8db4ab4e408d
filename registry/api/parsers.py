"""The API's JSON parser: DRF's reads with the standard library as is, which takes 1e999999
as infinity, a lone surrogate, or nesting deep enough to overflow the stack (a 500)."""

from rest_framework.parsers import BaseParser

from registry.services import validation


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        return validation.json_document(stream.read())
