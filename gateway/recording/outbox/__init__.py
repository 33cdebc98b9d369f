"""The durable local outbox: the group-commit owner and the modules that serve it.

| module | owns |
|---|---|
| `group_commit.py` | `Outbox`: the single-owner group commit; append, fsync, maintenance |
| `delivery.py` | the forwarder's side of `Outbox`: claim, ack, dead-letter, replay, depth |
| `items.py` | the values: a waiting append, its answer, a claimed record |
| `database.py` | the SQLite file: schema, pragmas, opening, quarantine of a damaged file |
| `checkpoint.py` | keeping the WAL bounded and the file small after delivery |
| `idempotency.py` | idempotency keys, scoped to the subject and the request's content |
| `dead_letters.py` | records a sink refused for good, with the reason |
| `commands.py` | `consent-gateway outbox status|replay` |
| `fsyncer.py` | the fsync helper process (`power` durability) |
"""
