"""Dead letters: kept with the reason, listed, replayed."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import opened
from tests.pg import make_record


async def test_dead_letters_keep_the_reason_and_replay(tmp_path: Path) -> None:
    outbox = await opened(tmp_path)
    for i in range(3):
        await outbox.append(make_record(f"s{i}"), "x")
    items = await outbox.claim(3)
    await outbox.dead_letter([(items[1], "postgres", "value too long")])
    assert outbox.depth == 2
    dead = await outbox.dead_letters()
    assert [(d.record_id, d.sink, d.reason) for d in dead] == [
        (items[1].record_id, "postgres", "value too long")
    ]
    assert await outbox.replay() == 1
    assert await outbox.dead_letter_count() == 0
    again = await outbox.claim(10)
    assert [i.record_id for i in again] == [items[1].record_id]
    assert again[0].body == items[1].body
    await outbox.close()
