"""A minimal, bounded reader for OLE2 compound files (legacy .doc/.xls/.ppt).

Sniffing needs only the stream names and the first bytes of one or two
streams (to see encryption flags), so this reads the directory and follows
sector chains with loop and size limits instead of pulling in a full parser.
Malformed files raise ``ValueError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_END_OF_CHAIN = 0xFFFFFFFE
_MAX_SECTOR = 0xFFFFFFFA
_STORAGE, _STREAM, _ROOT = 1, 2, 5


@dataclass(frozen=True)
class Entry:
    name: str
    kind: int
    start: int
    size: int


class CompoundFile:
    """Directory and stream prefixes of one compound file held in memory."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 512 or not data.startswith(SIGNATURE):
            raise ValueError("not an OLE2 compound file")
        self._data = data
        shift, mini_shift = struct.unpack_from("<HH", data, 0x1E)
        if shift not in (9, 12) or mini_shift != 6:
            raise ValueError("bad sector size")
        self._sector = 1 << shift
        self._mini_sector = 1 << mini_shift
        self._max_sectors = len(data) // self._sector + 1
        (num_fat, first_dir) = struct.unpack_from("<II", data, 0x2C)
        (self._mini_cutoff, first_minifat, _num_minifat, first_difat, num_difat) = (
            struct.unpack_from("<IIIII", data, 0x38)
        )
        self._fat = self._read_fat(num_fat, first_difat, num_difat)
        self.entries = self._read_directory(first_dir)
        self._minifat = self._read_chain_bytes(first_minifat, limit=len(data))
        root = next((e for e in self.entries if e.kind == _ROOT), None)
        self._root_start = root.start if root else _END_OF_CHAIN

    def _sector_bytes(self, index: int) -> bytes:
        if index > _MAX_SECTOR:
            raise ValueError("bad sector number")
        offset = (index + 1) * self._sector
        chunk = self._data[offset : offset + self._sector]
        if len(chunk) < self._sector:
            raise ValueError("sector beyond end of file")
        return chunk

    def _read_fat(self, num_fat: int, first_difat: int, num_difat: int) -> list[int]:
        if num_fat > self._max_sectors:
            raise ValueError("FAT larger than the file")
        locations = [x for x in struct.unpack_from("<109I", self._data, 0x4C) if x <= _MAX_SECTOR]
        difat, hops = first_difat, 0
        per = self._sector // 4 - 1
        while difat <= _MAX_SECTOR and hops < num_difat and len(locations) < num_fat:
            values = struct.unpack(f"<{per + 1}I", self._sector_bytes(difat))
            locations.extend(x for x in values[:per] if x <= _MAX_SECTOR)
            difat, hops = values[per], hops + 1
        fat: list[int] = []
        for location in locations[:num_fat]:
            fat.extend(struct.unpack(f"<{self._sector // 4}I", self._sector_bytes(location)))
        return fat

    def _chain(self, start: int, table: list[int], limit_links: int) -> list[int]:
        chain: list[int] = []
        current = start
        while current <= _MAX_SECTOR:
            if len(chain) >= limit_links or current >= len(table):
                raise ValueError("broken or looping sector chain")
            chain.append(current)
            current = table[current]
        return chain

    def _read_chain_bytes(self, start: int, limit: int) -> bytes:
        out = bytearray()
        if start > _MAX_SECTOR:
            return b""
        current, links = start, 0
        while current <= _MAX_SECTOR and len(out) < limit:
            if links >= self._max_sectors or current >= len(self._fat):
                raise ValueError("broken or looping sector chain")
            out += self._sector_bytes(current)
            current, links = self._fat[current], links + 1
        return bytes(out[:limit])

    def _read_directory(self, first_dir: int) -> list[Entry]:
        raw = self._read_chain_bytes(first_dir, limit=4096 * 128)
        entries = []
        for offset in range(0, len(raw) - 127, 128):
            name_len, kind = struct.unpack_from("<HB", raw, offset + 0x40)
            if kind not in (_STORAGE, _STREAM, _ROOT) or not 2 <= name_len <= 64:
                continue
            name = raw[offset : offset + name_len - 2].decode("utf-16-le", errors="replace")
            start, size = struct.unpack_from("<II", raw, offset + 0x74)
            entries.append(Entry(name, kind, start, size))
        return entries

    def names(self) -> set[str]:
        return {e.name for e in self.entries}

    def find(self, name: str) -> Entry | None:
        return next((e for e in self.entries if e.kind == _STREAM and e.name == name), None)

    def read_prefix(self, entry: Entry, limit: int) -> bytes:
        """The first ``limit`` bytes of a stream (fewer if the stream is shorter)."""
        limit = min(limit, entry.size)
        if entry.size >= self._mini_cutoff:
            return self._read_chain_bytes(entry.start, limit)
        mini_table = list(struct.unpack(f"<{len(self._minifat) // 4}I", self._minifat))
        ministream = self._read_chain_bytes(self._root_start, limit=len(self._data))
        out = bytearray()
        for index in self._chain(entry.start, mini_table, limit_links=len(mini_table) + 1):
            offset = index * self._mini_sector
            out += ministream[offset : offset + self._mini_sector]
            if len(out) >= limit:
                break
        return bytes(out[:limit])
