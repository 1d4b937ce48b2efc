"""The client suite's cases through psycopg2 (simple protocol, values interpolated on the
client; named cursors are SQL DECLARE/FETCH)."""

from contextlib import closing

import psycopg2
import psycopg2.extras

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


def connect(settings, autocommit=True):
    """A new connection; not used as a context manager, which (since psycopg2 2.9) would wrap
    the block in a transaction even in autocommit mode."""
    conn = psycopg2.connect(**settings.kwargs())
    conn.autocommit = autocommit
    return conn


def node_of_read(conn):
    with conn.cursor() as cur:
        cur.execute(f"SELECT {NODE}")
        return cur.fetchone()[0]


def fetch_one(settings, case):
    """The row of `case`'s statement without parameters, on a new session."""
    with closing(connect(settings)) as conn, conn.cursor() as cur:
        cur.execute(plain_sql(settings, case))
        return cur.fetchone()


def note_rows(cur, items, note):
    """(node, count) of the rows of `items` with `note`."""
    cur.execute(f"SELECT {NODE}, count(*) FROM {items} WHERE note = %s GROUP BY 1", (note,))
    row = cur.fetchone()
    return row if row else (None, 0)


def run(settings, report):
    items = settings.table("items")

    with report.case("autocommit_read") as found:
        found.node = check_plain("autocommit_read", fetch_one(settings, "autocommit_read"))

    writer = connect(settings)
    with report.case("write_read_back") as found, writer.cursor() as cur:
        cur.execute(f"INSERT INTO {items} (note) VALUES ('written') RETURNING id")
        (id_,) = cur.fetchone()
        cur.execute(f"SELECT {NODE}, note FROM {items} WHERE id = %s", (id_,))
        row = cur.fetchone()
        expect(row is not None and row[1] == "written", f"read back {row}")
        found.node = row[0]

    with report.case("reads_return_to_replica") as found:
        until_replica(lambda: node_of_read(writer), found)
    writer.close()

    for case, commit in TRANSACTIONS:
        with report.case(case) as found, closing(connect(settings, False)) as conn:
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {items} (note) VALUES (%s)", (case,))
                found.node, count = note_rows(cur, items, case)
                expect_own_row(count)
            conn.commit() if commit else conn.rollback()
            with conn.cursor() as cur:
                expect_ended(commit, note_rows(cur, items, case)[1])
            conn.rollback()

    with report.case("parameters") as found, closing(connect(settings)) as conn:
        sql = echo_sql(lambda _, name, sqltype: f"%({name})s::{sqltype}")
        nodes = []
        with conn.cursor() as cur:
            for round_ in range(ROUNDS):
                sent = sample(round_)
                params = dict(sent, jsonb=psycopg2.extras.Json(sent["jsonb"]))
                cur.execute(sql, params)
                row = cur.fetchone()
                nodes.append(row[0])
                compare(sent, row[1:])
        found.node = one_node(nodes)

    with report.case("error") as found, closing(connect(settings)) as conn:
        with conn.cursor() as cur:
            try:
                cur.execute("SELECT 1/0")
                raise AssertionError("1/0 did not fail")
            except psycopg2.Error as e:
                expect_sqlstate(e, "22012")
        found.node = node_of_read(conn)

    with report.case("error_in_transaction") as found, closing(connect(settings, False)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {items} (note) VALUES ('before the error')")
            try:
                cur.execute("SELECT 1/0")
                raise AssertionError("1/0 did not fail")
            except psycopg2.Error as e:
                expect_sqlstate(e, "22012")
            conn.rollback()
            cur.execute(f"INSERT INTO {items} (note) VALUES ('after the error')")
            found.node, count = note_rows(cur, items, "after the error")
            expect_own_row(count)
            expect(note_rows(cur, items, "before the error")[1] == 0, "rolled back row seen")
        conn.commit()

    with report.case("stream") as found, closing(connect(settings, False)) as conn:
        with conn.cursor("stream_cursor") as cur:
            cur.itersize = 1000
            cur.execute(stream_sql(settings))
            found.node = check_stream(list(cur))
        conn.commit()

    for case in ("nextval", "for_update"):
        with report.case(case) as found:
            found.node = check_plain(case, fetch_one(settings, case))

    # A named cursor WITH HOLD in autocommit: DECLARE ... WITH HOLD pins the session to the
    # primary, where the cursor lives; CLOSE unpins it.
    holder = connect(settings)
    with report.case("withhold_cursor") as found:
        with holder.cursor("held_cursor", withhold=True) as cur:
            cur.itersize = 1000
            cur.execute(stream_sql(settings))
            found.node = check_stream(list(cur))

    with report.case("after_withhold_cursor") as found:
        until_replica(lambda: node_of_read(holder), found)
    holder.close()


if __name__ == "__main__":
    main("psycopg2", run)
