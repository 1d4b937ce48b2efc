"""The client suite's cases through psycopg 3 (extended protocol with server-side binding,
statements prepared on the server after `prepare_threshold` runs, server cursors). It reports
as psycopg3-binary, or psycopg3-python when run with PSYCOPG_IMPL=python."""

import psycopg
from psycopg.types.json import Jsonb

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


def connect(settings, **options):
    return psycopg.connect(**settings.kwargs(), autocommit=True, **options)


def node_of_read(conn):
    return conn.execute(f"SELECT {NODE}").fetchone()[0]


def fetch_one(settings, case):
    """The row of `case`'s statement without parameters, on a new session."""
    with connect(settings) as conn:
        return conn.execute(plain_sql(settings, case)).fetchone()


def note_rows(conn, items, note):
    """(node, count) of the rows of `items` with `note`."""
    row = conn.execute(
        f"SELECT {NODE}, count(*) FROM {items} WHERE note = %s GROUP BY 1", (note,)
    ).fetchone()
    return row if row else (None, 0)


def echo_rounds(conn, prepare=None):
    """The parameterized statement, ROUNDS times, each value checked; the node(s) it ran on."""
    sql = echo_sql(lambda _, name, sqltype: f"%({name})s::{sqltype}")
    nodes = []
    for round_ in range(ROUNDS):
        sent = sample(round_)
        row = conn.execute(sql, dict(sent, jsonb=Jsonb(sent["jsonb"])), prepare=prepare).fetchone()
        nodes.append(row[0])
        compare(sent, row[1:])
    return one_node(nodes)


# Distinct statements, more than a small prepared-statement cache holds.
EVICTION_STATEMENTS = [f"SELECT {NODE}, %s::int + {k}" for k in range(4)]


def run(settings, report):
    items = settings.table("items")

    with report.case("autocommit_read") as found:
        found.node = check_plain("autocommit_read", fetch_one(settings, "autocommit_read"))

    with connect(settings) as writer:
        with report.case("write_read_back") as found:
            (id_,) = writer.execute(
                f"INSERT INTO {items} (note) VALUES ('written') RETURNING id"
            ).fetchone()
            row = writer.execute(
                f"SELECT {NODE}, note FROM {items} WHERE id = %s", (id_,)
            ).fetchone()
            expect(row is not None and row[1] == "written", f"read back {row}")
            found.node = row[0]

        with report.case("reads_return_to_replica") as found:
            until_replica(lambda: node_of_read(writer), found)

    for case, commit in TRANSACTIONS:
        with report.case(case) as found, connect(settings) as conn:
            with conn.transaction() as tx:
                conn.execute(f"INSERT INTO {items} (note) VALUES (%s)", (case,))
                found.node, count = note_rows(conn, items, case)
                expect_own_row(count)
                if not commit:
                    raise psycopg.Rollback(tx)
            expect_ended(commit, note_rows(conn, items, case)[1])

    with report.case("parameters") as found, connect(settings) as conn:
        found.node = echo_rounds(conn)

    with report.case("error") as found, connect(settings) as conn:
        try:
            conn.execute("SELECT 1/0")
            raise AssertionError("1/0 did not fail")
        except psycopg.Error as e:
            expect_sqlstate(e, "22012")
        found.node = node_of_read(conn)

    with report.case("error_in_transaction") as found, connect(settings) as conn:
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {items} (note) VALUES ('before the error')")
                conn.execute("SELECT 1/0")
            raise AssertionError("1/0 did not fail")
        except psycopg.Error as e:
            expect_sqlstate(e, "22012")
        with conn.transaction():
            conn.execute(f"INSERT INTO {items} (note) VALUES ('after the error')")
            found.node, count = note_rows(conn, items, "after the error")
            expect_own_row(count)
        expect(note_rows(conn, items, "before the error")[1] == 0, "rolled back row seen")

    with report.case("stream") as found, connect(settings) as conn:
        with conn.transaction(), conn.cursor("stream_cursor") as cur:
            cur.itersize = 1000
            cur.execute(stream_sql(settings))
            found.node = check_stream(list(cur))

    for case in ("nextval", "for_update"):
        with report.case(case) as found:
            found.node = check_plain(case, fetch_one(settings, case))

    # What Django's QuerySet.iterator() does outside a transaction: DECLARE ... WITH HOLD, then
    # Describe of the cursor's portal in a batch of its own, FETCH, CLOSE.
    # The session reads first, so it has a replica connection when the cursor comes.
    with connect(settings) as holder:
        with report.case("withhold_cursor") as found:
            node_of_read(holder)
            with holder.cursor("held_cursor", withhold=True) as cur:
                cur.itersize = 1000
                cur.execute(stream_sql(settings))
                found.node = check_stream(list(cur))

        with report.case("after_withhold_cursor") as found:
            until_replica(lambda: node_of_read(holder), found)

    # Prepared on the server at once, then run prepared: every run is a read.
    with report.case("prepared") as found, connect(settings) as conn:
        found.node = echo_rounds(conn, prepare=True)
        found.detail = f"prepared statements: {len(conn._prepared._names)}"

    # prepare_threshold=0 prepares everything; a cache of two evicts, which psycopg answers
    # with a DEALLOCATE (or, on libpq 17, a protocol Close) of the evicted statement.
    with report.case("prepared_eviction") as found:
        with connect(settings, prepare_threshold=0) as conn:
            conn.prepared_max = 2
            nodes = []
            for round_ in range(3):
                for k, sql in enumerate(EVICTION_STATEMENTS):
                    node, value = conn.execute(sql, (round_,)).fetchone()
                    expect(value == round_ + k, f"{sql} with {round_} gave {value}")
                    nodes.append(node)
            found.node = one_node(nodes)
            found.detail = f"libpq {psycopg.pq.version()}"

    # After a ROLLBACK psycopg forgets its prepared statements and sends SQL `DEALLOCATE ALL`
    # before the next statement, which it then prepares again under a new name.
    with report.case("prepared_after_rollback") as found:
        with connect(settings, prepare_threshold=0) as conn:
            sql = EVICTION_STATEMENTS[0]
            conn.execute(sql, (1,))
            with conn.transaction() as tx:
                conn.execute(f"INSERT INTO {items} (note) VALUES ('rolled back')")
                raise psycopg.Rollback(tx)
            expect(not conn._prepared._names, "psycopg kept its prepared statements")

            def prepared_read():
                node, value = conn.execute(sql, (2,)).fetchone()
                expect(value == 2, f"{sql} with 2 gave {value}")
                return node

            until_replica(prepared_read, found)


if __name__ == "__main__":
    # psycopg-binary bundles a recent libpq (protocol Close for evicted statements);
    # PSYCOPG_IMPL=python uses the system's (Debian's libpq 15: SQL DEALLOCATE).
    main(f"psycopg3-{psycopg.pq.__impl__}", run)
