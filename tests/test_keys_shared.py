"""Keys every worker and every node must share: receipts, subject ids, rotation.

Threats: a receipt issued by one node (or worker) refused by another, so a subject cannot
read their history or prove their choice wherever the balancer sends them; one subject secret
deriving different subject ids on two nodes (one visitor's history split in two); a key
rotation that voids every receipt issued before it; a new node that signs with a key of its
own while the store holding the shared one is out of reach.
"""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient

from gateway.core.settings import Settings
from gateway.recording import keyring
from gateway.recording.receipts import KEY_FILE, Receipts
from gateway.sites.catalog import load_site
from tests.helpers import OPS, OPS_TOKEN, shipped_rules
from tests.pg import ORIGIN, ROOT, TcpProxy, consent_body, pg_dsn, recording_app  # noqa: F401

BUNDLE = load_site(ROOT / "banners" / "demo", ROOT / "locales", shipped_rules())
URL = "/v1/sites/demo/consents"
K1, K2, K3 = ("a" * 40, "b" * 40, "c" * 40)


def node(data_dir: Path, **changes: object) -> Settings:
    base = Settings(data_dir=data_dir, durability="process", node_id=data_dir.name,
                    ops_token=OPS_TOKEN)  # fmt: skip
    return base.replace(**changes)


def record(client: TestClient, subject: str) -> dict[str, str]:
    answer = client.post(URL, json=consent_body(BUNDLE, subject), headers={"Origin": ORIGIN})
    assert answer.status_code == 201, answer.text
    body: dict[str, str] = answer.json()
    return body


def history(client: TestClient, recorded: dict[str, str]) -> int:
    """The status of reading the subject's history with the record's receipt (once stored)."""
    deadline = time.monotonic() + 15
    path = f"/v1/sites/demo/subjects/{recorded['subject_id']}/consents"
    while True:
        answer = client.get(path, headers={"Authorization": f"Bearer {recorded['receipt']}"})
        if answer.status_code != 404 or time.monotonic() > deadline:
            status: int = answer.status_code
            return status
        time.sleep(0.05)


def test_a_receipt_from_node_b_verifies_on_node_a(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    a, b = node(tmp_path / "a", store_url=pg_dsn), node(tmp_path / "b", store_url=pg_dsn)
    with TestClient(recording_app(a)) as on_a, TestClient(recording_app(b)) as on_b:
        from_b = record(on_b, "roaming")
        assert history(on_a, from_b) == 200  # B's receipt opens the history on A
        assert record(on_a, "roaming")["subject_id"] == from_b["subject_id"]  # one subject
    # No key in the settings: both nodes read the store's, and keep a copy in their data dir.
    assert (a.data_dir / KEY_FILE).read_bytes() == (b.data_dir / KEY_FILE).read_bytes()


async def test_a_node_with_a_key_of_its_own_adopts_the_shared_one_and_keeps_its_own(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    first = await keyring.resolve(node(tmp_path / "first", store_url=pg_dsn))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / KEY_FILE).write_text(K3 + "\n")  # made before keys were shared
    old = await keyring.resolve(node(tmp_path / "old", store_url=pg_dsn))
    assert old.current == first.current and old.subject == first.current
    assert old.previous == (K3.encode(),)  # its earlier receipts still verify on it
    again = await keyring.resolve(node(tmp_path / "old", store_url=pg_dsn))
    assert again == old


def test_rotation_signs_with_the_new_key_and_still_verifies_with_the_old(tmp_path: Path) -> None:
    data = tmp_path / "n"
    with TestClient(recording_app(node(data, receipt_key=K1))) as before:
        old = record(before, "rotating")
    rotated = node(data, receipt_key=K2, receipt_keys_previous=(K1,), subject_key=K1)
    with TestClient(recording_app(rotated)) as after:
        assert history(after, old) == 200  # a receipt signed before the rotation
        new = record(after, "rotating")
        assert new["subject_id"] == old["subject_id"]  # GATEWAY_SUBJECT_KEY kept the ids
        assert history(after, new) == 200
    assert Receipts(K2.encode()).verify(new["receipt"])
    dropped = node(data, receipt_key=K3, subject_key=K1)  # K1 no longer listed
    with TestClient(recording_app(dropped)) as later:
        assert history(later, old) == 403


def test_a_new_node_waits_for_the_shared_key_while_the_store_is_out_of_reach(
    tmp_path: Path,
    pg_dsn: str,  # noqa: F811
) -> None:
    proxy = TcpProxy(5432)  # not started: the store is unreachable through it
    through = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = node(tmp_path / "new", store_url=through, task_max_backoff=0.3)
    with TestClient(recording_app(settings)) as client:
        refused = client.post(URL, json=consent_body(BUNDLE, "early"), headers={"Origin": ORIGIN})
        assert refused.status_code == 503  # never signed with a key no other node knows
        ready = client.get("/readyz", headers=OPS)
        assert ready.status_code == 503
        assert "keys_unavailable" in ready.json()["recording"]["problems"]
        assert client.get("/v1/sites/demo/config").status_code == 200  # banners still served
        client.portal.call(proxy.start)  # type: ignore[union-attr]
        try:
            deadline = time.monotonic() + 30
            while (
                client.post(
                    URL, json=consent_body(BUNDLE, "later"), headers={"Origin": ORIGIN}
                ).status_code
                != 201
            ):
                assert time.monotonic() < deadline, "recording did not resume"
                time.sleep(0.1)
        finally:
            client.portal.call(proxy.stop)  # type: ignore[union-attr]
    assert (tmp_path / "new" / KEY_FILE).exists()
