"""LISTEN/NOTIFY with psycopg 3 through pgsluice in transaction mode: conn.notifies()."""
import os

import psycopg

dsn = "host={} port={} user=app password=secret dbname=appdb".format(
    os.environ["PGS_HOST"], os.environ["PGS_PORT"]
)

with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(
    dsn, autocommit=True
) as notifier:
    listener.execute("LISTEN psy")
    for i in range(5):
        notifier.execute("select pg_notify('psy', %s)", (str(i),))
    got = [
        (n.channel, n.payload)
        for n in listener.notifies(timeout=15, stop_after=5)
    ]
    assert got == [("psy", str(i)) for i in range(5)], got
    # A transaction on the listener in between, then more.
    with listener.transaction():
        listener.execute("select 1")
    notifier.execute("NOTIFY psy, 'later'")
    got = [(n.channel, n.payload) for n in listener.notifies(timeout=15, stop_after=1)]
    assert got == [("psy", "later")], got
    listener.execute("UNLISTEN psy")
print("OK")
