"""`consent-gateway outbox status|replay`: run beside a live outbox, on their own connection."""

from __future__ import annotations

from pathlib import Path

from gateway.core.settings import Settings
from gateway.recording.outbox.commands import outbox_replay, outbox_status
from tests.helpers import opened
from tests.pg import make_record


async def test_status_and_replay_commands_beside_a_running_outbox(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, durability="process")
    outbox = await opened(tmp_path, durability="process")
    for i in range(2):
        await outbox.append(make_record(f"s{i}"), "x")
    items = await outbox.claim(2)
    await outbox.dead_letter([(items[0], "webhook", "410 Gone")])
    status = await outbox_status(settings)  # a second connection, as the CLI opens it
    assert (status["depth"], status["dead_letters"]) == (1, 1)
    assert status["dead_letter_sample"][0]["reason"] == "410 Gone"
    assert await outbox_replay(settings) == 1
    assert (await outbox_status(settings))["dead_letters"] == 0
    outbox.rewind()
    assert {i.record_id for i in await outbox.claim(10)} == {i.record_id for i in items}
    await outbox.close()
