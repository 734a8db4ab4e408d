"""`{"results": [...], "next": url|null}` with a capped `page_size`."""

from rest_framework.pagination import CursorPagination


class PagePagination(CursorPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
    ordering = "-id"

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            from rest_framework.exceptions import ValidationError

            raise ValidationError({"page_size": "must be a whole number"}) from None
        return max(1, min(size, self.max_page_size))

    def decode_cursor(self, request):
        # DRF answers a malformed cursor with 404; it is bad input, so 400 like the rest.
        from rest_framework.exceptions import NotFound, ValidationError

        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": "not a cursor this API handed out"}) from None

    def get_ordering(self, request, queryset, view):
        # Views validate `?ordering=` themselves and say which orderings they allow.
        if hasattr(view, "get_ordering"):
            return tuple(view.get_ordering())
        return super().get_ordering(request, queryset, view)
