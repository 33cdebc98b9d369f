"""IAB benchmark: what TCF costs a site's visitors (bytes) and the recording path (µs per record).

Run `python -m bench.iab`. Bytes: a gateway started as README tells users (`consent-gateway
serve`, the vendor list imported with `consent-gateway tcf gvl import`) serves the demo site
twice, as shipped and as `news` with the test [tcf]/[gpp]; consent.js for an EEA visitor of
each, and the lazily loaded tcf.js, raw and gzip-compressed. Time: per record, the pure record
path the gateway already runs (parse, validate, check the rule, enrich) against the same plus
the TC/GPP work, issuing strings (the snippet's records) and checking an app's strings.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import tempfile
import time
import timeit
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.harness import CONSENT_GATEWAY, ROOT, as_make_run, gateway
from gateway.core.model import Region
from gateway.recording.consent import RecordContext, check_rule, enrich, validate
from gateway.recording.fields import parse_body
from gateway.sites.catalog import load_site
from gateway.sites.gvl_store import load_gvl
from gateway.standards import issuing, record_check
from gateway.standards.record_check import record_signals
from tests.helpers import shipped_rules
from tests.iab_site import GVL_FILE, TCF_TOML

N = 2000


def per_call_us(fn: Callable[[], object], n: int = N) -> float:
    fn()
    return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def _gz(data: bytes) -> int:
    return len(gzip.compress(data, 9))


def _workspace(work: Path) -> tuple[Path, Path]:
    """banners/ with the demo site and `news` (the demo with [tcf]/[gpp]), the vendor list
    imported, and locales/ with the demo's catalogs for both."""
    banners = work / "banners"
    shutil.copytree(ROOT / "banners", banners)
    shutil.copytree(banners / "demo", banners / "news")
    toml = banners / "news" / "site.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + TCF_TOML, encoding="utf-8")
    subprocess.run(
        [CONSENT_GATEWAY, "tcf", "gvl", "import", str(GVL_FILE), "--banners-dir", str(banners)],
        check=True,
        capture_output=True,
    )
    locales = work / "locales"
    shutil.copytree(ROOT / "locales", locales)
    for po in locales.glob("*/LC_MESSAGES/demo.po"):
        shutil.copy(po, po.with_name("news.po"))
    return banners, locales


def sizes() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        banners, locales = _workspace(work)
        env = {"GATEWAY_BANNERS_DIR": str(banners), "GATEWAY_LOCALES_DIR": str(locales),
               "GATEWAY_DATA_DIR": as_make_run(work / "data")}  # fmt: skip
        with gateway(env) as base:
            plain = _get(f"{base}/v1/sites/demo/consent.js?region=DE")
            news = _get(f"{base}/v1/sites/news/consent.js?region=DE")
            config = orjson.loads(_get(f"{base}/v1/sites/news/config?region=DE"))
            lazy = _get(base + config["iab"]["script"])
            us = _get(f"{base}/v1/sites/news/consent.js?region=US-CA")
    rows = [
        ("consent.js, site without TCF (DE)", plain),
        ("consent.js, TCF site (DE): config + stub", news),
        ("consent.js, TCF site (US-CA): usnat + stub", us),
        ("tcf.js, lazy (CMP + first layer, en)", lazy),
    ]
    lines = [f"{name:<46} {len(body):>7} B  {_gz(body):>6} B gz" for name, body in rows]
    first = _gz(news) + _gz(lazy)
    both = len(news) + len(lazy)
    lines.append(
        f"{'TCF first visit (consent.js + tcf.js)':<46} {both:>7} B  {first:>6} B gz"
        f"  (+{first - _gz(plain)} B gz over the site without TCF)"
    )
    return lines


def timings() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        banners, locales = _workspace(Path(tmp))
        bundle = load_site(banners / "news", locales, shipped_rules(), load_gvl(banners))
    site, gvl = bundle.site, bundle.gvl
    rule = bundle.rules.rule(Region("DE"))
    raw = orjson.dumps({
        "subject_id": "0123456789abcdef0123456789abcdef", "banner_version": bundle.banner_version,
        "action": "custom", "channel": "web", "language": "de",
        "choices": {"analytics": True, "marketing": False, "personalization": True},
    })  # fmt: skip
    context = RecordContext(None, Region("DE", None, "header"), rule, False, "bench", "", "de",
                            bundle.consent_revision)  # fmt: skip
    now = time.time_ns() // 100_000_000

    def record_path() -> object:
        body = parse_body(raw, "text/plain")
        consent = validate(body, site, bundle.known_versions)
        check_rule(consent, site, rule)
        return enrich(consent, context, record_id="r", recorded_at="t", node_id="n")

    consent = validate(parse_body(raw, "text/plain"), site, bundle.known_versions)
    issued = issuing.Issuer(site, gvl).issue(
        issuing.applicable(site, gvl, rule.id, Region("DE")), consent.choices, False, "de", now
    )
    app_body = {"tc_string": issued.tc_string, "gpp_string": issued.gpp_string}

    issuer = bundle.issuer

    def issue() -> object:
        return record_signals({}, issuer, rule.id, Region("DE"), False, consent.choices, "de", now)

    def check() -> object:
        return record_signals(
            app_body, issuer, rule.id, Region("DE"), False, consent.choices, "de", now
        )

    def issue_cold() -> object:
        issuer._issued.clear()
        return issue()

    def check_cold() -> object:
        record_check._tc.cache_clear()
        record_check._gpp.cache_clear()
        return check()

    base = per_call_us(record_path)
    lines = [f"{'record path (parse, validate, rule, enrich)':<46} {base:8.1f} µs"]
    for name, fn in (
        ("+ issue TC and GPP strings (snippet record)", issue),
        ("  the same, first of its choice that day", issue_cold),
        ("+ check an app's TC and GPP strings", check),
        ("  the same, first sight of those strings", check_cold),
    ):
        cost = per_call_us(fn)
        lines.append(f"{name:<46} {cost:8.1f} µs  ({cost / base:4.2f}x the record path)")
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    for line in sizes():
        print(line)
    for line in timings():
        print(line)


if __name__ == "__main__":
    main()
