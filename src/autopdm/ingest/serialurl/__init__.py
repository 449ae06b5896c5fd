"""pyserial URL handlers of autopdm (``serial.protocol_handler_packages``): ``elm://PORT``."""

from __future__ import annotations

PACKAGE = __name__


def register() -> None:
    """Let ``serial.serial_for_url`` (and so python-OBD) open ``elm://...`` ports."""
    import serial

    if PACKAGE not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(PACKAGE)


def elm_url(port: str) -> str:
    """``/dev/ttyUSB0`` → ``elm:///dev/ttyUSB0``; ``socket://h:35000`` → ``elm://socket://h:35000``."""
    return port if port.startswith("elm://") else f"elm://{port}"
