"""seqapp's version: one home for it, below every other module (``seqapp.__version__`` re-exports it)."""

__version__ = "0.5.0"
