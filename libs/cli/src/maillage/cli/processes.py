"""Child processes that never outlive ``maillage dev`` (or the test session).

Each child runs in its own session, so a Ctrl-C in the terminal reaches only the supervisor, which
then stops the children in order. Each child also asks the kernel to signal it when its parent
dies (``PR_SET_PDEATHSIG``), so even a ``kill -9`` of the supervisor leaves no orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def set_parent_death_signal() -> None:
        if sys.platform == "linux":
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)

    return set_parent_death_signal


class ManagedProcess:
    """One child process: started, its output streamed line by line, stopped with a deadline."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
        cwd: str | None = None,
        stop_signal: int = signal.SIGTERM,
        on_line: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.user = user
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.on_line = on_line
        self.tail: deque[str] = deque(maxlen=40)
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.process else None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            user=self.user,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent(self.stop_signal),
        )
        self._reader = asyncio.create_task(self._read_output(), name=f"{self.name}-output")

    async def _read_output(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self.tail.append(text)
            if self.on_line is not None:
                self.on_line(self.name, text)

    async def wait(self) -> int:
        assert self.process is not None
        code = await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)
        return code

    async def stop(self, timeout: float = 10.0) -> None:
        """Send the stop signal, wait up to ``timeout`` seconds, then kill."""
        if self.process is None or self.process.returncode is not None:
            if self.process is not None:
                await self.wait()
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            await asyncio.wait_for(self.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.wait()

    def last_lines(self, count: int = 15) -> str:
        return "\n".join(list(self.tail)[-count:])
