"""psycopg 3 through pgsluice (transaction mode), preparing every statement."""
import os
import threading

import psycopg

HOST, PORT = os.environ["PGS_HOST"], os.environ["PGS_PORT"]
DSN = f"host={HOST} port={PORT} user=app password=app dbname=app"
errors = []


def worker(n):
    try:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.prepare_threshold = 0  # prepare every statement, first use included
            for i in range(60):
                v = conn.execute("select %s::int8 * 3", (i,)).fetchone()[0]
                assert v == i * 3, (n, i, v)
                with conn.transaction():
                    conn.execute("insert into t2(worker, v) values (%s, %s)", (n, i))
                    cnt = conn.execute("select count(*) from t2 where worker = %s", (n,)).fetchone()[0]
                    assert cnt == i + 1, (n, i, cnt)
    except Exception as e:  # noqa: BLE001
        errors.append(repr(e))


with psycopg.connect(DSN, autocommit=True) as c:
    c.execute("create table if not exists t2(worker int, v int)")
threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if errors:
    raise SystemExit("errors: " + "; ".join(errors[:5]))
print("OK")
