"""Rebuild a guest's RAM from a migration stream: one file per block plus a manifest.

``StreamExtractor`` takes the stream as bytes in any chunks (a file for
``extract``, a socket for ``receive``).  Pages go through the destination's
:class:`~xbzrle.stream.load.PageLoader` (and its compiled fast
path) straight into mmaps of sparse files; device state we do not interpret
is written raw to ``device-state.bin``, from its first section header on,
exactly as it appeared in the stream.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, cast

from ..errors import ParameterError, StreamError
from ..stream import records as ev
from ..stream.constants import DIGEST_IDSTR, VM_SECTION_FULL
from ..stream.load import PageLoader
from ..stream.parser import NEED_DATA, StreamParser
from .analyze import READ_SIZE, TailKeeper, device_list
from .compressed import ProgressReader, stdin_file
from .mappedram import (
    LoadedBlock,
    RandomAccessFile,
    file_chunks,
    load_block,
    mapped_file_chunks,
    stream_size,
)
from .ramfiles import (
    CHECKSUMS,
    DEFAULT_MAX_RAM,
    DEVICE_STATE,
    MANIFEST,
    RamFiles,
    prepare_output_dir,
)

MANIFEST_FORMAT = "xbzrle-ram-extract/2"
MAPPED_CHUNK = 4 << 20
"""Bytes of a mapped stream file handed to the parser at a time (no copy: larger
than READ_SIZE, fewer trips through Python)."""


class IncompleteStreamError(StreamError):
    """The stream broke off or went bad; ``manifest`` tells how much RAM was recovered."""

    def __init__(self, message: str, offset: int, manifest: dict[str, Any]) -> None:
        super().__init__(message, offset)
        self.manifest = manifest


def section_full_header(event: ev.SectionFull) -> bytes:
    """The bytes of a FULL section header, as the parser read them."""
    name = event.idstr.encode()
    return (bytes([VM_SECTION_FULL]) + event.section_id.to_bytes(4, "big")
            + bytes([len(name)]) + name + event.instance_id.to_bytes(4, "big")
            + event.version_id.to_bytes(4, "big"))


class StreamExtractor:
    """Feeds one stream into RAM block files in ``out_dir``; ``finish()`` writes the manifest."""

    def __init__(self, out_dir: str | os.PathLike[str], *, max_ram: int = DEFAULT_MAX_RAM,
                 source: str = "", random_access: RandomAccessFile | None = None,
                 checksum: str = "ram-digest") -> None:
        if checksum not in CHECKSUMS:
            raise ParameterError(f"unknown checksum {checksum!r}: one of {', '.join(CHECKSUMS)}")
        self.checksum = checksum
        self.out_dir = Path(out_dir)
        prepare_output_dir(self.out_dir)
        self.max_ram = max_ram
        self.source = source
        self.parser = StreamParser()
        self.ram: RamFiles | None = None
        self.loader: PageLoader | None = None
        self.received = 0
        self.machine: str | None = None
        self._in_last_round = False
        self.ram_ended = False
        self.eof = False
        self.digest: dict[str, dict[str, object]] | None = None
        self.devices: list[dict[str, Any]] | None = None
        self._device_file: BinaryIO | None = None
        self._device_offset: int | None = None
        self._device_bytes = 0
        self._tail = TailKeeper()
        # mapped-ram: pages are read from the file itself, not from the fed bytes.
        self.random_access = random_access
        self.file_size = None if random_access is None else random_access.size
        self._mapped: list[ev.MappedRamBlock] = []
        self._mapped_loaded: dict[str, LoadedBlock] = {}

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take the next bytes of the stream; raises StreamError on malformed input."""
        self.received += memoryview(data).nbytes
        for _ in self.parser.feed_in_pieces(data):
            self._drain()

    def finish(self, failure: Exception | None = None) -> dict[str, Any]:
        """Close files and write the manifest; raise IncompleteStreamError if RAM is partial.

        ``failure`` is what stopped the input early (a StreamError from ``feed``,
        a lost connection); without one the parser is closed and checked.
        """
        offset = self.parser.offset
        if failure is None:
            try:
                self.parser.close()
                self._drain()
            except StreamError as exc:
                failure = exc
        error = None if failure is None else str(failure)
        if isinstance(failure, StreamError) and failure.offset is not None:
            offset = failure.offset
            if not str(error).startswith("stream offset"):
                error = f"stream offset {offset}: {error}"
        if error is None and not self.ram_ended:
            what = "the RAM section never ended" if self.ram is not None else \
                "the stream holds no RAM section"
            error = f"stream offset {offset}: {what}"
        manifest = self._write_outputs(error)
        if error is not None:
            pages = manifest["pages"]
            raise IncompleteStreamError(
                f"{error}; recovered {pages['total']} pages ({pages['zero']} zero, "
                f"{pages['normal']} normal, {pages['xbzrle']} XBZRLE) from the first "
                f"{manifest['stream_bytes_parsed']} bytes of the stream into {self.out_dir}",
                offset, manifest)
        return manifest

    def abort(self) -> None:
        """Release files after a failure that skips ``finish``."""
        self._close_files()

    # -- events ------------------------------------------------------------

    def _drain(self) -> None:
        while (event := self.parser.next_event()) is not NEED_DATA:
            self._handle(event)

    def _handle(self, event: ev.Event) -> None:
        if type(event) is ev.PagesLoaded:  # the fast path's report: most events, nothing to do
            return
        if isinstance(event, ev.ZeroPage | ev.NormalPage | ev.XbzrlePage):
            assert self.loader is not None  # the parser refuses pages before MEM_SIZE
            self.loader.apply(event)
        elif isinstance(event, ev.DeviceState):
            self._write_device_state(event.data)
        elif isinstance(event, ev.RamBlocks):
            self.ram = RamFiles(self.out_dir, event.blocks, self.max_ram, event.stream_offset)
            # New sparse files are all zero: the loader's digest tables start from
            # nothing and give the manifest's RAM digests without reading the files
            # (a mapped-ram stream's pages are copied here without the loader, so
            # those files are read for their digests).
            # Full pages of the largest blocks are written into their files
            # (pwritev: no page fault, no zeroing per new page), the rest through
            # the maps.
            self.loader = PageLoader(
                self.ram.maps, xbzrle=True, zeroed=True,
                tables=self.checksum == "ram-digest" and not self.parser.mapped_ram,
                files=self.ram.fds)
            if self.parser.mapped_ram:
                self._load_mapped_ram(event)
            else:
                self.parser.page_sink = self._fast_path
        elif isinstance(event, ev.MappedRamBlock):
            self._mapped.append(event)
        elif isinstance(event, ev.SectionEnd):
            self._in_last_round = True
        elif isinstance(event, ev.EndOfSection):
            self.ram_ended = self._in_last_round
        elif isinstance(event, ev.SectionFull) and event.idstr != DIGEST_IDSTR:
            self._device_offset = event.stream_offset
            self._device_file = open(self.out_dir / DEVICE_STATE, "wb")  # noqa: SIM115
            self._write_device_state(section_full_header(event))
        elif isinstance(event, ev.Configuration):
            self.machine = event.machine
        elif isinstance(event, ev.Digest):
            self.digest = {name: {"size": size, "digest": d.hex()}
                           for name, (size, d) in event.blocks.items()}
        elif isinstance(event, ev.Eof):
            self.eof = True
        elif isinstance(event, ev.VmDescription) and isinstance(event.json, dict):
            self.devices = device_list(event.json)

    def _load_mapped_ram(self, event: ev.RamBlocks) -> None:
        assert self.ram is not None
        if self.random_access is None:
            raise StreamError(
                f"stream offset {event.stream_offset}: a mapped-ram stream keeps its pages at "
                "fixed file offsets: extract it from the file itself (not a pipe or a socket)",
                event.stream_offset)
        for block in self._mapped:
            with memoryview(self.ram.maps[block.block]) as dest:
                self._mapped_loaded[block.block] = load_block(self.random_access, block, dest)

    def _fast_path(self, buf: bytearray | memoryview, pos: int, base: int,
                   last: str | None) -> tuple[int, str | None, tuple[int, ...]]:
        assert self.loader is not None and self.ram is not None
        try:
            return self.loader.sink(buf, pos, base, last)
        except OSError as exc:
            if exc.filename not in self.ram.files:
                raise
            # a failed write into a block file (full disk...): name the file
            raise OSError(exc.errno, exc.strerror,
                          str(self.out_dir / self.ram.files[exc.filename])) from None
        except StreamError:
            # The compiled loop applied part of its batch before the bad record
            # and cannot say how much: replay the batch record by record so the
            # error names its record and the recovered counts are exact.
            # Replaying is harmless: each page record sets its bytes absolutely.
            self.parser.page_sink = None
            return pos, last, ()

    def _write_device_state(self, data: bytes) -> None:
        assert self._device_file is not None
        self._device_file.write(data)
        self._device_bytes += len(data)
        self._tail.add(data)

    # -- outputs -----------------------------------------------------------

    def _close_files(self) -> None:
        if self.loader is not None:
            self.loader.release()
        if self.ram is not None:
            self.ram.close()
        if self._device_file is not None:
            self._device_file.close()
            self._device_file = None

    def _write_outputs(self, error: str | None) -> dict[str, Any]:
        counts = self.loader.counts if self.loader is not None else None
        known: dict[str, str] = {}
        if self.loader is not None and self.ram is not None:
            known = {name: d for name in self.ram.sizes()
                     if (d := self.loader.digest(name)) is not None}
        self._close_files()
        blocks = self.ram.manifest_blocks(self.checksum, known) if self.ram is not None else []
        if self._mapped:
            # The pages a mapped-ram file carries, beside the digest of the whole block.
            for block in blocks:
                name = cast(str, block["name"])  # manifest_blocks names each block by its str
                block.update(self._mapped_loaded.get(name, LoadedBlock()).to_dict())
        if self.devices is None and self._device_offset is not None:
            self.devices = self._tail.devices()
        zero, normal, xbzrle = (counts.zero, counts.normal, counts.xbzrle) if counts else (0, 0, 0)
        normal += sum(loaded.pages for loaded in self._mapped_loaded.values())
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "source": self.source,
            "complete": error is None,
            "error": error,
            "stream_bytes": self.received if self.file_size is None else self.file_size,
            "stream_bytes_parsed": self.parser.offset,
            "machine": self.machine,
            "pages": {"total": zero + normal + xbzrle, "zero": zero, "normal": normal,
                      "xbzrle": xbzrle},
            "blocks": blocks,
            "device_state": None if self._device_offset is None else {
                "file": DEVICE_STATE, "stream_offset": self._device_offset,
                "size": self._device_bytes},
            "devices": self.devices,
            "source_digest": self.digest,
            "eof": self.eof,
            "mapped_ram": bool(self._mapped),
            "checksum": self.checksum,
        }
        tmp = self.out_dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.out_dir / MANIFEST)
        return manifest


