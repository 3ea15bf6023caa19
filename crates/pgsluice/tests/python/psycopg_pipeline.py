"""Pipelines with a failing statement in the middle and prepared statements on (issue
13): psycopg 3's pipeline mode with prepare_threshold=0, and libpq's own pipeline mode
(PQsendPrepare / PQsendQueryPrepared / PQpipelineSync, through psycopg.pq). Run against
PostgreSQL directly and through pgsluice; both must give the same, error-free results."""
import os

import psycopg
from psycopg import pq

HOST, PORT = os.environ["PGS_HOST"], os.environ["PGS_PORT"]
DSN = f"host={HOST} port={PORT} user=app password=app dbname=app"


def psycopg_pipeline():
    with psycopg.connect(DSN, autocommit=True, prepare_threshold=0) as conn:
        for k in range(3):
            # The second query fails (missing table), the third is prepared: PostgreSQL
            # skips it, and everything else up to the pipeline's Sync.
            try:
                with conn.pipeline():
                    conn.execute("select %s::int + 1", (k,))
                    conn.execute("select * from no_such_table")
                    conn.execute("select %s::int * 3", (k,))
            except psycopg.errors.UndefinedTable:
                pass
            else:
                raise AssertionError("the pipeline should have failed")
            # Six prepared queries, each with the right value.
            for i in range(6):
                assert conn.execute("select %s::int * 3", (i,)).fetchone()[0] == 3 * i
                assert conn.execute("select %s::int + 1", (i,)).fetchone()[0] == i + 1
        # And inside a pipeline.
        with conn.pipeline():
            curs = [conn.execute("select %s::int * 3", (i,)) for i in range(6)]
        assert [c.fetchone()[0] for c in curs] == [3 * i for i in range(6)]


def results(conn):
    """What the commands sent up to the next PQpipelineSync gave, in order."""
    out = []
    while True:
        r = conn.get_result()
        if r is None:
            continue
        st = r.status
        if st == pq.ExecStatus.PIPELINE_SYNC:
            return out
        if st == pq.ExecStatus.FATAL_ERROR:
            out.append("E" + r.error_field(pq.DiagnosticField.SQLSTATE).decode())
        elif st == pq.ExecStatus.PIPELINE_ABORTED:
            out.append("skipped")
        elif st == pq.ExecStatus.TUPLES_OK:
            out.append(r.get_value(0, 0).decode())
        elif st == pq.ExecStatus.COMMAND_OK:
            out.append("ok")
        else:
            raise AssertionError(f"unexpected result {st}")


def libpq_pipeline():
    conn = pq.PGconn.connect(DSN.encode())
    assert conn.status == pq.ConnStatus.OK, conn.error_message
    conn.enter_pipeline_mode()
    for k in range(3):
        a, bad, b = (f"a{k}".encode(), f"bad{k}".encode(), f"b{k}".encode())
        conn.send_prepare(a, b"select $1::int + 10")
        conn.send_prepare(bad, b"select * from no_such_table")
        conn.send_prepare(b, b"select $1::int + 20")
        conn.send_query_prepared(b, [b"1"])
        conn.pipeline_sync()
        conn.flush()
        assert results(conn) == ["ok", "E42P01", "skipped", "skipped"], k
        # b was never created: PostgreSQL skipped its Parse. Preparing it again works;
        # then a pipeline of two Syncs uses it.
        conn.send_prepare(b, b"select $1::int + 20")
        conn.send_query_prepared(a, [b"5"])
        conn.pipeline_sync()
        conn.send_query_prepared(b, [b"5"])
        conn.send_query_prepared(a, [b"6"])
        conn.pipeline_sync()
        conn.flush()
        assert results(conn) == ["ok", "15"], k
        assert results(conn) == ["25", "16"], k
    conn.exit_pipeline_mode()
    conn.finish()


psycopg_pipeline()
libpq_pipeline()
print("OK")
