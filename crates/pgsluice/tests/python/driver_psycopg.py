"""psycopg 3 in the driver matrix (docs/clients.md), run by tests/drivers.rs through
pgsluice in transaction pooling with SCRAM: named prepared statements
(prepare_threshold=0), a committed transaction, an error mid-transaction (25P02 until
ROLLBACK), COPY in and out, and a cancel (57014). Prints OK."""
import os
import threading
import time

import psycopg
from psycopg import errors

DSN = (
    f"host={os.environ['PGS_HOST']} port={os.environ['PGS_PORT']} "
    "user=app password=secret dbname=appdb"
)
SLEEP = "select pg_sleep(10)"


def wait_active(conn, needle):
    """Waits until another backend runs a query containing `needle`."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        n = conn.execute(
            "select count(*) from pg_stat_activity where state = 'active' "
            "and strpos(query, %s) > 0 and pid <> pg_backend_pid()",
            (needle,),
        ).fetchone()[0]
        if n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no backend ran {needle!r}")


with psycopg.connect(DSN, autocommit=True) as conn:
    conn.execute("create table matrix(id int primary key, label text)")

    # Prepared statements: every statement server-side prepared under psycopg's
    # names, first execution included; explicit prepare=True as well.
    conn.prepare_threshold = 0
    for i in range(50):
        row = conn.execute("select %s::int * 2, %s::text || '!'", (i, f"v{i}")).fetchone()
        assert row == (i * 2, f"v{i}!"), row
        v = conn.execute("select %s::int + 1", (i,), prepare=True).fetchone()[0]
        assert v == i + 1, v

    # A transaction, committed: another connection sees its rows.
    with conn.transaction():
        for i in (1, 2, 3):
            conn.execute("insert into matrix values (%s, 'tx')", (i,))
    with psycopg.connect(DSN, autocommit=True) as other:
        n = other.execute("select count(*) from matrix where label = 'tx'").fetchone()[0]
        assert n == 3, n

    # COPY in and out.
    with conn.cursor() as cur:
        with cur.copy("copy matrix(id, label) from stdin") as cp:
            for i in range(1000, 3000):
                cp.write_row((i, f"copy {i}"))
        with cur.copy("copy (select id, label from matrix where id >= 1000 order by id) to stdout") as cp:
            rows = list(cp.rows())
        assert len(rows) == 2000, len(rows)
        assert rows[0] == ("1000", "copy 1000") and rows[-1] == ("2999", "copy 2999"), rows[-1]

# An error mid-transaction (psycopg opens the transaction by itself).
with psycopg.connect(DSN) as conn:
    conn.execute("select 1")
    try:
        conn.execute("select 1/0")
        raise AssertionError("1/0 succeeded")
    except errors.DivisionByZero:
        pass
    try:
        conn.execute("select 1")
        raise AssertionError("a statement ran in an aborted transaction")
    except errors.InFailedSqlTransaction as e:
        assert e.sqlstate == "25P02", e.sqlstate
    conn.rollback()
    assert conn.execute("select 42").fetchone()[0] == 42
    conn.commit()

# Cancel: the driver's cancel from another thread while pg_sleep(10) runs.
with psycopg.connect(DSN, autocommit=True) as conn, psycopg.connect(DSN, autocommit=True) as watcher:

    def cancel():
        wait_active(watcher, SLEEP)
        conn.cancel_safe() if hasattr(conn, "cancel_safe") else conn.cancel()

    t = threading.Thread(target=cancel)
    t.start()
    start = time.monotonic()
    try:
        conn.execute(SLEEP)
        raise AssertionError("pg_sleep(10) was not cancelled")
    except errors.QueryCanceled as e:
        assert e.sqlstate == "57014", e.sqlstate
    elapsed = time.monotonic() - start
    t.join()
    assert elapsed < 9.5, elapsed
    assert conn.execute("select 7").fetchone()[0] == 7

print("OK")
