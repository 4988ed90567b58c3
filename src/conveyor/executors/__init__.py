"""Executors: built-in handlers for the SDK's `Worker`.

`Forwarder` runs each task against an OpenAI-compatible upstream (vLLM, Ollama,
llama.cpp's server, OpenAI): `conveyor worker --forward-to URL`.
"""

from conveyor.executors._limits import AdaptiveLimit, RateLimit
from conveyor.executors._streams import assembler_for
from conveyor.executors.forward import Forwarder, UpstreamError, join_url, retry_after_s

__all__ = [
    "AdaptiveLimit",
    "Forwarder",
    "RateLimit",
    "UpstreamError",
    "assembler_for",
    "join_url",
    "retry_after_s",
]
