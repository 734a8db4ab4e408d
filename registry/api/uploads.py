"""Multipart bodies streamed part by part into the blob store, never held in memory."""

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers
from django.http.multipartparser import MultiPartParser as DjangoMultiPartParser
from rest_framework.parsers import BaseParser, DataAndFiles

from registry.storage import BlobInfo, get_store


class StoredBlob(UploadedFile):
    """A multipart part already stored as a blob; `path` is the filename as sent."""

    def __init__(self, path: str, info: BlobInfo, content_type: str | None):
        super().__init__(file=None, name=path, content_type=content_type, size=info.size)
        self.path, self.info = path, info


class BlobUploadHandler(FileUploadHandler):
    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        self.writer = get_store().writer(max_size=settings.MODELGATE_MAX_FILE_SIZE)
        raise StopFutureHandlers()

    def receive_data_chunk(self, raw_data, start):
        try:
            self.writer.write(raw_data)
        except BaseException:
            self.writer.abort()
            raise
        return None

    def file_complete(self, file_size):
        return StoredBlob(self.file_name, self.writer.commit(), self.content_type)

    def upload_interrupted(self):
        if getattr(self, "writer", None) is not None:
            self.writer.abort()


class _PathKeepingParser(DjangoMultiPartParser):
    # Django keeps only the base name; a version's files live in folders, so the full
    # relative path is kept here and validated by the service like any other path.
    def sanitize_file_name(self, file_name):
        return file_name or None


class StreamingMultiPartParser(BaseParser):
    media_type = "multipart/form-data"

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        meta = request.META.copy()
        meta["CONTENT_TYPE"] = media_type
        parser = _PathKeepingParser(
            meta,
            stream,
            [BlobUploadHandler(request)],
            parser_context.get("encoding", settings.DEFAULT_CHARSET),
        )
        data, files = parser.parse()
        return DataAndFiles(data, files)
