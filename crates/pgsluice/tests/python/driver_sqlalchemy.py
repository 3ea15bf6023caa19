"""SQLAlchemy (Core and ORM over psycopg 3) in the driver matrix (docs/clients.md),
run by tests/drivers.rs through pgsluice in transaction pooling with SCRAM: named
prepared statements (psycopg's prepare_threshold=0 through connect_args), committed
transactions (engine.begin and an ORM Session), an error mid-transaction (25P02 until
rollback). SQLAlchemy has no COPY or cancel API of its own. Prints OK."""
import os

from sqlalchemy import Integer, String, create_engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

URL = f"postgresql+psycopg://app:secret@{os.environ['PGS_HOST']}:{os.environ['PGS_PORT']}/appdb"


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "matrix"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String)


engine = create_engine(URL, pool_size=4, connect_args={"prepare_threshold": 0})
Base.metadata.create_all(engine)

# Prepared statements: bound parameters through pooled connections.
with engine.connect() as conn:
    for i in range(50):
        v = conn.execute(text("select cast(:a as int) * 2, cast(:b as text) || '!'"), {"a": i, "b": f"v{i}"}).one()
        assert tuple(v) == (i * 2, f"v{i}!"), v
    conn.commit()

# A transaction, committed (Core), then one through the ORM.
with engine.begin() as conn:
    for i in (1, 2):
        conn.execute(text("insert into matrix values (:id, 'tx')"), {"id": i})
with Session(engine) as session:
    session.add(Row(id=3, label="tx"))
    session.commit()
with engine.connect() as conn:
    assert conn.execute(text("select count(*) from matrix where label = 'tx'")).scalar() == 3
with Session(engine) as session:
    assert [r.id for r in session.scalars(select(Row).order_by(Row.id))] == [1, 2, 3]

# An error mid-transaction.
with engine.connect() as conn:
    conn.execute(text("select 1"))
    try:
        conn.execute(text("select 1/0"))
        raise AssertionError("1/0 succeeded")
    except DBAPIError as e:
        assert e.orig.sqlstate == "22012", e.orig.sqlstate
    try:
        conn.execute(text("select 1"))
        raise AssertionError("a statement ran in an aborted transaction")
    except DBAPIError as e:
        assert e.orig.sqlstate == "25P02", e.orig.sqlstate
    conn.rollback()
    assert conn.execute(text("select 42")).scalar() == 42
    conn.commit()

engine.dispose()
print("OK")
