"""`consent-gateway store retention --older-than PERIOD [--dry-run]`."""

from __future__ import annotations

from gateway.audit import retention as use_case
from gateway.core.settings import Settings


async def retention(settings: Settings, older_than: str, dry_run: bool) -> int:
    cutoff = use_case.cutoff_for(older_than)
    report = await use_case.retention(settings, cutoff, dry_run=dry_run)
    out = report.as_json()
    verb = "would drop" if dry_run else "dropped"
    print(f"cutoff: {out['cutoff']}")
    if not report.dropped:
        print("no month partition is wholly older than the cutoff: nothing to drop")
        return 0
    for p in report.dropped:
        print(f"{verb} {p['partition']} ({p['rows']} record(s))")
    print(f"records kept (latest states, chain): {out['records_kept']}")
    print(f"records {verb}: {out['records_dropped']}")
    print(f"chain links retired: {out['links_retired']}")
    print(f"retained partition now covers records before {out['retained_before']}")
    if not dry_run:
        print(f"retention checkpoint {out['retention_id']} signed for {len(out['bases'])} node(s)")
    return 0
