"""``consent-gateway tcf|gpp decode|encode``: JSON out, JSON in, one-line errors."""

from __future__ import annotations

import io
import json

import pytest

from gateway.cli.main import main
from tests.test_standards_tcf import SPEC_EXAMPLE

USNAT = "DBABLA~BVQqAAAAAgA.QA"


def run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_tcf_decode_prints_tcmodel_json_that_encode_turns_back_into_the_string(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, monkeypatch, ["tcf", "decode", SPEC_EXAMPLE])
    assert code == 0
    data = json.loads(out)
    assert data["cmpId"] == 880 and data["vendorsDisclosed"] == [1, 2, 3, 4, 5, 100, 404]
    code, out, _ = run(capsys, monkeypatch, ["tcf", "encode"], stdin=json.dumps(data))
    assert (code, out) == (0, SPEC_EXAMPLE + "\n")


def test_gpp_decode_and_encode_round_trip(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, monkeypatch, ["gpp", "decode", USNAT])
    assert code == 0 and json.loads(out)["header"]["SectionIds"] == [7]
    code, again, _ = run(capsys, monkeypatch, ["gpp", "encode"], stdin=out)
    assert (code, again) == (0, USNAT + "\n")


@pytest.mark.parametrize(
    ("argv", "stdin", "message"),
    [
        (["tcf", "decode", "CQSbk4AQ"], "", "TC string: core segment: LastUpdated needs 36 bit(s)"),
        (["gpp", "decode", "DBABLA~BVQq"], "", "GPP string: usnat core subsection"),
        (["tcf", "encode"], "[1, 2", "(stdin): not JSON"),
        (["gpp", "encode"], '{"usnat": {"Gpc": 1}}', "usnat.Gpc: expected true or false"),
    ],
)
def test_bad_input_is_a_one_line_error_and_exit_1(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    stdin: str,
    message: str,
) -> None:
    code, out, err = run(capsys, monkeypatch, argv, stdin)
    assert code == 1 and out == ""
    assert err.startswith("consent-gateway: error: ") and message in err
    assert err.count("\n") == 1


def test_lenient_decoding_reads_a_pre_v2_3_string(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA"
    assert run(capsys, monkeypatch, ["tcf", "decode", legacy])[0] == 1
    code, out, _ = run(capsys, monkeypatch, ["tcf", "decode", "--lenient", legacy])
    assert code == 0 and json.loads(out)["segments"] == ["core"]
