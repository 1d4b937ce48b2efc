"""What the driver programs of the client suite share.

Each program (one per driver) connects through the proxy with the settings the Rust test
(tests/tests/drivers_python.rs) passes in the environment, runs the suite's cases and prints
one JSON line per case: {"driver", "case", "ok", "node", "detail"}. `node` is where the read
the case is about ran (`current_setting('cluster_name')`: db01 is the primary, db02 the
replica). The programs check values; the Rust test decides which node each case must have
run on, so that table lives in one place.
"""

import asyncio
import contextlib
import datetime
import decimal
import json
import os
import sys
import time

# Where a statement ran: the first column of every read the cases look at.
NODE = "current_setting('cluster_name')"
REPLICA = "db02"
# Rounds of the parameterized statement: past psycopg's prepare_threshold (5) and asyncpg's
# statement cache (it prepares at once and reuses).
ROUNDS = 12
# Rows streamed through each driver's server-side cursor; the fixture table holds this many.
STREAM_ROWS = 10_000
# How long a session's reads may take to come back to the replica after the session wrote
# (read-your-writes keeps them on the primary until the replica has replayed the write).
REPLICA_DEADLINE = 20.0

# One megabyte of bytes that are not all alike, the same in every round but for the first.
_MEGABYTE = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))


class Settings:
    """The connection settings and fixture names the Rust test passes."""

    def __init__(self):
        env = os.environ
        self.host = env["DRIVER_HOST"]
        self.port = int(env["DRIVER_PORT"])
        self.user = env["DRIVER_USER"]
        self.password = env["DRIVER_PASSWORD"]
        self.dbname = env["DRIVER_DB"]
        self.prefix = env["DRIVER_PREFIX"]

    def table(self, name):
        """A fixture's name: the test's prefix, an underscore, `name`."""
        return f"{self.prefix}_{name}"

    def kwargs(self):
        """libpq-style keyword arguments (psycopg2, psycopg)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "dbname": self.dbname,
            "connect_timeout": 20,
        }


class Case:
    """What a case found: the node its read ran on and anything worth saying."""

    def __init__(self):
        self.node = None
        self.detail = ""


class Report:
    """Prints one JSON line per case as it ends."""

    def __init__(self, driver):
        self.driver = driver

    @contextlib.contextmanager
    def case(self, name):
        """Runs the body as case `name`: ok unless it raises; the error is the detail."""
        found = Case()
        try:
            yield found
        except Exception as e:  # every failure of a case is reported, then the next runs
            self._emit(name, False, found.node, describe(e))
        else:
            self._emit(name, True, found.node, found.detail)

    def _emit(self, name, ok, node, detail):
        line = {"driver": self.driver, "case": name, "ok": ok, "node": node, "detail": detail}
        print(json.dumps(line), flush=True)


def sqlstate(error):
    """The SQLSTATE of a driver's error, or of the error it wraps (Django, SQLAlchemy)."""
    while error is not None:
        for attr in ("sqlstate", "pgcode"):
            code = getattr(error, attr, None)
            if isinstance(code, str):
                return code
        error = getattr(error, "orig", None) or error.__cause__
    return None


def describe(error):
    """An error as one line: type, message, SQLSTATE."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text} (SQLSTATE {sqlstate(error)})"


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


def expect_sqlstate(error, code):
    got = sqlstate(error)
    expect(got == code, f"expected SQLSTATE {code}, got {describe(error)}")


# The transaction cases: each inserts a row named after itself and reads it, then ends so.
TRANSACTIONS = (("transaction_commit", True), ("transaction_rollback", False))


def expect_own_row(count):
    expect(count == 1, f"the transaction sees {count} rows of its own insert")


def expect_ended(commit, count):
    """After a transaction case: its row is there if it committed, gone if it rolled back."""
    expect(count == int(commit), f"{count} rows after {'COMMIT' if commit else 'ROLLBACK'}")


def one_node(nodes):
    """The node of a run of reads: the node if they all ran on one, else all of them."""
    distinct = sorted(set(nodes))
    return distinct[0] if len(distinct) == 1 else ",".join(nodes)


# The parameterized statement: each value with its SQL type, sent and compared after the trip.
COLUMNS = [
    ("int", "int"),
    ("text", "text"),
    ("numeric", "numeric"),
    ("timestamptz", "timestamptz"),
    ("bool", "bool"),
    ("null", "int"),
    ("int_array", "int[]"),
    ("text_array", "text[]"),
    ("jsonb", "jsonb"),
    ("bytea", "bytea"),
]


def echo_sql(placeholder):
    """SELECT of the node and of every parameter cast to its column's type.

    `placeholder(position, name, sqltype)` spells one parameter in the driver's style."""
    values = ", ".join(
        placeholder(i + 1, name, sqltype) for i, (name, sqltype) in enumerate(COLUMNS)
    )
    return f"SELECT {NODE}, {values}"


