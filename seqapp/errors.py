"""The one user-facing error type.

Code anywhere in seqapp raises ``SeqappError("what is wrong; how to fix it")``; only
``seqapp.cli`` turns it into a single line on stderr and exit code 2.
"""


class SeqappError(Exception):
    """A problem the user can fix: bad input, a missing run, an invalid setting.

    ``resumable=False`` marks an error that resuming the same training would meet again,
    so no "resume with" hint is added to it.
    """

    def __init__(self, message: str, resumable: bool = True) -> None:
        super().__init__(message)
        self.resumable = resumable
