"""asyncpg through pgsluice (transaction mode) with its default statement cache on."""
import asyncio
import os

import asyncpg

HOST, PORT = os.environ["PGS_HOST"], int(os.environ["PGS_PORT"])


async def worker(n, errors):
    conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="app", database="app")
    try:
        for i in range(60):
            v = await conn.fetchval("select $1::int8 * 3", i)
            assert v == i * 3, (n, i, v)
            s = await conn.fetchval("select $1::text || $2::text", "w", str(n))
            assert s == f"w{n}", s
            async with conn.transaction():
                await conn.execute("insert into t(worker, v) values($1, $2)", n, i)
                cnt = await conn.fetchval("select count(*) from t where worker = $1", n)
                assert cnt == i + 1, (n, i, cnt)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))
    finally:
        await conn.close()


async def main():
    conn = await asyncpg.connect(host=HOST, port=PORT, user="app", password="app", database="app")
    await conn.execute("create table if not exists t(worker int, v int)")
    await conn.close()
    errors = []
    await asyncio.gather(*(worker(n, errors) for n in range(16)))
    if errors:
        raise SystemExit("errors: " + "; ".join(errors[:5]))
    print("OK")


asyncio.run(main())
