"""ktap: a dynamic tracing toolchain for embedded Linux (host side)."""

__version__ = "0.1.0"
