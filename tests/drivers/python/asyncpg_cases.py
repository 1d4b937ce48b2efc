"""The client suite's cases through asyncpg (extended protocol, every statement prepared and
cached, binary values, type introspection wrapped in `set_config('jit', ...)`, its own pool)."""

import asyncio
import json

import asyncpg

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
    until_replica_async,
)


def connect_args(settings):
    return {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "password": settings.password,
        "database": settings.dbname,
        "ssl": False,
        "timeout": 20,
    }


async def connect(settings, **options):
    return await asyncpg.connect(**connect_args(settings), **options)


async def node_of_read(conn):
    return await conn.fetchval(f"SELECT {NODE}")


async def fetch_one(settings, case):
    """The row of `case`'s statement without parameters, on a new session."""
    conn = await connect(settings)
    try:
        return tuple(await conn.fetchrow(plain_sql(settings, case)))
    finally:
        await conn.close()


async def note_rows(conn, items, note):
    """(node, count) of the rows of `items` with `note`."""
    row = await conn.fetchrow(
        f"SELECT {NODE}, count(*) FROM {items} WHERE note = $1 GROUP BY 1", note
    )
    return tuple(row) if row else (None, 0)


async def expect_division_by_zero(conn):
    try:
        await conn.fetchval("SELECT 1/0")
        raise AssertionError("1/0 did not fail")
    except asyncpg.PostgresError as e:
        expect_sqlstate(e, "22012")


async def run_cases(settings, report):
    items = settings.table("items")

    with report.case("autocommit_read") as found:
        found.node = check_plain("autocommit_read", await fetch_one(settings, "autocommit_read"))

    writer = await connect(settings)
    with report.case("write_read_back") as found:
        id_ = await writer.fetchval(f"INSERT INTO {items} (note) VALUES ('written') RETURNING id")
        row = await writer.fetchrow(f"SELECT {NODE}, note FROM {items} WHERE id = $1", id_)
        expect(row is not None and row[1] == "written", f"read back {row}")
        found.node = row[0]

    with report.case("reads_return_to_replica") as found:
        await until_replica_async(lambda: node_of_read(writer), found)
    await writer.close()

    for case, commit in TRANSACTIONS:
        with report.case(case) as found:
            conn = await connect(settings)
            tx = conn.transaction()
            await tx.start()
            await conn.execute(f"INSERT INTO {items} (note) VALUES ($1)", case)
            found.node, count = await note_rows(conn, items, case)
            expect_own_row(count)
            await (tx.commit() if commit else tx.rollback())
            expect_ended(commit, (await note_rows(conn, items, case))[1])
            await conn.close()

    # Arrays and jsonb make asyncpg introspect their types before the first run.
    with report.case("parameters") as found:
        conn = await connect(settings)
        statement = await conn.prepare(echo_sql(lambda i, _, sqltype: f"${i}::{sqltype}"))
        nodes = []
        for round_ in range(ROUNDS):
            sent = sample(round_)
            params = dict(sent, jsonb=json.dumps(sent["jsonb"]))
            row = await statement.fetchrow(*params.values())
            nodes.append(row[0])
            compare(sent, list(row)[1:])
        found.node = one_node(nodes)
        await conn.close()

    with report.case("error") as found:
        conn = await connect(settings)
        await expect_division_by_zero(conn)
        found.node = await node_of_read(conn)
        await conn.close()

    with report.case("error_in_transaction") as found:
        conn = await connect(settings)
        tx = conn.transaction()
        await tx.start()
        await conn.execute(f"INSERT INTO {items} (note) VALUES ('before the error')")
        await expect_division_by_zero(conn)
        await tx.rollback()
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {items} (note) VALUES ('after the error')")
            found.node, count = await note_rows(conn, items, "after the error")
            expect_own_row(count)
        before = (await note_rows(conn, items, "before the error"))[1]
        expect(before == 0, "rolled back row seen")
        await conn.close()

    with report.case("stream") as found:
        conn = await connect(settings)
        async with conn.transaction():
            rows = [tuple(r) async for r in conn.cursor(stream_sql(settings), prefetch=1000)]
        found.node = check_stream(rows)
        await conn.close()

    for case in ("nextval", "for_update"):
        with report.case(case) as found:
            found.node = check_plain(case, await fetch_one(settings, case))

    await custom_types(settings, report)
    await statement_cache(settings, report)
    await pool_reset(settings, report)


async def custom_types(settings, report):
    """An enum, a composite and jsonb through a codec: asyncpg introspects them, running
    `set_config('jit', $1, false)` around the introspection; reads after that must still go
    to the replica."""
    mood, pair = settings.table("mood"), settings.table("pair")
    conn = await connect(settings)
    with report.case("custom_types") as found:
        await conn.set_type_codec(
            "jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads
        )
        document = {"mood": "happy", "pair": [7, "seven"]}
        row = await conn.fetchrow(
            f"SELECT {NODE}, $1::{mood}, $2::{pair}, $3::jsonb, $4::{mood}[]",
            "happy",
            (7, "seven"),
            document,
            ["sad", "ok"],
        )
        found.node = row[0]
        got = (row[1], tuple(row[2]), row[3], row[4])
        want = ("happy", (7, "seven"), document, ["sad", "ok"])
        expect(got == want, f"sent {want}, got {got}")

    with report.case("reads_after_introspection") as found:
        await until_replica_async(lambda: node_of_read(conn), found)
    await conn.close()


async def statement_cache(settings, report):
    """A statement cache of two: asyncpg closes the statements it evicts (protocol Close)."""
    with report.case("statement_cache_eviction") as found:
        conn = await connect(settings, statement_cache_size=2)
        nodes = []
        for round_ in range(3):
            for k in range(4):
                node, value = await conn.fetchrow(f"SELECT {NODE}, $1::int + {k}", round_)
                expect(value == round_ + k, f"statement {k} with {round_} gave {value}")
                nodes.append(node)
        found.node = one_node(nodes)
        await conn.close()


async def pool_reset(settings, report):
    """A pool of one connection, so the same one comes back: what the session set is gone
    after release and reacquire (asyncpg resets it with one query string: advisory unlock,
    CLOSE ALL, UNLISTEN *, RESET ALL), and the connection still works and reads on the
    replica."""
    pool = await asyncpg.create_pool(**connect_args(settings), min_size=1, max_size=1)
    with report.case("pool_reset") as found:
        async with pool.acquire() as conn:
            await conn.execute("SET statement_timeout = '4321ms'")
            shown = await conn.fetchval("SHOW statement_timeout")
            expect(shown == "4321ms", f"statement_timeout is {shown} after SET")
        async with pool.acquire() as conn:
            found.node, shown = await conn.fetchrow(
                f"SELECT {NODE}, current_setting('statement_timeout')"
            )
            expect(shown == "0", f"statement_timeout is {shown} after the pool's reset")

    with report.case("pool_reads_on_replica") as found:
        async with pool.acquire() as conn:
            await until_replica_async(lambda: node_of_read(conn), found)
    await pool.close()


def run(settings, report):
    asyncio.run(run_cases(settings, report))


if __name__ == "__main__":
    main("asyncpg", run)
