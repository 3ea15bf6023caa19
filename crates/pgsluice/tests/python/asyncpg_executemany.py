"""asyncpg executemany with a failing row (issue 13), two clients sharing one server
connection: the batch fails as a whole, and prepared statements keep working."""
import asyncio
import os

import asyncpg

HOST, PORT = os.environ["PGS_HOST"], int(os.environ["PGS_PORT"])


async def worker(n):
    conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="app", database="app")
    table = f"em{n}"
    try:
        await conn.execute(f"drop table if exists {table}; create table {table}(id int primary key, v int)")
        for k in range(3):
            rows = [(1, 1), (2, 2), (2, 3), (4, 4)]  # the third row repeats a key
            try:
                await conn.executemany(f"insert into {table}(id, v) values($1, $2)", rows)
            except asyncpg.UniqueViolationError:
                pass
            else:
                raise AssertionError("executemany should have failed")
            assert await conn.fetchval(f"select count(*) from {table}") == 0, "executemany is atomic"
            for i in range(6):
                assert await conn.fetchval("select $1::int * 3", i) == 3 * i
            stmt = await conn.prepare("select $1::int + $2::int")
            assert await stmt.fetchval(k, n) == k + n
        await conn.executemany(f"insert into {table}(id, v) values($1, $2)", [(i, i) for i in range(10)])
        assert await conn.fetchval(f"select sum(v) from {table}") == 45
        await conn.execute(f"drop table {table}")
    finally:
        await conn.close()


async def main():
    await asyncio.gather(*(worker(n) for n in range(2)))
    print("OK")


asyncio.run(main())
