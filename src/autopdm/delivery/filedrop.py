"""The file-drop transport: work orders appended to a JSON Lines file the CRM imports.

For CRMs that take a file instead of a webhook (``file:///srv/crm/inbox/autopdm.jsonl``). Each
line carries the webhook's signature fields and the exact signed body as a string:

    {"webhook-id": "wo-…", "webhook-timestamp": "1764000000", "webhook-signature": "v1,…",
     "body": "{\\"channel\\":\\"sms\\",…}"}

so an importer checks it like a webhook (`signing.verify(line["body"].encode(), line, secret,
check_time=False)`: a file is read later than five minutes) and de-duplicates by webhook-id.
A line is written with one O_APPEND write and fsynced before the row counts as delivered; a
line cut short by a crash is closed with a newline before the next one, so it never swallows
the next work order. An I/O error (missing mount, full or read-only disk) is retried.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from autopdm.delivery import signing
from autopdm.delivery.transport import Message, Reply


def _ends_open(fd: int) -> bool:
    """True when the file's last byte is not a newline (a line cut short by a crash)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


class FileDropTransport:
    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.path = Path(unquote(urlsplit(url).path))
        self.webhook = signing.webhook(secret)

    def send(self, message: Message) -> Reply:
        fields = signing.sign(message.id, message.body, self.webhook)
        line = json.dumps({**fields, "body": message.body.decode("utf-8")}, ensure_ascii=False,
                          separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                data = line.encode("utf-8")
                if _ends_open(fd):
                    data = b"\n" + data
                if os.write(fd, data) != len(data):  # the tail is closed by the next attempt's newline
                    return Reply(False, None, f"{self.path}: short write (disk full?)")
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # missing mount, full or read-only disk: try again later
            return Reply(False, None, f"{self.path}: {exc.strerror or exc}")
        return Reply(True)

    def close(self) -> None:
        pass
