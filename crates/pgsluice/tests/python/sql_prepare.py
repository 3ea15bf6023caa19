"""SQL-level PREPARE / EXECUTE / DEALLOCATE through pgsluice (transaction mode), sent as
simple queries by psycopg (execute() without parameters) and asyncpg (execute() without
arguments). Clients prepare the same name with different queries on a small pool."""
import asyncio
import os

HOST, PORT = os.environ["PGS_HOST"], int(os.environ["PGS_PORT"])
USER = os.environ.get("PGS_USER", "app")
PASSWORD = os.environ.get("PGS_PASSWORD", "secret")
DB = os.environ.get("PGS_DB", "appdb")


def psycopg_part():
    import psycopg

    conns = []
    for n in range(4):
        c = psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB, autocommit=True)
        # Default prepare_threshold: from its 5th run psycopg prepares "execute p(i)"
        # as a protocol-level statement of its own (extended protocol).
        c.execute(f"prepare p(int) as select $1 + {n * 100}")
        conns.append(c)
    for i in range(10):
        for n, c in enumerate(conns):
            (v,) = c.execute(f"execute p({i % 2})").fetchone()
            assert v == i % 2 + n * 100, (n, i, v)
    try:
        conns[0].execute("prepare p as select 1")
        raise AssertionError("duplicate PREPARE succeeded")
    except psycopg.errors.DuplicatePreparedStatement:
        pass
    conns[1].execute("deallocate p")
    try:
        conns[1].execute("execute p(1)")
        raise AssertionError("EXECUTE after DEALLOCATE succeeded")
    except psycopg.errors.InvalidSqlStatementName as e:
        assert 'prepared statement "p" does not exist' in str(e), str(e)
    (v,) = conns[2].execute("execute p(1)").fetchone()
    assert v == 201, v
    for c in conns:
        c.close()


async def asyncpg_part():
    import asyncpg

    async def worker(n):
        conn = await asyncpg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB)
        try:
            await conn.execute(f"prepare q as select {n}; prepare w(int) as select $1 * {n}")
            for i in range(20):
                # execute() without arguments is a simple query; its status is the last tag.
                status = await conn.execute(f"execute q; execute w({i})")
                assert status == "SELECT 1", status
                # fetchval: the extended protocol, a statement asyncpg names and describes.
                v = await conn.fetchval(f"execute w({i % 3})")
                assert v == (i % 3) * n, (n, i, v)
            await conn.execute("deallocate all")
            try:
                await conn.execute("execute q")
                raise AssertionError("EXECUTE after DEALLOCATE ALL succeeded")
            except asyncpg.exceptions.InvalidSQLStatementNameError:
                pass
        finally:
            await conn.close()

    await asyncio.gather(*(worker(n) for n in range(6)))


psycopg_part()
asyncio.run(asyncpg_part())
print("OK")
