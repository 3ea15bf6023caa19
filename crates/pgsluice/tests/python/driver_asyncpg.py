"""asyncpg in the driver matrix (docs/clients.md), run by tests/drivers.rs through
pgsluice in transaction pooling with SCRAM: named prepared statements (conn.prepare and
the default statement cache), a committed transaction, an error mid-transaction (25P02
until ROLLBACK), COPY in and out, and a cancel (cancelling the task sends a
CancelRequest). Prints OK."""
import asyncio
import io
import os
import time

import asyncpg

HOST, PORT = os.environ["PGS_HOST"], int(os.environ["PGS_PORT"])
SLEEP = "select pg_sleep(10)"


def connect():
    return asyncpg.connect(host=HOST, port=PORT, user="app", password="secret", database="appdb")


async def wait_active(conn, needle):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        n = await conn.fetchval(
            "select count(*) from pg_stat_activity where state = 'active' "
            "and strpos(query, $1) > 0 and pid <> pg_backend_pid()",
            needle,
        )
        if n:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no backend ran {needle!r}")


async def main():
    conn = await connect()
    other = await connect()
    await conn.execute("create table matrix(id int primary key, label text)")

    # Prepared statements: an explicit one and the statement cache's.
    stmt = await conn.prepare("select $1::int * 2, $2::text || '!'")
    for i in range(50):
        row = await stmt.fetchrow(i, f"v{i}")
        assert tuple(row) == (i * 2, f"v{i}!"), row
        assert await conn.fetchval("select $1::int + 1", i) == i + 1

    # A transaction, committed.
    async with conn.transaction():
        for i in (1, 2, 3):
            await conn.execute("insert into matrix values ($1, 'tx')", i)
    assert await other.fetchval("select count(*) from matrix where label = 'tx'") == 3

    # An error mid-transaction.
    tr = conn.transaction()
    await tr.start()
    try:
        await conn.fetchval("select 1/0")
        raise AssertionError("1/0 succeeded")
    except asyncpg.DivisionByZeroError:
        pass
    try:
        await conn.fetchval("select 1")
        raise AssertionError("a statement ran in an aborted transaction")
    except asyncpg.InFailedSQLTransactionError as e:
        assert e.sqlstate == "25P02", e.sqlstate
    await tr.rollback()
    assert await conn.fetchval("select 42") == 42

    # COPY in and out.
    res = await conn.copy_records_to_table(
        "matrix", records=[(i, f"copy {i}") for i in range(1000, 3000)], columns=["id", "label"]
    )
    assert res == "COPY 2000", res
    out = io.BytesIO()
    await conn.copy_from_query("select id, label from matrix where id >= 1000 order by id", output=out)
    lines = out.getvalue().decode().splitlines()
    assert len(lines) == 2000 and lines[0] == "1000\tcopy 1000", lines[:1]

    # Cancel: cancelling the task makes asyncpg send a CancelRequest; its next query
    # waits for the cancelled one to end, so it returns fast only if the cancel
    # reached PostgreSQL.
    start = time.monotonic()
    task = asyncio.create_task(conn.fetchval(SLEEP))
    await wait_active(other, SLEEP)
    task.cancel()
    try:
        await task
        raise AssertionError("pg_sleep(10) was not cancelled")
    except asyncio.CancelledError:
        pass
    assert await conn.fetchval("select 7") == 7
    elapsed = time.monotonic() - start
    assert elapsed < 9.5, elapsed

    await other.close()
    await conn.close()
    print("OK")


asyncio.run(main())
