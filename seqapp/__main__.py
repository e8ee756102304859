"""``python -m seqapp`` is the same as the ``seqapp`` command."""

from seqapp.cli import app

app(prog_name="seqapp")
