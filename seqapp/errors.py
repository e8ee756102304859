"""The one user-facing error type, and the stop a signal causes.

Code anywhere in seqapp raises ``SeqappError("what is wrong; how to fix it")``; only
``seqapp.cli`` turns it into a single line on stderr and exit code 2. A training stopped by
SIGINT or SIGTERM raises :class:`Interrupted`, which the CLI turns into exit 130 or 143.
"""

from __future__ import annotations

from pathlib import Path


class SeqappError(Exception):
    """A problem the user can fix: bad input, a missing run, an invalid setting.

    ``resumable=False`` marks an error that resuming the same training would meet again,
    so no "resume with" hint is added to it.
    """

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable


class Interrupted(KeyboardInterrupt):
    """A training stopped by SIGINT or SIGTERM; ``saved`` when its state was saved just now."""

    def __init__(self, signum: int, saved: bool = False) -> None:
        super().__init__(signum)
        self.signum, self.saved = signum, saved
        self.draft: Path | None = None
        self.run: Path | None = None  # set when the run was published before the signal came
