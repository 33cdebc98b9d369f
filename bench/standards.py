"""Codec benchmark: microseconds to decode (and encode) TC and GPP strings, against IAB's
reference JavaScript libraries decoding the same strings with node in the same run.

Run `python -m bench.standards` after `npm ci`. Strings: the TCF specification's example, a
large TC string (700 vendors on a bitfield, 400 on legitimate interest, 10 publisher
restrictions), and a GPP string with tcfeuv2, usnat and usca.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from gateway.standards import gpp, tcf
from gateway.standards.tcf_model import PurposeRestriction, TCModel
from tests.iab_reference import ok, reference

N = 2000
SPEC_EXAMPLE = "CQSbk4AQSbk4ANwAAAENAwCgAAAAAAAAAAYgACPAAAAA.IDKQA4AAgAKAGQAygAAA.YAAAAAAAAAAA"


def per_call_us(fn: Callable[[], object], n: int = N) -> float:
    fn()
    return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6


def strings() -> dict[str, tuple[str, str]]:
    large = TCModel(
        cmp_id=300, cmp_version=4, vendor_list_version=120, created=17_500_000_000,
        last_updated=17_500_000_000, purpose_consents=tuple(range(1, 12)),
        purpose_legitimate_interests=(2, 7, 8, 9, 10, 11),
        vendor_consents=tuple(i for i in range(1, 1100) if i % 3),
        vendor_legitimate_interests=tuple(range(1, 1100, 2))[:400],
        vendors_disclosed=tuple(range(1, 1100)),
        publisher_restrictions=tuple(
            PurposeRestriction(p, p % 3, tuple(range(10 * p, 10 * p + 40, 3))) for p in range(2, 12)
        ),
    )  # fmt: skip
    gpp_text = gpp.encode({
        "tcfeuv2": {"CmpId": 300, "Created": "2025-06-03T00:00:00Z",
                    "LastUpdated": "2025-06-03T00:00:00Z", "VendorConsents": list(range(1, 300)),
                    "VendorsDisclosed": list(range(1, 300))},
        "usnat": {"SaleOptOutNotice": 1, "SaleOptOut": 1, "Gpc": True},
        "usca": {"SaleOptOutNotice": 1, "SaleOptOut": 2},
    })  # fmt: skip
    return {
        "TC spec example": ("tcf", SPEC_EXAMPLE),
        "TC large": ("tcf", tcf.encode(large)),
        "GPP tcfeuv2+usnat+usca": ("gpp", gpp_text),
    }  # fmt: skip


def measure(kind: str, text: str) -> tuple[float, float]:
    """Microseconds to decode ``text`` and to encode what it decodes to."""
    if kind == "tcf":
        model = tcf.decode(text)
        return per_call_us(lambda: tcf.decode(text)), per_call_us(lambda: tcf.encode(model))
    data = gpp.decode(text)
    return per_call_us(lambda: gpp.decode(text)), per_call_us(lambda: gpp.encode(data))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    cases = strings()
    answers = reference(
        [{"op": f"{kind}_decode_us", "string": text, "n": N} for kind, text in cases.values()]
    )
    head = ("string", "chars", "decode us", "encode us", "reference decode us")
    print(f"{head[0]:24} {head[1]:>6} {head[2]:>10} {head[3]:>10} {head[4]:>20}")
    for (name, (kind, text)), answer in zip(cases.items(), answers, strict=True):
        dec, enc = measure(kind, text)
        print(f"{name:24} {len(text):>6} {dec:>10.1f} {enc:>10.1f} {ok(answer):>20.1f}")


if __name__ == "__main__":
    main()
