"""The Global Vendor List snapshot beside the sites: ``banners/_iab/vendor-list.json``.

The operator imports the file IAB Europe publishes (``consent-gateway tcf gvl import FILE``);
it lives with the site data (a folder the site scan skips), is read once per catalog load and
reloaded with the sites. The gateway never fetches it at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.standards.gvl import GlobalVendorList, parse

FOLDER = "_iab"
FILE_NAME = "vendor-list.json"


def gvl_path(banners_dir: Path) -> Path:
    return banners_dir / FOLDER / FILE_NAME


def load_gvl(banners_dir: Path) -> GlobalVendorList | None:
    """The imported vendor list, None when there is none; ConfigError when it is broken."""
    path = gvl_path(banners_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the vendor list: {exc}", where=str(path)) from exc
    try:
        return parse(raw)
    except ConfigError as exc:
        raise ConfigError(exc.message, where=f"{path}: {exc.where}", hint=exc.hint) from None


def import_gvl(banners_dir: Path, source: Path) -> tuple[GlobalVendorList, Path]:
    """Validate ``source`` and store it atomically as the sites' vendor list."""
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc}", where=str(source)) from exc
    gvl = parse(raw)
    try:
        current = load_gvl(banners_dir)
    except ConfigError:  # a broken snapshot is what an import repairs
        current = None
    if current is not None and gvl.vendor_list_version < current.vendor_list_version:
        raise ConfigError(
            f"version {gvl.vendor_list_version} is older than the imported "
            f"{current.vendor_list_version}",
            where=str(source),
            hint="import the vendor list IAB Europe publishes now",
        )
    target = gvl_path(banners_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{FILE_NAME}.tmp")
    tmp.write_bytes(raw)
    os.replace(tmp, target)
    return gvl, target
