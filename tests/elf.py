"""Reading 64-bit little-endian ELF images (the compiled extensions on Linux x86_64 and
aarch64) without readelf: their section names and their run-time library search paths."""

from __future__ import annotations

SHT_DYNAMIC = 6
DT_NULL, DT_RPATH, DT_RUNPATH = 0, 15, 29


def _sections(data: bytes) -> list[tuple[int, int, int, int, int]]:
    """``(name offset, type, offset, size, link)`` of each section header."""
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF file"
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    out = []
    for i in range(shnum):
        base = shoff + i * shentsize
        out.append((
            int.from_bytes(data[base:base + 4], "little"),
            int.from_bytes(data[base + 4:base + 8], "little"),
            int.from_bytes(data[base + 0x18:base + 0x20], "little"),
            int.from_bytes(data[base + 0x20:base + 0x28], "little"),
            int.from_bytes(data[base + 0x28:base + 0x2C], "little"),
        ))
    return out


def _string(data: bytes, table_offset: int, offset: int) -> str:
    start = table_offset + offset
    return data[start:data.index(b"\0", start)].decode()


def section_names(data: bytes) -> set[str]:
    """Section names of the image (what ``readelf -S`` lists)."""
    sections = _sections(data)
    shstrndx = int.from_bytes(data[0x3E:0x40], "little")
    strtab = sections[shstrndx][2]
    return {_string(data, strtab, name) for name, *_ in sections}


def runtime_search_paths(data: bytes) -> list[str]:
    """The image's DT_RPATH and DT_RUNPATH entries (what ``readelf -d`` shows as ``Library
    rpath`` / ``Library runpath``)."""
    sections = _sections(data)
    paths = []
    for _, kind, offset, size, link in sections:
        if kind != SHT_DYNAMIC:
            continue
        strtab = sections[link][2]
        for entry in range(offset, offset + size, 16):
            tag = int.from_bytes(data[entry:entry + 8], "little")
            if tag == DT_NULL:
                break
            if tag in (DT_RPATH, DT_RUNPATH):
                paths.append(_string(data, strtab, int.from_bytes(data[entry + 8:entry + 16], "little")))
    return paths
