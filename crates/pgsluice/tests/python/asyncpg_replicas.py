"""asyncpg through pgsluice with read/write splitting: prepared reads (asyncpg names
its statements and re-binds them) run on the standby, writes and read-then-write
transactions on the primary, with no errors."""
import asyncio
import os

import asyncpg

HOST, PORT = os.environ["PGS_HOST"], int(os.environ["PGS_PORT"])


async def main():
    conn = await asyncpg.connect(
        host=HOST, port=PORT, user=os.environ["PGS_USER"], password=os.environ["PGS_PASSWORD"],
        database=os.environ["PGS_DB"],
    )
    try:
        on_standby = 0
        for _ in range(100):
            # The same text each time: a named statement from asyncpg's cache.
            if await conn.fetchval("select pg_is_in_recovery()"):
                on_standby += 1
        assert on_standby >= 90, f"{on_standby} of 100 prepared reads on the standby"
        for i in range(20):
            standby = await conn.fetchval(
                "insert into t values ($1) returning pg_is_in_recovery()", i
            )
            assert standby is False, "a write ran on the standby"
        async with conn.transaction():
            assert await conn.fetchval("select pg_is_in_recovery()") is False
            await conn.execute("insert into t values (100)")
        async with conn.transaction(readonly=True):
            assert await conn.fetchval("select pg_is_in_recovery()") is True
    finally:
        await conn.close()
    print("OK")


asyncio.run(main())
