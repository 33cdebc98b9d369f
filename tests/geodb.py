"""Write small MaxMind-format databases for tests with mmdb-writer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def write_mmdb(
    path: Path,
    networks: Mapping[str, Mapping[str, Any]],
    database_type: str = "Test-GeoIP2-City",
) -> Path:
    """Write ``{cidr: record}`` as an IPv6 database with IPv4 at ::/96, as MaxMind does."""
    writer = MMDBWriter(
        ip_version=6,
        database_type=database_type,
        languages=["en"],
        description={"en": "consent-gateway test database"},
        ipv4_compatible=True,
    )
    for cidr, record in networks.items():
        writer.insert_network(IPSet([cidr]), dict(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    writer.to_db_file(str(path))
    return path


def city(country: str | None, *subdivisions: str, registered: str | None = None) -> dict[str, Any]:
    """A GeoIP2-City-shaped record."""
    record: dict[str, Any] = {}
    if country:
        record["country"] = {"iso_code": country}
    if registered:
        record["registered_country"] = {"iso_code": registered}
    if subdivisions:
        record["subdivisions"] = [{"iso_code": s} for s in subdivisions]
    return record