def sample(round_):
    """The values sent in round `round_`, by column name."""
    offset = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    return {
        "int": -2_000_000_000 + round_,
        "text": f"naïve 'quoted' \\ text; round {round_}",
        "numeric": decimal.Decimal(f"12345678901234567890.{round_:05d}"),
        "timestamptz": datetime.datetime(2024, 2, 29, 23, 59, 58, 123_456 + round_, offset),
        "bool": round_ % 2 == 0,
        "null": None,
        "int_array": [round_, -round_, 2**31 - 1],
        "text_array": ["a", f"b{round_}", "with,comma", 'with "quotes"', "é"],
        "jsonb": {"round": round_, "nested": {"list": [1, 2.5, "x"], "none": None}, "é": True},
        "bytea": bytes([round_ % 256]) + _MEGABYTE[1:],
    }


def compare(sent, received):
    """Raises naming each column whose value did not come back equal."""
    wrong = []
    for (name, _), got in zip(COLUMNS, received):
        want = sent[name]
        if isinstance(got, memoryview):
            got = bytes(got)
        if name == "jsonb" and isinstance(got, str):
            got = json.loads(got)
        if got != want:
            shown = f"{len(got)} bytes" if isinstance(got, bytes) else repr(got)[:200]
            wrong.append(f"{name}: sent {repr(want)[:200]}, got {shown}")
    expect(len(received) == len(COLUMNS), f"{len(received)} columns came back")
    expect(not wrong, "; ".join(wrong))


def check_stream(rows):
    """The streamed rows are the fixture's, in order; returns the node(s) they came from."""
    expect(len(rows) == STREAM_ROWS, f"streamed {len(rows)} rows, expected {STREAM_ROWS}")
    for i, (id_, v, _) in enumerate(rows, start=1):
        expect((id_, v) == (i, f"row {i}"), f"row {i} came back as {(id_, v)}")
    return one_node([node for _, _, node in rows])


def stream_sql(settings):
    """The streaming query: id, v and the node, in id order."""
    return f"SELECT id, v, {NODE} FROM {settings.table('stream')} ORDER BY id"


def plain_sql(settings, case):
    """The statement, without parameters, of `autocommit_read` (counts the rows to stream),
    `nextval` (two values of the sequence) or `for_update` (locks a row in autocommit)."""
    seq = settings.table("seq")
    return {
        "autocommit_read": f"SELECT {NODE}, count(*) FROM {settings.table('stream')}",
        "nextval": f"SELECT {NODE}, nextval('{seq}'), nextval('{seq}')",
        "for_update": f"SELECT {NODE}, v FROM {settings.table('locked')} WHERE id = 1 FOR UPDATE",
    }[case]


def check_plain(case, row):
    """Checks the row `plain_sql`'s statement for `case` returned; returns its node."""
    node, *values = row
    if case == "autocommit_read":
        expect(values == [STREAM_ROWS], f"counted {values} rows")
    elif case == "nextval":
        expect(values[1] == values[0] + 1, f"nextval gave {values}")
    else:
        expect(values == [10], f"the locked row has v = {values}")
    return node


def until_replica(read_node, found):
    """Reads the node with `read_node()` until it is the replica or the deadline passes;
    records the last node (and how many reads it took) in `found`."""
    deadline = time.monotonic() + REPLICA_DEADLINE
    reads = 0
    while True:
        node = read_node()
        reads += 1
        if node == REPLICA or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    found.node = node
    found.detail = f"after {reads} read(s)"


async def until_replica_async(read_node, found):
    """`until_replica` for a coroutine `read_node`."""
    deadline = time.monotonic() + REPLICA_DEADLINE
    reads = 0
    while True:
        node = await read_node()
        reads += 1
        if node == REPLICA or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    found.node = node
    found.detail = f"after {reads} read(s)"


def main(driver, run):
    """Runs a program's `run(settings, report)`; a crash outside a case fails the program."""
    settings = Settings()
    try:
        run(settings, Report(driver))
    except Exception as e:
        print(f"driver program failed outside a case: {describe(e)}", file=sys.stderr)
        raise
