"""[tcf] and [gpp] in site.toml, the Global Vendor List import, and what `check` says about them."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.checks import CheckReport
from gateway.cli.iab_checks import check_iab
from gateway.cli.main import main
from gateway.core.errors import ConfigError
from gateway.core.iab import TcfRestriction
from gateway.core.jurisdictions import load_rules
from gateway.sites.catalog import load_site
from gateway.sites.gvl_store import gvl_path, load_gvl
from gateway.sites.iab_sitefile import parse_gpp, parse_tcf
from gateway.standards.gvl import parse
from tests.helpers import ROOT
from tests.iab_site import CMP_ID, GVL_FILE, TCF_TOML, tcf_settings

PURPOSES = {"necessary", "analytics", "marketing", "personalization"}
WHERE = Path("banners/x/site.toml")
LATER = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)  # five days after the fixture's lastUpdated


def gvl_data() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(GVL_FILE.read_bytes())
    return data


def test_tcf_table_is_parsed() -> None:
    tcf = parse_tcf(
        WHERE,
        {
            "cmp_id": 300,
            "publisher_country": "DE",
            "vendors": [793, 28],
            "consent": {"marketing": [7, 1]},
            "restrictions": [{"purpose": 2, "type": "not_allowed", "vendors": [28]}],
        },
        PURPOSES,
    )
    assert tcf is not None and tcf.issuing
    assert tcf.vendors == (28, 793) and tcf.consent == {"marketing": (1, 7)}
    assert tcf.restrictions == (TcfRestriction(2, 0, (28,)),)
    assert tcf.rules == ("gdpr", "uk")
    assert parse_tcf(WHERE, None, PURPOSES) is None
    assert not parse_tcf(WHERE, {}, PURPOSES).issuing  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"cmp": 1}, "tcf.cmp"),
        ({"cmp_id": 5000}, "tcf.cmp_id"),
        ({"cmp_id": True}, "tcf.cmp_id"),
        ({"publisher_country": "Germany"}, "tcf.publisher_country"),
        ({"vendors": [1, 1]}, "tcf.vendors"),
        ({"vendors": ["755"]}, "tcf.vendors"),
        ({"consent": {"ads": [1]}}, "tcf.consent.ads"),
        ({"consent": {"marketing": [12]}}, "tcf.consent.marketing"),
        ({"special_features": {"marketing": [3]}}, "tcf.special_features.marketing"),
        ({"restrictions": [{"purpose": 2, "type": "maybe", "vendors": []}]}, "type"),
        ({"vendors": [1], "restrictions": [{"purpose": 2, "type": "not_allowed", "vendors": [2]}]},
         "tcf.restrictions[0].vendors"),
    ],
)  # fmt: skip
def test_tcf_table_errors_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_tcf(WHERE, table, PURPOSES)
    assert key in caught.value.where


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"regions": {"Europe": ["tcfeuv2"]}}, "gpp.regions.Europe"),
        ({"regions": {"US-CA": ["usca"]}}, "gpp.regions.US-CA"),
        ({"mspa_mode": "always"}, "gpp.mspa_mode"),
        ({"mspa_covered": "yes"}, "gpp.mspa_covered"),
        ({"sections": []}, "gpp.sections"),
    ],
)
def test_gpp_table_errors_name_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_gpp(WHERE, table)
    assert key in caught.value.where


def test_the_fixture_vendor_list_parses() -> None:
    gvl = parse(GVL_FILE.read_bytes())
    assert gvl.vendor_list_version == 130 and gvl.tcf_policy_version == 5
    assert len(gvl.purposes) == 11 and len(gvl.special_features) == 2
    assert gvl.stacks[2].purposes == (2, 7)
    assert gvl.vendors[755].leg_int_purposes == (2, 7, 9, 10)
    assert gvl.vendors[1126].deleted and not gvl.vendors[28].deleted


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(gvlSpecificationVersion=2), "gvlSpecificationVersion"),
        (lambda d: d.update(lastUpdated="yesterday"), "lastUpdated"),
        (lambda d: d.update(vendorListVersion="130"), "vendorListVersion"),
        (lambda d: d["vendors"]["28"].update(id=29), "vendors.28"),
        (lambda d: d["vendors"]["28"].update(purposes=[1, 99]), "vendors.28"),
        (lambda d: d["vendors"]["28"].update(legIntPurposes="all"), "legIntPurposes"),
        (lambda d: d.pop("stacks"), "stacks"),
    ],
)
def test_a_broken_vendor_list_is_refused_naming_the_field(change: Any, where: str) -> None:
    data = gvl_data()
    change(data)
    with pytest.raises(ConfigError) as caught:
        parse(orjson.dumps(data))
    assert where in caught.value.where


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_bytes_are_a_vendor_list_or_a_config_error(raw: bytes) -> None:
    """Threat: a hostile or corrupted vendor-list.json given to `tcf gvl import`."""
    with contextlib.suppress(ConfigError):
        parse(raw)


def test_gvl_import_stores_validates_and_refuses_an_older_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    banners = tmp_path / "banners"
    banners.mkdir()
    assert main(["tcf", "gvl", "import", str(GVL_FILE), "--banners-dir", str(banners)]) == 0
    assert "imported vendor list version 130" in capsys.readouterr().out
    assert gvl_path(banners).read_bytes() == GVL_FILE.read_bytes()
    assert load_gvl(banners) is not None
    older = gvl_data() | {"vendorListVersion": 129}
    (tmp_path / "old.json").write_bytes(orjson.dumps(older))
    assert (
        main(["tcf", "gvl", "import", str(tmp_path / "old.json"), "--banners-dir", str(banners)])
        == 1
    )
    assert "older than the imported 130" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{}")
    assert (
        main(["tcf", "gvl", "import", str(tmp_path / "bad.json"), "--banners-dir", str(banners)])
        == 1
    )
    assert gvl_path(banners).read_bytes() == GVL_FILE.read_bytes()  # nothing partial stored


def _findings(tmp_path: Path, extra: str = TCF_TOML, now: dt.datetime = LATER) -> CheckReport:
    settings = tcf_settings(tmp_path, extra)
    bundle = load_site(
        settings.banners_dir / "demo",
        settings.locales_dir,
        load_rules(),
        load_gvl(settings.banners_dir),
    )
    report = CheckReport()
    check_iab(bundle, report, now)
    return report


def _errors(report: CheckReport) -> list[str]:
    return [f"{e.where}: {e.message}" for e in report.errors]


def test_check_passes_a_sound_tcf_site_but_the_missing_german_texts(tmp_path: Path) -> None:
    report = _findings(tmp_path)
    errors = _errors(report)
    assert len(errors) == 1, errors
    assert errors[0].startswith("locale de of site demo: ")
    assert "TCF texts are not translated" in errors[0]
    assert any(f"CMP id {CMP_ID}" in note for note in report.notes)


def test_check_names_what_tcf_forbids_and_what_is_unknown(tmp_path: Path) -> None:
    restriction = (
        '\n[[tcf.restrictions]]\npurpose = 4\ntype = "require_legitimate_interest"\n'
        "vendors = [28]\n"
    )
    bad = (
        TCF_TOML.replace("vendors = [28, 755, 793]", "vendors = [28, 755, 793, 1126, 9999]")
        .replace("analytics = [9, 10]", "analytics = [9, 10, 3]")
        .replace("\n[gpp]", restriction + "\n[gpp]")
    )
    report = _findings(tmp_path, bad)
    errors = "\n".join(_errors(report))
    assert (
        "tcf.legitimate_interest.analytics: TCF purpose 3 cannot rest on legitimate interest"
        in errors
    )
    assert "tcf.vendors: vendor 9999 is not in the vendor list (version 130)" in errors
    assert "tcf.restrictions[1]: purpose 4 cannot be restricted to legitimate interest" in errors
    warnings = " ".join(w.message for w in report.warnings)
    assert "vendor 1126 (Example Retired Vendor) is deleted" in warnings


def test_check_refuses_consent_bits_from_an_essential_purpose(tmp_path: Path) -> None:
    report = _findings(
        tmp_path, TCF_TOML.replace("[tcf.consent]\n", "[tcf.consent]\nnecessary = [1]\n")
    )
    assert any("tcf.consent.necessary: necessary is essential" in e for e in _errors(report))


def test_check_says_why_no_tc_string_is_issued(tmp_path: Path) -> None:
    report = _findings(tmp_path, TCF_TOML.replace(f"cmp_id = {CMP_ID}", "cmp_id = 0"))
    errors = "\n".join(_errors(report))
    assert "tcf.cmp_id: no IAB Europe-registered CMP id: the gateway issues no TC string" in errors
    assert any("(no TCF: the id GPP allows" in n and "CMP id 1" in n for n in report.notes)


def test_check_flags_an_old_vendor_list(tmp_path: Path) -> None:
    toml = TCF_TOML.replace("gvl_max_age_days = 3650", "gvl_max_age_days = 14")
    report = _findings(tmp_path, toml, now=dt.datetime(2027, 1, 10, tzinfo=dt.UTC))
    errors = "\n".join(_errors(report))
    assert (
        "tcf.gvl_max_age_days: the vendor list (version 130, lastUpdated 2026-11-26) is 44 "
        "days old, more than 14" in errors
    )
    assert "more than 14" not in "\n".join(_errors(_findings(tmp_path / "b", toml)))


def test_check_needs_an_imported_vendor_list(tmp_path: Path) -> None:
    settings = tcf_settings(tmp_path)
    gvl_path(settings.banners_dir).unlink()
    bundle = load_site(settings.banners_dir / "demo", settings.locales_dir, load_rules(), None)
    report = CheckReport()
    check_iab(bundle, report, LATER)
    assert any("no Global Vendor List imported" in e.message for e in report.errors)


def test_i18n_extract_adds_the_tcf_texts_and_translations_satisfy_check(tmp_path: Path) -> None:
    from babel.messages.pofile import read_po, write_po

    from gateway.sites import i18n_workflow

    settings = tcf_settings(tmp_path)
    i18n_workflow.run(settings, "extract", "demo", None)
    i18n_workflow.run(settings, "update", "demo", None)
    po = settings.locales_dir / "de" / "LC_MESSAGES" / "demo.po"
    with po.open("rb") as fp:
        catalog = read_po(fp, locale="de")
    tcf_ids = [m for m in catalog if m.id and any("TCF" in c for c in m.auto_comments)]
    assert len(tcf_ids) >= 25
    for message in tcf_ids:  # a translator at work (the test only needs every entry filled)
        message.string = "DE: " + str(message.id)
        message.flags.discard("fuzzy")
    with po.open("wb") as fp:
        write_po(fp, catalog)
    bundle = load_site(
        settings.banners_dir / "demo",
        settings.locales_dir,
        load_rules(),
        load_gvl(settings.banners_dir),
    )
    report = CheckReport()
    check_iab(bundle, report, LATER)
    assert _errors(report) == []


def test_a_broken_vendor_list_stops_only_the_tcf_sites(tmp_path: Path) -> None:
    import shutil

    from gateway.sites.catalog import scan

    settings = tcf_settings(tmp_path)
    shutil.copytree(ROOT / "banners" / "demo", settings.banners_dir / "plain")
    for po in settings.locales_dir.glob("*/LC_MESSAGES/demo.po"):
        shutil.copy(po, po.with_name("plain.po"))
    gvl_path(settings.banners_dir).write_text("{not json")
    bundles, errors = scan(settings.banners_dir, settings.locales_dir, load_rules())
    assert set(bundles) == {"plain"}
    assert len(errors) == 1 and "vendor-list.json" in errors[0].where


def test_consent_revision_follows_what_is_consented_to_only(tmp_path: Path) -> None:
    from gateway.sites.catalog import consent_revision

    settings = tcf_settings(tmp_path)
    site = load_site(settings.banners_dir / "demo", settings.locales_dir, load_rules()).site
    assert site.tcf is not None
    rules = load_rules()
    revision = consent_revision(site, rules)
    same = dataclasses.replace(site.tcf, cmp_version=9, gvl_max_age_days=7)
    assert consent_revision(dataclasses.replace(site, tcf=same), rules) == revision
    more = dataclasses.replace(site.tcf, vendors=(*site.tcf.vendors, 1126))
    assert consent_revision(dataclasses.replace(site, tcf=more), rules) != revision
