"""API keys: the format, the CLI that makes them, and the authenticator's cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.cli.main import main
from gateway.core.errors import BadRequest, Unavailable
from gateway.preferences import apikeys
from gateway.preferences.auth import ApiKeyAuthenticator
from gateway.sinks.directory import StoredKey
from gateway.sinks.directory_sqlite import SqliteDirectory
from tests.helpers import ROOT

T0 = "2026-12-06T10:00:00.000000Z"


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    made = [apikeys.generate() for _ in range(50)]
    assert len({k.key for k in made}) == 50 and len({k.key_id for k in made}) == 50
    key = made[0]
    parsed = apikeys.parse(key.key)
    assert parsed is not None and parsed[0] == key.key_id
    assert key.secret_hash == apikeys.secret_hash(parsed[1]) and parsed[1] not in key.secret_hash
    assert apikeys.matches(parsed[1], key.secret_hash)
    assert not apikeys.matches(parsed[1][:-1] + "x", key.secret_hash)
    for bad in ("", "cgk_", key.key + "x", key.key.upper(), "Bearer " + key.key, key.key[:-1]):
        assert apikeys.parse(bad) is None


def test_scopes() -> None:
    assert apikeys.check_scopes([]) == apikeys.SCOPES
    assert apikeys.check_scopes(["contactability", "subjects:read", "contactability"]) == (
        "subjects:read",
        "contactability",
    )
    with pytest.raises(ValueError, match="unknown scope"):
        apikeys.check_scopes(["admin"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingDirectory(SqliteDirectory):
    """The real SQLite directory, counting the key lookups that reach it."""

    lookups = 0

    async def get_key(self, key_id: str) -> StoredKey | None:
        self.lookups += 1
        return await super().get_key(key_id)


@pytest.fixture
async def directory(tmp_path: Path) -> AsyncIterator[CountingDirectory]:
    d = CountingDirectory(tmp_path / "store.sqlite3")
    await d.open()
    yield d
    await d.close()


async def add(directory: SqliteDirectory, site: str = "demo", *scopes: str) -> str:
    new = apikeys.generate()
    stored = StoredKey(new.key_id, site, "t", scopes or apikeys.SCOPES, new.secret_hash, T0)
    await directory.add_key(stored)
    return new.key


async def test_revocation_takes_effect_within_the_cache_ttl(
    directory: CountingDirectory,
) -> None:
    """Threat: a leaked key keeps working after it is revoked."""
    clock = Clock()
    auth = ApiKeyAuthenticator(directory, ttl=5, clock=clock)
    key = await add(directory)
    header = f"Bearer {key}"
    assert (await auth.authenticate(header, "demo", "contactability")).site == "demo"
    await auth.authenticate(header, "demo", "contactability")
    assert directory.lookups == 1  # the second call was answered from the cache
    await directory.revoke_key(key.split("_")[1], T0)
    clock.now += 5.1
    with pytest.raises(BadRequest) as caught:
        await auth.authenticate(header, "demo", "contactability")
    assert (caught.value.status_code, caught.value.code) == (401, "unauthorized")


async def test_made_up_key_ids_never_fill_the_cache(directory: CountingDirectory) -> None:
    """Threat: an outsider grows the gateway's memory with random keys."""
    auth = ApiKeyAuthenticator(directory, size=4)
    for _ in range(50):
        with pytest.raises(BadRequest):
            await auth.authenticate(f"Bearer {apikeys.generate().key}", "demo", "contactability")
    assert len(auth._cache) == 0
    keys = [await add(directory) for _ in range(10)]
    for key in keys:
        await auth.authenticate(f"Bearer {key}", "demo", "contactability")
    assert len(auth._cache) == 4  # bounded even for genuine keys


async def test_site_and_scope(directory: CountingDirectory) -> None:
    auth = ApiKeyAuthenticator(directory)
    key = await add(directory, "demo", "subjects:read")
    with pytest.raises(BadRequest) as caught:
        await auth.authenticate(f"Bearer {key}", "other", "subjects:read")
    assert (caught.value.status_code, caught.value.code) == (403, "wrong_site")
    with pytest.raises(BadRequest) as caught:
        await auth.authenticate(f"Bearer {key}", "demo", "contactability")
    assert (caught.value.status_code, caught.value.code) == (403, "insufficient_scope")


async def test_a_store_that_is_down_is_503_not_a_wrong_key(tmp_path: Path) -> None:
    directory = SqliteDirectory(tmp_path / "store.sqlite3")  # never opened: every call fails
    auth = ApiKeyAuthenticator(directory)
    with pytest.raises(Unavailable):
        await auth.authenticate(f"Bearer {apikeys.generate().key}", "demo", "contactability")


def test_the_cli_prints_the_key_once_on_the_last_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_BANNERS_DIR", str(ROOT / "banners"))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    assert main(["keys", "create", "demo", "--name", "crm", "--scope", "contactability"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[-1]
    parsed = apikeys.parse(key)
    assert parsed is not None and "scopes: contactability" in out
    assert main(["keys", "list", "demo"]) == 0
    listing = capsys.readouterr().out
    assert parsed[0] in listing and "active" in listing and key not in listing
    assert parsed[1] not in (tmp_path / "data" / "store.sqlite3").read_bytes().decode("latin-1")

    async def stored() -> StoredKey | None:
        d = SqliteDirectory(tmp_path / "data" / "store.sqlite3")
        await d.open()
        try:
            return await d.get_key(parsed[0])
        finally:
            await d.close()

    row = asyncio.run(stored())
    assert row is not None and row.secret_hash == apikeys.secret_hash(parsed[1])
    assert main(["keys", "revoke", parsed[0]]) == 0
    assert main(["keys", "revoke", parsed[0]]) == 0
    assert "already revoked" in capsys.readouterr().out
    assert main(["keys", "list"]) == 0
    assert "revoked" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "create", "nosuchsite"], "missing site.toml"),
        (["keys", "create", "demo", "--scope", "admin"], "unknown scope"),
        (["keys", "create", "demo", "--name", "\x07bell"], "invalid key name"),
        (["keys", "revoke", "zz"], "invalid key id"),
        (["keys", "revoke", "0123456789ab"], "no API key"),
    ],
)
def test_cli_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("GATEWAY_BANNERS_DIR", str(ROOT / "banners"))
    monkeypatch.setenv("GATEWAY_DATA_DIR", str(tmp_path / "data"))
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
