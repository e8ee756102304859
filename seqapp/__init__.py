"""seqapp: train and use recurrent neural networks on sequence data.

From Python, load a run and answer with it (see docs/python.md)::

    from seqapp.api import load

    model = load("runs")                   # the latest run, or a run folder
    model.predict(["what a lovely film"])  # [{'text': ..., 'label': ..., 'probability': ...}]

The package itself holds only the version and the error class: every seqapp module runs this
file when it is imported, so it imports nothing above the base layer.
"""

from seqapp.errors import SeqappError
from seqapp.version import __version__

__all__ = ["SeqappError", "__version__"]
