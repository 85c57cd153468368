"""The version of cara, kept as a literal so that reading it costs nothing at import."""

__version__ = "1.0.0.dev0"
