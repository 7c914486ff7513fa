"""Server-side sessions: the staff member's access token never leaves the console's process.

The browser holds only a random session id (256 bits) in an HttpOnly, SameSite=Strict cookie
(Secure outside development). The flow:

1. ``GET /connexion`` opens an anonymous session: no token, a CSRF token for the sign-in form.
2. A sign-in replaces it with a new session id (no fixation) that holds the bearer token, the
   staff member's roles, subject and territory (their départements, or national), and expires
   when the token does (the registry's password grant gives no refresh token: 15 minutes by
   default), or after ``idle_seconds`` unused.
3. Every form carries the session's CSRF token; a POST without the right one is refused (403).
4. Sign-out, or expiry, forgets the session: the next request goes back to the sign-in page.

The store is one dictionary of one process, bounded (the oldest sessions go first): a restart
signs everybody out, and several replicas need sticky sessions (decision 53).
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    last_seen: float
    token: str | None = None
    subject: str | None = None
    username: str | None = None
    roles: frozenset[str] = field(default_factory=frozenset)
    flash: list[tuple[str, str]] = field(default_factory=list)
    # Where the person acts, from their token (decision 64): their départements, or national.
    departements: frozenset[str] = field(default_factory=frozenset)
    national: bool = False
    departement: str = ""  # the envelopes page's narrowing, once named ("": all of theirs)

    @property
    def signed_in(self) -> bool:
        return self.token is not None

    def csrf_ok(self, candidate: str | None) -> bool:
        """Constant-time check of a form's CSRF token."""
        return candidate is not None and hmac.compare_digest(candidate, self.csrf)


class Sessions:
    """At most ``capacity`` sessions; anonymous ones live ``anonymous_seconds``."""

    def __init__(
        self, *, capacity: int = 10_000, idle_seconds: float = 1800, anonymous_seconds: float = 1800
    ) -> None:
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.anonymous_seconds = anonymous_seconds
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _store(self, session: Session) -> Session:
        self._sessions[session.id] = session
        while len(self._sessions) > self.capacity:
            self._sessions.popitem(last=False)
        return session

    def anonymous(self, now: float) -> Session:
        """A new session without a token, for the sign-in form."""
        return self._store(
            Session(
                id=secrets.token_urlsafe(32),
                csrf=secrets.token_urlsafe(32),
                expires_at=now + self.anonymous_seconds,
                last_seen=now,
            )
        )

    def sign_in(
        self,
        previous: Session | None,
        *,
        token: str,
        subject: str,
        username: str,
        roles: frozenset[str],
        token_expires_at: float,
        now: float,
        departements: frozenset[str] = frozenset(),
        national: bool = False,
    ) -> Session:
        """A new signed-in session (new id and CSRF token); the previous one is forgotten."""
        if previous is not None:
            self.forget(previous.id)
        return self._store(
            Session(
                id=secrets.token_urlsafe(32),
                csrf=secrets.token_urlsafe(32),
                expires_at=token_expires_at,
                last_seen=now,
                token=token,
                subject=subject,
                username=username,
                roles=roles,
                departements=departements,
                national=national,
            )
        )

    def find(self, session_id: str | None, now: float) -> Session | None:
        """The live session of this id; None (and forgotten) once expired or idle too long."""
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if now >= session.expires_at or now - session.last_seen > self.idle_seconds:
            self.forget(session_id)
            return None
        session.last_seen = now
        self._sessions.move_to_end(session_id)
        return session

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)
