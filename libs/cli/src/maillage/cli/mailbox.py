"""The development mailbox of ``maillage dev``: an SMTP server on loopback that keeps every mail
the notifications service sends as an ``.eml`` file and prints one line per mail.

Compose runs Mailpit for the same purpose; here there is no Docker, and a developer should see
the confirmation e-mails and notifications without configuring anything.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _KeepMail:
    def __init__(self, folder: Path, on_mail: Callable[[str], None]) -> None:
        self.folder = folder
        self.on_mail = on_mail
        self._numbers = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # aiosmtpd name
        content: bytes = envelope.content
        message = message_from_bytes(content, policy=policy.default)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{next(self._numbers):04d}.eml"
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_bytes(content)
        recipients = ", ".join(envelope.rcpt_tos)
        self.on_mail(f"to {recipients}: {message['Subject']} ({self.folder / name})")
        return "250 Message accepted for delivery"


class DevMailbox:
    """``start()`` an SMTP server on 127.0.0.1:``port`` writing mails under ``folder``."""

    def __init__(self, folder: Path, port: int, on_mail: Callable[[str], None]) -> None:
        self.folder = folder
        self.port = port
        self._controller = Controller(
            _KeepMail(folder, on_mail), hostname="127.0.0.1", port=port, ready_timeout=10
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
