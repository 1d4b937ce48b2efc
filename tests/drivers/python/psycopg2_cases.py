"""The client suite's cases through psycopg2 (simple protocol, values interpolated on the
client; named cursors are SQL DECLARE/FETCH)."""

from contextlib import closing

import psycopg2
import psycopg2.extras

from common import (
    NODE,
    ROUNDS,
    check_stream,
    compare,
    echo_sql,
    expect,
    expect_sqlstate,
    main,
    one_node,
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


def note_rows(cur, items, note):
    """(node, count) of the rows of `items` with `note`."""
    cur.execute(f"SELECT {NODE}, count(*) FROM {items} WHERE note = %s GROUP BY 1", (note,))
    row = cur.fetchone()
    return row if row else (None, 0)


def run(settings, report):
    items = settings.table("items")

    with report.case("autocommit_read") as found, closing(connect(settings)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {NODE}, count(*) FROM {settings.table('stream')}")
            found.node, count = cur.fetchone()
            expect(count == 10_000, f"counted {count} rows")

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

    with report.case("transaction_commit") as found, closing(connect(settings, False)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {items} (note) VALUES ('committed')")
            found.node, count = note_rows(cur, items, "committed")
            expect(count == 1, "the transaction does not see its own insert")
        conn.commit()
        with conn.cursor() as cur:
            expect(note_rows(cur, items, "committed")[1] == 1, "the commit is not visible")
        conn.commit()

    with report.case("transaction_rollback") as found, closing(connect(settings, False)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {items} (note) VALUES ('rolled back')")
            found.node, count = note_rows(cur, items, "rolled back")
            expect(count == 1, "the transaction does not see its own insert")
        conn.rollback()
        with conn.cursor() as cur:
            expect(note_rows(cur, items, "rolled back")[1] == 0, "the rollback is visible")
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
            expect(count == 1, "the next transaction does not see its insert")
            expect(note_rows(cur, items, "before the error")[1] == 0, "rolled back row seen")
        conn.commit()

    with report.case("stream") as found, closing(connect(settings, False)) as conn:
        with conn.cursor("stream_cursor") as cur:
            cur.itersize = 1000
            cur.execute(stream_sql(settings))
            found.node = check_stream(list(cur))
        conn.commit()

    with report.case("nextval") as found, closing(connect(settings)) as conn:
        with conn.cursor() as cur:
            seq = settings.table("seq")
            cur.execute(f"SELECT {NODE}, nextval('{seq}'), nextval('{seq}')")
            found.node, first, second = cur.fetchone()
            expect(second == first + 1, f"nextval gave {first} then {second}")

    with report.case("for_update") as found, closing(connect(settings)) as conn:
        with conn.cursor() as cur:
            cur.execute(f"SELECT {NODE}, v FROM {settings.table('locked')} WHERE id = 1 FOR UPDATE")
            found.node, v = cur.fetchone()
            expect(v == 10, f"locked row has v = {v}")

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
