"""ssmlab: a laboratory for the theory of selective state-space models (Mamba)."""

__version__ = "0.1.0"
