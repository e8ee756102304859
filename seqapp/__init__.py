"""seqapp: train and use recurrent neural networks on sequence data."""

__version__ = "0.4.0"
