"""Crash points for resilience tests: ``LOUPE_FAILPOINT=<name>[@<marker file>][,...]`` makes the process
that reaches ``failpoint(<name>)`` kill itself with SIGKILL, as a power cut or the OOM killer would.

With ``@<marker file>`` it fires once across all processes (the first to create the marker), so a
retried or resumed run gets past it. Unset (always, in production) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    spec = os.environ.get("LOUPE_FAILPOINT")
    if not spec:
        return
    armed = [marker for point, _, marker in (item.partition("@") for item in spec.split(",")) if point == name]
    if not armed:
        return
    marker = armed[0]
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)
