"""Task templates shipped with seqapp (installed as the package ``seqapp.templates``)."""
