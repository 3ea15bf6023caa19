"""LISTEN/NOTIFY with asyncpg through pgsluice in transaction mode: add_listener."""
import asyncio
import os


import asyncpg


async def main():
    kw = dict(
        host=os.environ["PGS_HOST"],
        port=int(os.environ["PGS_PORT"]),
        user="app",
        password="secret",
        database="appdb",
    )
    listener = await asyncpg.connect(**kw)
    notifier = await asyncpg.connect(**kw)
    queue = asyncio.Queue()

    def on_note(conn, pid, channel, payload):
        queue.put_nowait((channel, payload))

    await listener.add_listener("apg", on_note)
    for i in range(5):
        await notifier.execute(f"NOTIFY apg, '{i}'")
    got = [await asyncio.wait_for(queue.get(), 15) for _ in range(5)]
    assert got == [("apg", str(i)) for i in range(5)], got
    # Work on the listener in between, then more.
    assert await listener.fetchval("select 41 + 1") == 42
    await notifier.execute("select pg_notify('apg', 'later')")
    assert await asyncio.wait_for(queue.get(), 15) == ("apg", "later")
    await listener.remove_listener("apg", on_note)
    await listener.close()
    await notifier.close()
    print("OK")


asyncio.run(main())
