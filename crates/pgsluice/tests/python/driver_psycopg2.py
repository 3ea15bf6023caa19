"""psycopg2 in the driver matrix (docs/clients.md), run by tests/drivers.rs through
pgsluice in transaction pooling with SCRAM. psycopg2 has no protocol-level prepared
statements: it prepares with SQL PREPARE/EXECUTE, which pgsluice carries. Also a
committed transaction, an error mid-transaction (25P02 until ROLLBACK), COPY in and
out (copy_expert), and a cancel (connection.cancel, 57014). Prints OK."""
import io
import os
import threading
import time

import psycopg2
from psycopg2 import errors

DSN = (
    f"host={os.environ['PGS_HOST']} port={os.environ['PGS_PORT']} "
    "user=app password=secret dbname=appdb"
)
SLEEP = "select pg_sleep(10)"


def connect(autocommit=True):
    c = psycopg2.connect(DSN)
    c.autocommit = autocommit
    return c


def one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def wait_active(conn, needle):
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        n = one(
            conn,
            "select count(*) from pg_stat_activity where state = 'active' "
            "and strpos(query, %s) > 0 and pid <> pg_backend_pid()",
            (needle,),
        )[0]
        if n:
            return
        time.sleep(0.02)
    raise AssertionError(f"no backend ran {needle!r}")


conn = connect()
one(conn, "select 1")
with conn.cursor() as cur:
    cur.execute("create table matrix(id int primary key, label text)")

    # Prepared statements (SQL level), executed 50 times.
    cur.execute("prepare twice(int, text) as select $1 * 2, $2 || '!'")
    for i in range(50):
        cur.execute("execute twice(%s, %s)", (i, f"v{i}"))
        assert cur.fetchone() == (i * 2, f"v{i}!")
    cur.execute("deallocate twice")

# A transaction, committed (psycopg2 opens it; `with conn` commits).
tx = connect(autocommit=False)
with tx:
    with tx.cursor() as cur:
        for i in (1, 2, 3):
            cur.execute("insert into matrix values (%s, 'tx')", (i,))
assert one(conn, "select count(*) from matrix where label = 'tx'")[0] == 3

# An error mid-transaction.
with tx.cursor() as cur:
    cur.execute("select 1")
    try:
        cur.execute("select 1/0")
        raise AssertionError("1/0 succeeded")
    except errors.DivisionByZero:
        pass
    try:
        cur.execute("select 1")
        raise AssertionError("a statement ran in an aborted transaction")
    except errors.InFailedSqlTransaction as e:
        assert e.pgcode == "25P02", e.pgcode
tx.rollback()
assert one(tx, "select 42")[0] == 42
tx.commit()
tx.close()

# COPY in and out.
with conn.cursor() as cur:
    data = "".join(f"{i}\tcopy {i}\n" for i in range(1000, 3000))
    cur.copy_expert("copy matrix(id, label) from stdin", io.StringIO(data))
    out = io.StringIO()
    cur.copy_expert("copy (select id, label from matrix where id >= 1000 order by id) to stdout", out)
    assert out.getvalue() == data, len(out.getvalue())

# Cancel from another thread.
watcher = connect()


def cancel():
    wait_active(watcher, SLEEP)
    conn.cancel()


t = threading.Thread(target=cancel)
t.start()
start = time.monotonic()
try:
    one(conn, SLEEP)
    raise AssertionError("pg_sleep(10) was not cancelled")
except errors.QueryCanceled as e:
    assert e.pgcode == "57014", e.pgcode
elapsed = time.monotonic() - start
t.join()
assert elapsed < 9.5, elapsed
assert one(conn, "select 7")[0] == 7
watcher.close()
conn.close()
print("OK")
