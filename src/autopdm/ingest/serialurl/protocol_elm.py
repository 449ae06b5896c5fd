"""``elm://PORT``: a serial port to an ELM327 that tidies what clone adapters add to answers.

Some clones keep echoing every command whatever ``ATE0`` says, and some print ``SEARCHING...``
before every answer instead of only the first. python-OBD checks that ``ATH1`` is answered with
a lone ``OK`` (an echo makes it give up on the adapter) and counts every answer line when it
learns how many frames a request gets (an extra line makes the adapter wait for a frame that
never comes, a full ELM timeout per request). This port reads each answer up to the ``>``
prompt, drops the echo of the command just written and ``SEARCHING...`` lines, and hands the rest
on unchanged; everything else (``NO DATA``, ``BUS INIT: ...ERROR``, ``UNABLE TO CONNECT``) stays
for python-OBD and the recorder to see. ``echoes`` and ``searching`` count what was dropped.

The inner port is anything pyserial opens: a device path or a URL (``socket://``, ``rfc2217://``).
"""

from __future__ import annotations

import re

import serial

_LINES = re.compile(rb"[\r\n]+")


def serial_class_for_url(url: str):
    return url, ElmPort


class ElmPort:
    """Enough of pyserial's ``Serial`` for python-OBD, wrapping the real port."""

    def __init__(self, port=None, **kwargs):
        self._kwargs = kwargs
        self._port = None
        self._inner = None
        self._out = bytearray()
        self._echo = b""
        self.echoes = 0
        self.searching = 0

    # -- what serial_for_url and python-OBD set and call --------------------------------------
    @property
    def port(self):
        return self._port

    @port.setter
    def port(self, url: str) -> None:
        self._port = url[len("elm://"):] if url and url.startswith("elm://") else url

    def open(self) -> None:
        self._inner = serial.serial_for_url(self._port, **self._kwargs)

    @property
    def portstr(self) -> str:
        return self._inner.portstr if self._inner is not None else str(self._port)

    name = portstr

    @property
    def timeout(self):
        return self._inner.timeout if self._inner is not None else self._kwargs.get("timeout")

    @timeout.setter
    def timeout(self, value) -> None:
        if self._inner is not None:
            self._inner.timeout = value
        else:
            self._kwargs["timeout"] = value

    @property
    def baudrate(self):
        return self._inner.baudrate

    @baudrate.setter
    def baudrate(self, value) -> None:
        self._inner.baudrate = value

    @property
    def in_waiting(self) -> int:
        return len(self._out)

    def write(self, data: bytes) -> int:
        self._echo = bytes(data).strip().replace(b" ", b"").upper()
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def flushInput(self) -> None:  # noqa: N802 (python-OBD's spelling)
        self._out.clear()
        self._inner.reset_input_buffer()

    reset_input_buffer = flushInput

    def flushOutput(self) -> None:  # noqa: N802
        self._inner.reset_output_buffer()

    reset_output_buffer = flushOutput

    def read(self, size: int = 1) -> bytes:
        if not self._out:
            self._out += self._tidy(self._answer())
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    # -- tidying ---------------------------------------------------------------------------------
    def _answer(self) -> bytes:
        """Everything up to the prompt (or what came before the read timed out)."""
        raw = bytearray()
        while b">" not in raw:
            chunk = self._inner.read(self._inner.in_waiting or 1)
            if not chunk:
                break
            raw += chunk
        return bytes(raw)

    def _tidy(self, raw: bytes) -> bytes:
        if not raw:
            return raw
        body, prompt = (raw[:-1], b">") if raw.endswith(b">") else (raw, b"")
        kept = []
        for i, line in enumerate(x for x in _LINES.split(body) if x.strip()):
            flat = line.strip().replace(b" ", b"").upper()
            if i == 0 and self._echo and flat == self._echo:
                self.echoes += 1
                continue
            if flat.startswith(b"SEARCHING"):
                self.searching += 1
                continue
            kept.append(line)
        self._echo = b""
        return b"\r".join(kept) + b"\r\r" + prompt
