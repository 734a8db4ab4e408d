"""dumpdata's JSON with timestamps to the microsecond, for backups.

Django's DjangoJSONEncoder cuts datetimes to milliseconds, so a restored installation
would differ from the original; this format keeps them exact. `loaddata` reads it with
the standard JSON deserializer (the file is plain JSON).
"""

import datetime

from django.core.serializers import json as django_json
from django.core.serializers.json import DjangoJSONEncoder


class ExactEncoder(DjangoJSONEncoder):
    def default(self, o):
        if isinstance(o, datetime.datetime | datetime.time):
            return o.isoformat().replace("+00:00", "Z")
        return super().default(o)


class Serializer(django_json.Serializer):
    def _init_options(self):
        super()._init_options()
        self.json_kwargs["cls"] = ExactEncoder


Deserializer = django_json.Deserializer
