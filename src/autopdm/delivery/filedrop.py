"""The file-drop transport: work orders appended to a JSON Lines file the CRM imports.

For CRMs that take a nightly file instead of a webhook (``file:///srv/crm/inbox/autopdm.jsonl``).
Each line is ``{"id", "signature", "work_order"}``; the signature is the webhook's HMAC over the body,
so the importer can check it the same way. A line is fsynced before the row counts as delivered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from autopdm.delivery.transport import Message, Reply
from autopdm.delivery.webhook import sign


class FileDropTransport:
    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.path = Path(unquote(urlsplit(url).path))
        self.secret = secret

    def send(self, message: Message) -> Reply:
        line = json.dumps({"id": message.id, "signature": sign(message.body, self.secret),
                           "work_order": json.loads(message.body)}, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:  # a full or read-only disk: try again later
            return Reply(False, None, f"{self.path}: {exc.strerror or exc}")
        return Reply(True)

    def close(self) -> None:
        pass
