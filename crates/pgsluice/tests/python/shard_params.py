"""psycopg 3 against a sharded database (tests/sharding.rs): inserts rows
FIRST..LAST of table orders with bound parameters, in text format (the default),
in binary format, and through a named prepared statement (prepare_threshold=0);
then reads one back by its key with a parameter. Prints OK."""
import os

import psycopg

DSN = (
    f"host={os.environ['PGS_HOST']} port={os.environ['PGS_PORT']} "
    "user=app password=secret dbname=appdb"
)
FIRST = int(os.environ.get("FIRST", "301"))
LAST = int(os.environ.get("LAST", "450"))
INSERT = "insert into orders (customer_id, note) values (%s, %s)"

with psycopg.connect(DSN, autocommit=True) as conn:
    third = (LAST - FIRST + 1) // 3
    for i in range(FIRST, FIRST + third):
        conn.execute(INSERT, (i, f"param {i}"))
    with conn.cursor(binary=True) as cur:
        for i in range(FIRST + third, FIRST + 2 * third):
            cur.execute(INSERT, (i, f"param {i}"), binary=True)

with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
    for i in range(FIRST + 2 * third, LAST + 1):
        conn.execute(INSERT, (i, f"param {i}"))
    row = conn.execute(
        "select note from orders where customer_id = %s", (FIRST,)
    ).fetchone()
    assert row == (f"param {FIRST}",), row
    # A transaction on one shard commits.
    with conn.transaction():
        conn.execute("update orders set note = %s where customer_id = %s", ("tx", FIRST))
    row = conn.execute(
        "select note from orders where customer_id = %s", (FIRST,)
    ).fetchone()
    assert row == ("tx",), row
    conn.execute("update orders set note = %s where customer_id = %s", (f"param {FIRST}", FIRST))

print("OK")
