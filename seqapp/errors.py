"""The one user-facing error type.

Code anywhere in seqapp raises ``SeqappError("what is wrong; how to fix it")``; only
``seqapp.cli`` turns it into a single line on stderr and exit code 2.
"""


class SeqappError(Exception):
    """A problem the user can fix: bad input, a missing run, an invalid setting."""
