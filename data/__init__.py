"""Default data sets shipped with seqapp (installed as the package ``seqapp.bundled``)."""
