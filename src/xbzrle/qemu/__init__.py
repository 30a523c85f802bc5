"""Reading real QEMU migration streams: analyze, extract and receive.

Built on :mod:`xbzrle.stream` (the parser) and the destination's page
loader; nothing here writes a stream or runs a guest.
"""

from __future__ import annotations

from .analyze import StreamAnalyzer, StreamReport, analyze_chunks, analyze_file
from .extract import IncompleteStreamError, StreamExtractor, extract_chunks, extract_file
from .receive import receive

__all__ = [
    "IncompleteStreamError",
    "StreamAnalyzer",
    "StreamExtractor",
    "StreamReport",
    "analyze_chunks",
    "analyze_file",
    "extract_chunks",
    "extract_file",
    "receive",
]
