"""The HTTP API: nothing below this package knows about HTTP."""
