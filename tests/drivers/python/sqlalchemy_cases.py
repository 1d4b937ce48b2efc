"""The client suite's cases through SQLAlchemy 2 on psycopg2 (its default PostgreSQL driver):
Core connections from a pool (transactional unless AUTOCOMMIT is asked for), streaming with
`stream_results`/`yield_per`, and the ORM's Session."""

from sqlalchemy import URL, Integer, String, create_engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from psycopg2.extras import Json

from common import (
    NODE,
    ROUNDS,
    TRANSACTIONS,
    check_plain,
    check_stream,
    compare,
    echo_sql,
    expect,
    expect_ended,
    expect_own_row,
    expect_sqlstate,
    main,
    one_node,
    plain_sql,
    sample,
    stream_sql,
    until_replica,
)


def engine_for(settings):
    url = URL.create(
        "postgresql+psycopg2",
        username=settings.user,
        password=settings.password,
        host=settings.host,
        port=settings.port,
        database=settings.dbname,
    )
    return create_engine(url, pool_size=2, max_overflow=0, connect_args={"connect_timeout": 20})


def models(settings):
    """ORM classes mapped onto this run's fixture tables."""

    class Base(DeclarativeBase):
        pass

    class Item(Base):
        __tablename__ = settings.table("items")
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        note: Mapped[str] = mapped_column(String)
        qty: Mapped[int] = mapped_column(Integer, default=0)

    class Locked(Base):
        __tablename__ = settings.table("locked")
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        v: Mapped[int] = mapped_column(Integer)

    return Item, Locked


def node_of(conn):
    return conn.execute(text(f"SELECT {NODE}")).scalar_one()


def note_rows(conn, items, note):
    """(node, count) of the rows of `items` with `note`."""
    row = conn.execute(
        text(f"SELECT {NODE}, count(*) FROM {items} WHERE note = :note GROUP BY 1"),
        {"note": note},
    ).first()
    return tuple(row) if row else (None, 0)


def expect_division_by_zero(conn):
    try:
        conn.execute(text("SELECT 1/0"))
        raise AssertionError("1/0 did not fail")
    except DBAPIError as e:
        expect_sqlstate(e, "22012")


def run(settings, report):
    items = settings.table("items")
    engine = engine_for(settings)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # The pool hands the same few connections to every case: the reads that must run on the
    # replica come before any of them has written (read-your-writes would keep its reads on
    # the primary until the replica has the write).
    def fetch_one(case):
        with autocommit.connect() as conn:
            return tuple(conn.execute(text(plain_sql(settings, case))).one())

    with report.case("autocommit_read") as found:
        found.node = check_plain("autocommit_read", fetch_one("autocommit_read"))

    with report.case("parameters") as found, autocommit.connect() as conn:
        # `:name::type` would not parse as a bind parameter; CAST does.
        statement = text(echo_sql(lambda _, name, sqltype: f"CAST(:{name} AS {sqltype})"))
        nodes = []
        for round_ in range(ROUNDS):
            sent = sample(round_)
            row = conn.execute(statement, dict(sent, jsonb=Json(sent["jsonb"]))).one()
            nodes.append(row[0])
            compare(sent, list(row)[1:])
        found.node = one_node(nodes)

    with report.case("error") as found, autocommit.connect() as conn:
        expect_division_by_zero(conn)
        found.node = node_of(conn)

    with autocommit.connect() as writer:
        with report.case("write_read_back") as found:
            id_ = writer.execute(
                text(f"INSERT INTO {items} (note) VALUES ('written') RETURNING id")
            ).scalar_one()
            row = writer.execute(
                text(f"SELECT {NODE}, note FROM {items} WHERE id = :id"), {"id": id_}
            ).first()
            expect(row is not None and row[1] == "written", f"read back {row}")
            found.node = row[0]

        with report.case("reads_return_to_replica") as found:
            until_replica(lambda: node_of(writer), found)

    for case, commit in TRANSACTIONS:
        with report.case(case) as found, engine.connect() as conn:
            conn.execute(text(f"INSERT INTO {items} (note) VALUES (:note)"), {"note": case})
            found.node, count = note_rows(conn, items, case)
            expect_own_row(count)
            conn.commit() if commit else conn.rollback()
            expect_ended(commit, note_rows(conn, items, case)[1])
            conn.rollback()

    with report.case("error_in_transaction") as found, engine.connect() as conn:
        conn.execute(text(f"INSERT INTO {items} (note) VALUES ('before the error')"))
        expect_division_by_zero(conn)
        conn.rollback()
        conn.execute(text(f"INSERT INTO {items} (note) VALUES ('after the error')"))
        found.node, count = note_rows(conn, items, "after the error")
        expect_own_row(count)
        expect(note_rows(conn, items, "before the error")[1] == 0, "rolled back row seen")
        conn.commit()

    with report.case("stream") as found, engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True, yield_per=1000)
        result = streamed.execute(text(stream_sql(settings)))
        found.node = check_stream([tuple(row) for row in result])
        conn.rollback()

    for case in ("nextval", "for_update"):
        with report.case(case) as found:
            found.node = check_plain(case, fetch_one(case))

    orm_cases(settings, report, engine)
    engine.dispose()


def orm_cases(settings, report, engine):
    """The ORM's Session on the engine's pool: writes, reads, a locking read, and a read-only
    session (psycopg2 opens its transactions with BEGIN READ ONLY), which may run on the
    replica."""
    Item, Locked = models(settings)
    node = func.current_setting("cluster_name")

    with report.case("orm_session") as found:
        with Session(engine) as session, session.begin():
            session.add_all([Item(note="orm", qty=n) for n in range(3)])
        with Session(engine) as session:
            rows = session.execute(
                select(node, Item.qty).where(Item.note == "orm").order_by(Item.qty)
            ).all()
            found.node = one_node([r[0] for r in rows])
            expect([r[1] for r in rows] == [0, 1, 2], f"read back {rows}")
        expect(engine.pool.checkedout() == 0, "the session kept a pooled connection")
        found.detail = engine.pool.status()

    with report.case("orm_for_update") as found, Session(engine) as session, session.begin():
        found.node, locked = session.execute(
            select(node, Locked).where(Locked.id == 2).with_for_update()
        ).one()
        expect(locked.v == 20, f"locked row has v = {locked.v}")

    readonly = engine.execution_options(postgresql_readonly=True)
    with report.case("orm_readonly_session") as found:

        def read_only_count():
            with Session(readonly) as session:
                where, count = session.execute(
                    select(node, func.count()).select_from(Item).where(Item.note == "orm")
                ).one()
                expect(count == 3, f"counted {count} rows")
                return where

        until_replica(read_only_count, found)


if __name__ == "__main__":
    main("sqlalchemy", run)
