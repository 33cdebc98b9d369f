"""The layouts of GPP's US sections (``usnat`` and the state sections), as data.

From the GPP section specifications (Sections/US-National, Sections/US-States) in the order
and with the field names @iabgpp/cmpapi uses. A field is ``(name, bits, count, low, high)``:
``count`` 0 is one integer, otherwise a list of ``count`` integers (the spec's
``N-Bitfield(bits, count)``); values must lie in ``low..high`` (the spec's enumerations).

Indiana, Kentucky, Maryland and Rhode Island (section ids 24-27, public comment October 2025)
describe a section header (SectionID, Version, SubSections) in the specification text, but the
reference library, whose strings are what readers parse today, writes the subsections without
it; the wire format here follows the library. Flagged for review when the specification is final.
"""

from __future__ import annotations

from dataclasses import dataclass

Field = tuple[str, int, int, int, int]


def _n(name: str) -> Field:
    """A 2-bit notice, opt-out or consent value: 0 not applicable, 1, 2."""
    return (name, 2, 0, 0, 2)


def _list(name: str, count: int) -> Field:
    return (name, 2, count, 0, 2)


VERSION: Field = ("Version", 6, 0, 0, 63)
MSPA: tuple[Field, ...] = (
    ("MspaCoveredTransaction", 2, 0, 1, 2),
    _n("MspaOptOutOptionMode"),
    _n("MspaServiceProviderMode"),
)
NEW_MSPA: tuple[Field, ...] = (
    ("MspaVersion", 6, 0, 0, 63),
    ("MspaCoveredTransaction", 2, 0, 1, 2),
    _n("MspaMode"),
)


@dataclass(frozen=True)
class UsSection:
    id: int
    name: str
    layouts: dict[int, tuple[Field, ...]]
    """Core fields by section version (the layout's first field holds the version)."""
    subsection: str | None
    """``gpc``: an optional GPC subsection; ``sensitive``: an optional SensitiveDataProcessing
    subsection of 8 values (the October 2025 sections); None: no subsection."""

    @property
    def current(self) -> int:
        return max(self.layouts)

    @property
    def versioned(self) -> bool:
        """Whether the first core field is the section's own Version (else MspaVersion)."""
        return self.layouts[self.current][0][0] == "Version"


def _classic(
    section_id: int,
    name: str,
    notices: tuple[str, ...],
    opt_outs: tuple[str, ...],
    sensitive: int,
    child: int,
    extra: tuple[str, ...] = (),
    gpc: bool = True,
) -> UsSection:
    """The 2023-2024 state layout: notices, opt-outs, sensitive data, child, extras, MSPA."""
    child_field = (
        _list("KnownChildSensitiveDataConsents", child)
        if child
        else _n("KnownChildSensitiveDataConsents")
    )
    fields = (
        VERSION,
        *(_n(f) for f in notices),
        *(_n(f) for f in opt_outs),
        _list("SensitiveDataProcessing", sensitive),
        child_field,
        *(_n(f) for f in extra),
        *MSPA,
    )
    return UsSection(section_id, name, {1: fields}, "gpc" if gpc else None)


_PN = ("ProcessingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice")
_SN = ("SharingNotice", "SaleOptOutNotice", "TargetedAdvertisingOptOutNotice")
_OO = ("SaleOptOut", "TargetedAdvertisingOptOut")
_ADC = ("AdditionalDataProcessingConsent",)


def _usnat(sensitive: int, child: int) -> tuple[Field, ...]:
    return (
        VERSION,
        *(
            _n(f)
            for f in (
                "SharingNotice",
                "SaleOptOutNotice",
                "SharingOptOutNotice",
                "TargetedAdvertisingOptOutNotice",
                "SensitiveDataProcessingOptOutNotice",
                "SensitiveDataLimitUseNotice",
                "SaleOptOut",
                "SharingOptOut",
                "TargetedAdvertisingOptOut",
            )
        ),
        _list("SensitiveDataProcessing", sensitive),
        _list("KnownChildSensitiveDataConsents", child),
        _n("PersonalDataConsents"),
        *MSPA,
    )


def _october_2025(section_id: int, name: str, subsection: str) -> UsSection:
    fields = (*NEW_MSPA, *(_n(f) for f in (*_PN, *_OO)))
    if subsection == "sensitive":
        fields = (*fields, _n("KnownChildSensitiveDataConsents"), _n(_ADC[0]))
    else:
        fields = (*fields, _n(_ADC[0]))
    return UsSection(section_id, name, {1: fields}, subsection)


US_SECTIONS: tuple[UsSection, ...] = (
    # MSPA US National: version 1 (12 sensitive categories, 2 child) and version 2 (16, 3).
    UsSection(7, "usnat", {1: _usnat(12, 2), 2: _usnat(16, 3)}, "gpc"),
    UsSection(
        8,
        "usca",
        {
            1: (
                VERSION,
                *(
                    _n(f)
                    for f in (
                        "SaleOptOutNotice",
                        "SharingOptOutNotice",
                        "SensitiveDataLimitUseNotice",
                        "SaleOptOut",
                        "SharingOptOut",
                    )
                ),
                _list("SensitiveDataProcessing", 9),
                _list("KnownChildSensitiveDataConsents", 2),
                _n("PersonalDataConsents"),
                *MSPA,
            )
        },
        "gpc",
    ),
    _classic(9, "usva", _SN, _OO, 8, 0, gpc=False),
    _classic(10, "usco", _SN, _OO, 7, 0),
    _classic(11, "usut", (*_SN, "SensitiveDataProcessingOptOutNotice"), _OO, 8, 0, gpc=False),
    _classic(12, "usct", _SN, _OO, 8, 3),
    _classic(13, "usfl", _PN, _OO, 8, 3, _ADC, gpc=False),
    _classic(14, "usmt", _SN, _OO, 8, 3, _ADC),
    _classic(15, "usor", _PN, _OO, 11, 3, _ADC),
    _classic(16, "ustx", _PN, _OO, 8, 0, _ADC),
    _classic(17, "usde", _PN, _OO, 9, 5, _ADC),
    _classic(18, "usia", (*_PN, "SensitiveDataOptOutNotice"), _OO, 8, 0),
    _classic(19, "usne", _PN, _OO, 8, 0, _ADC),
    _classic(20, "usnh", _PN, _OO, 8, 3, _ADC),
    _classic(21, "usnj", _PN, _OO, 10, 5, _ADC),
    _classic(22, "ustn", _PN, _OO, 8, 0, _ADC),
    _classic(23, "usmn", _PN, _OO, 8, 0, _ADC),
    _october_2025(24, "usmd", "gpc"),
    _october_2025(25, "usin", "sensitive"),
    _october_2025(26, "usky", "sensitive"),
    _october_2025(27, "usri", "sensitive"),
)
