"""contiv-sdn: policy-based multi-host container networking on Twisted."""

__version__ = "0.1.0"
