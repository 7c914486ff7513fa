"""The development mailbox keeps what the notifications service sends, and says so."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from maillage.cli.embedded import free_port
from maillage.cli.mailbox import DevMailbox


async def test_a_mail_sent_to_the_dev_mailbox_is_kept_and_announced(tmp_path: Path) -> None:
    lines: list[str] = []
    mailbox = DevMailbox(tmp_path / "mail", free_port(), lines.append)
    mailbox.start()
    try:
        message = EmailMessage()
        message["From"] = "notifications@maillage.test"
        message["To"] = "cordees@efrei.test"
        message["Subject"] = "Confirmez votre adresse"
        message.set_content("Bonjour,\n")
        message.add_alternative("<p>Bonjour,</p>", subtype="html")
        await aiosmtplib.send(message, hostname="127.0.0.1", port=mailbox.port)
    finally:
        mailbox.stop()
    [kept] = list((tmp_path / "mail").glob("*.eml"))
    stored = message_from_bytes(kept.read_bytes(), policy=policy.default)
    assert stored["Subject"] == "Confirmez votre adresse"
    assert [part.get_content_type() for part in stored.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    [line] = lines
    assert line.startswith("to cordees@efrei.test: Confirmez votre adresse (")
    assert str(kept) in line
