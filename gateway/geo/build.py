"""Build the embedded country database (MaxMind DB format) from Debian tor-geoipdb's ranges.

Source: IPFire Location country ranges as shipped by Debian's ``tor-geoipdb`` package
(``geoip``: ``INTLOW,INTHIGH,CC``; ``geoip6``: ``LOW,HIGH,CC`` in IPv6 text; ``#`` comments),
licensed CC BY-SA 4.0; the attribution travels in the database description.

Codes that are not countries are handled so that no visitor is ever placed in the wrong
jurisdiction: ``UK`` is renamed ``GB``; ``EU`` ("somewhere in the EU") becomes a
continent-only record (``{"continent": {"code": "EU"}}``), so the address is known but its
country is not and the gateway fails closed to the strictest rule; ``??``, ``A1``, ``A2``,
``AP`` and the withdrawn ``AN``/``CS`` (their successors are ambiguous) are left out.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import tempfile
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb
from mmdb_writer import MMDBWriter, SearchTreeLeaf, SearchTreeNode

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings

DEFAULT_SOURCE = Path("/usr/share/tor")
DATABASE_TYPE = "IPFire-Location-Country"
ATTRIBUTION = "IPFire Location data, CC BY-SA 4.0, via Debian tor-geoipdb"

RENAMED = {"UK": "GB"}
CONTINENT_ONLY = frozenset({"EU"})
DROPPED = frozenset({"??", "A1", "A2", "AP", "AN", "CS", "O1", "XX"})

_V4_MAX = (1 << 32) - 1
# IPv6 space MaxMind keeps for IPv4: ::/96 holds it, ::ffff:0:0/96 is an alias of it.
_V4_IN_V6 = ((0, _V4_MAX), (0xFFFF << 32, (0xFFFF << 32) | _V4_MAX))

Interval = tuple[int, int, str]  # low, high (inclusive), record key


@dataclass(frozen=True)
class BuildStats:
    """What ``build_country_mmdb`` wrote."""

    output: Path
    ranges_v4: int  # source ranges stored
    ranges_v6: int
    skipped: int  # source ranges left out (placeholder codes, IPv4 space in geoip6)
    countries: int  # distinct country codes stored
    networks: int  # CIDR networks in the search tree
    node_count: int
    seconds: float
    size_bytes: int

    def __str__(self) -> str:
        return (
            f"wrote {self.output}: {self.ranges_v4:,} IPv4 + {self.ranges_v6:,} IPv6 ranges "
            f"({self.skipped:,} skipped), {self.countries} countries, {self.networks:,} networks, "
            f"{self.size_bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "ranges_v4": self.ranges_v4,
            "ranges_v6": self.ranges_v6,
            "skipped": self.skipped,
            "countries": self.countries,
            "networks": self.networks,
            "node_count": self.node_count,
            "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
        }


def default_output(settings: Settings) -> Path:
    """Where ``geo build`` writes and ``Settings.geoip_path`` looks."""
    return settings.data_dir / "geo" / "country.mmdb"


def _parse_v4(text: str) -> int:
    value = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= value <= _V4_MAX:
        raise ValueError(f"{text} is not an IPv4 address as an integer")
    return value


def _parse_v6(text: str) -> int:
    try:
        # inet_pton is several times faster than ipaddress for 500k addresses.
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    except OSError:
        raise ValueError(f"{text!r} is not an IPv6 address") from None


def _record_key(code: str) -> str | None:
    code = RENAMED.get(code, code)
    if code in CONTINENT_ONLY:
        return code
    if code in DROPPED or not (len(code) == 2 and code.isascii() and code.isalpha()):
        return None
    return code


def read_ranges(path: Path, version: int) -> tuple[list[Interval], int]:
    """Parse one tor geoip file into sorted, merged intervals; also count the skipped ranges."""
    parse = _parse_v4 if version == 4 else _parse_v6
    raw: list[tuple[int, int, str, int]] = []
    skipped = 0
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path}: {exc}", hint="install tor-geoipdb or pass --source"
        ) from exc
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(",")
        try:
            if len(parts) != 3:
                raise ValueError("expected LOW,HIGH,CC")
            low, high = parse(parts[0].strip()), parse(parts[1].strip())
            if low > high:
                raise ValueError("LOW is above HIGH")
        except ValueError as exc:
            raise ConfigError(
                f"malformed range {line!r}: {exc}",
                hint="expected Tor geoip format",
                where=f"{path}:{lineno}",
            ) from None
        key = _record_key(parts[2].strip().upper())
        if key is None:
            skipped += 1
            continue
        if version == 6 and any(low <= hi and high >= lo for lo, hi in _V4_IN_V6):
            skipped += 1  # that space belongs to the IPv4 file
            continue
        raw.append((low, high, key, lineno))
    raw.sort()
    merged: list[list[Any]] = []
    for low, high, key, lineno in raw:
        if merged and low <= merged[-1][1]:
            raise ConfigError(
                f"range starting at line {lineno} overlaps the one before it",
                hint="the source file is corrupt; reinstall tor-geoipdb",
                where=str(path),
            )
        if merged and merged[-1][2] == key and merged[-1][1] + 1 == low:
            merged[-1][1] = high  # adjacent and same answer: one interval, fewer CIDRs
        else:
            merged.append([low, high, key])
    return [(m[0], m[1], m[2]) for m in merged], skipped


class _TreeBuilder:
    """Turns sorted, disjoint intervals into a minimal binary trie of mmdb-writer nodes."""

    def __init__(self, intervals: list[Interval], leaves: dict[str, SearchTreeLeaf]) -> None:
        self.los = [i[0] for i in intervals]
        self.his = [i[1] for i in intervals]
        self.leaves = [leaves[i[2]] for i in intervals]
        self.networks = 0

    def build(self, bits: int) -> SearchTreeNode | SearchTreeLeaf | None:
        return self._subtree(0, len(self.los), 0, bits)

    def _subtree(
        self, i: int, j: int, base: int, bits: int
    ) -> SearchTreeNode | SearchTreeLeaf | None:
        # Intervals i..j-1 are exactly those meeting [base, base + 2**bits).
        if i == j:
            return None
        if j - i == 1 and self.los[i] <= base and self.his[i] >= base + (1 << bits) - 1:
            self.networks += 1
            return self.leaves[i]
        mid = base + (1 << (bits - 1))
        k = bisect_left(self.los, mid, i, j)
        right_start = k - 1 if k > i and self.his[k - 1] >= mid else k
        return SearchTreeNode(
            self._subtree(i, k, base, bits - 1), self._subtree(right_start, j, mid, bits - 1)
        )


def _graft(root: SearchTreeNode, bits: Sequence[int], child: Any) -> None:
    """Point the record at ``bits`` (from the root) to ``child``, creating nodes."""
    node = root
    for bit in bits[:-1]:
        nxt = node[bit]
        if not isinstance(nxt, SearchTreeNode):
            nxt = SearchTreeNode()
            node[bit] = nxt
        node = nxt
    node[bits[-1]] = child


def _leaf_for(key: str) -> SearchTreeLeaf:
    if key in CONTINENT_ONLY:
        return SearchTreeLeaf({"continent": {"code": key}})
    return SearchTreeLeaf({"country": {"iso_code": key}})


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: its passes over a million new tree nodes cost ~4x the build itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _fsync_dir(path: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_country_mmdb(v4: Path | None, v6: Path | None, output: Path) -> BuildStats:
    """Write a GeoIP2-Country-shaped ``.mmdb`` from tor geoip files, atomically."""
    if v4 is None and v6 is None:
        raise ConfigError("no source ranges given", hint="pass the tor geoip and/or geoip6 file")
    with _gc_paused():
        return _build(v4, v6, output)


def _build(v4: Path | None, v6: Path | None, output: Path) -> BuildStats:
    started = time.perf_counter()
    ranges4, skipped4 = read_ranges(v4, 4) if v4 else ([], 0)
    ranges6, skipped6 = read_ranges(v6, 6) if v6 else ([], 0)
    keys = {r[2] for r in ranges4} | {r[2] for r in ranges6}
    leaves = {key: _leaf_for(key) for key in sorted(keys)}

    builder6 = _TreeBuilder(ranges6, leaves)
    root = builder6.build(128)
    if not isinstance(root, SearchTreeNode):
        root = SearchTreeNode()  # empty, or (absurdly) one leaf for all of IPv6: start afresh
    builder4 = _TreeBuilder(ranges4, leaves)
    root4 = builder4.build(32)
    if root4 is not None:
        _graft(root, [0] * 96, root4)
        _graft(root, [0] * 80 + [1] * 16, root4)  # share, not copy: the alias is free

    writer = MMDBWriter(
        ip_version=6,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description={"en": ATTRIBUTION},
        ipv4_compatible=True,
    )
    writer.tree = root
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer.to_db_file(tmp_name)
        with maxminddb.open_database(tmp_name) as check:  # refuse to install what cannot be read
            node_count = check.metadata().node_count
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(0o644)  # mkstemp makes it 0600; the server may run as another user
        os.replace(tmp, output)
        _fsync_dir(output.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return BuildStats(
        output=output,
        ranges_v4=len(ranges4),
        ranges_v6=len(ranges6),
        skipped=skipped4 + skipped6,
        countries=len(keys - CONTINENT_ONLY),
        networks=builder4.networks + builder6.networks,
        node_count=node_count,
        seconds=time.perf_counter() - started,
        size_bytes=output.stat().st_size,
    )


def run_build(
    settings: Settings, source: Path, output: Path | None, if_missing: bool
) -> BuildStats | None:
    """The ``geo build`` command: build from ``source``/geoip{,6}; None if skipped."""
    target = output or default_output(settings)
    if if_missing and target.exists():
        return None
    v4, v6 = source / "geoip", source / "geoip6"
    found4, found6 = v4.is_file(), v6.is_file()
    if not found4 and not found6:
        raise ConfigError(
            f"no geoip or geoip6 file in {source}",
            hint="install Debian's tor-geoipdb package, or pass --source DIR holding them",
        )
    return build_country_mmdb(v4 if found4 else None, v6 if found6 else None, target)