def extract_chunks(chunks: Iterable[bytes], out_dir: str | os.PathLike[str], *,
                   max_ram: int = DEFAULT_MAX_RAM, source: str = "",
                   checksum: str = "ram-digest") -> dict[str, Any]:
    """Extract a stream given as byte chunks; returns the manifest."""
    extractor = StreamExtractor(out_dir, max_ram=max_ram, source=source, checksum=checksum)
    return _run(extractor, chunks)


def _run(extractor: StreamExtractor,
         chunks: Iterable[bytes | memoryview]) -> dict[str, Any]:
    """Feed every chunk; a malformed stream still leaves what was rebuilt, and says so."""
    try:
        for chunk in chunks:
            extractor.feed(chunk)
    except StreamError as exc:
        return extractor.finish(exc)
    except BaseException:
        extractor.abort()
        raise
    return extractor.finish()


def extract_file(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 max_ram: int = DEFAULT_MAX_RAM,
                 on_progress: Callable[[int], None] | None = None,
                 checksum: str = "ram-digest") -> dict[str, Any]:
    """Extract the stream in ``path`` ("-" reads standard input) into ``out_dir``.

    ``on_progress`` hears the read position in the file after each read.
    ``checksum``: what the manifest holds per block, ``"ram-digest"`` (default),
    ``"sha256"`` (reads the holes too) or ``"none"``.
    """
    if str(path) == "-":
        return _extract_open_file(stdin_file(), out_dir, max_ram, "-", checksum)
    with open(path, "rb") as f:
        return _extract_open_file(f, out_dir, max_ram, str(path), checksum, on_progress)


def _extract_open_file(f: io.BufferedIOBase, out_dir: str | os.PathLike[str], max_ram: int,
                       source: str, checksum: str = "ram-digest",
                       on_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A file that can seek is read with jumps over mapped-ram regions and random access.

    A regular file is handed over as views of a mapping of it (no read
    copy, see mapped_file_chunks); anything else is read into one buffer,
    reused: the extractor keeps nothing of a chunk once fed.
    """
    watched: Any = f if on_progress is None else ProgressReader(f, on_progress)
    random_access = RandomAccessFile(watched, source) if stream_size(f) is not None else None
    extractor = StreamExtractor(out_dir, max_ram=max_ram, source=source,
                                random_access=random_access, checksum=checksum)
    chunks: Iterable[bytes | memoryview] | None = mapped_file_chunks(
        f, extractor.parser, MAPPED_CHUNK, on_progress)
    if chunks is None:
        chunks = file_chunks(watched, extractor.parser, READ_SIZE, reuse=True)
    return _run(extractor, chunks)
