"""The file broker of `make run`: kombu's filesystem transport, each message written whole
before a worker can see it.

kombu creates a message's file and then writes it; a worker that lists the folder in
between takes the empty file, fails to decode it and stops (JSONDecodeError out of its
consumer loop: `make run` then stops every process). Polled every 50 ms
(MODELGATE_FILE_BROKER_POLL_SECONDS), a new version's job met that window within a few
dozen registrations. Here a message is written under a name no queue takes and renamed
into place: a rename within one folder is atomic, so a listed message is a whole one.
"""

import contextlib
import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

# A consumer takes "<stamp>_<uuid>.<queue>.msg" only; "….msg.part" is never a queue's.
PARTIAL = ".part"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # kombu's name: milliseconds first, so a listing sorted by name is in sending order.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = final + PARTIAL
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.rename(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
