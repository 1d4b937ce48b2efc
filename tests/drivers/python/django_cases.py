"""The client suite's cases through Django's ORM on psycopg 3 (Django's choice when it is
installed): autocommit by default, transaction.atomic() with savepoints, QuerySet.iterator()
on a server-side cursor (WITH HOLD outside a transaction), select_for_update()."""

import django
from django.conf import settings as django_settings

from common import (
    NODE,
    ROUNDS,
    TRANSACTIONS,
    STREAM_ROWS,
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
    until_replica,
)


def configure(settings):
    django_settings.configure(
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": settings.host,
                "PORT": settings.port,
                "NAME": settings.dbname,
                "USER": settings.user,
                "PASSWORD": settings.password,
                "OPTIONS": {"connect_timeout": 20},
            }
        },
        INSTALLED_APPS=[],
        USE_TZ=True,
        TIME_ZONE="UTC",
    )
    django.setup()


def models(settings):
    """Unmanaged models on this run's fixture tables (an explicit app label, no app)."""
    from django.db import models as m

    def meta(table):
        return type("Meta", (), {"app_label": "drivers", "db_table": table, "managed": False})

    class Item(m.Model):
        note = m.TextField()
        qty = m.IntegerField(default=0)
        Meta = meta(settings.table("items"))

    class Row(m.Model):
        v = m.TextField()
        Meta = meta(settings.table("stream"))

    class Locked(m.Model):
        v = m.IntegerField()
        Meta = meta(settings.table("locked"))

    return Item, Row, Locked


def run(settings, report):
    configure(settings)
    from django.db import DataError, connection, transaction
    from django.db.models.expressions import RawSQL
    from psycopg.types.json import Jsonb

    Item, Row, Locked = models(settings)
    node = RawSQL(NODE, ())

    def fresh_session():
        """The next query opens a new connection: a session that has not written."""
        connection.close()

    def node_of_read():
        return Row.objects.annotate(node=node).values_list("node", flat=True).first()

    def notes(note):
        """(node, count) of the items with `note`."""
        rows = list(Item.objects.filter(note=note).annotate(node=node).values_list("node", "id"))
        return (rows[0][0] if rows else None, len(rows))

    def stream(queryset):
        rows = queryset.annotate(node=node).order_by("id").values_list("id", "v", "node")
        return check_stream(list(rows.iterator(chunk_size=1000)))

    with report.case("autocommit_read") as found:
        fresh_session()
        count = Row.objects.count()
        expect(count == STREAM_ROWS, f"counted {count} rows")
        found.node = node_of_read()

    with report.case("write_read_back") as found:
        fresh_session()
        item = Item.objects.create(note="written")
        read_back = Item.objects.annotate(node=node).values_list("node", "note")
        found.node, note = read_back.get(pk=item.pk)
        expect(note == "written", f"read back {note!r}")

    with report.case("reads_return_to_replica") as found:
        until_replica(node_of_read, found)

    for case, commit in TRANSACTIONS:
        with report.case(case) as found:
            with transaction.atomic():
                Item.objects.create(note=case)
                found.node, count = notes(case)
                expect_own_row(count)
                transaction.set_rollback(not commit)
            expect_ended(commit, notes(case)[1])

    with report.case("parameters") as found:
        fresh_session()
        sql = echo_sql(lambda _, name, sqltype: f"%({name})s::{sqltype}")
        nodes = []
        with connection.cursor() as cur:
            for round_ in range(ROUNDS):
                sent = sample(round_)
                cur.execute(sql, dict(sent, jsonb=Jsonb(sent["jsonb"])))
                row = cur.fetchone()
                nodes.append(row[0])
                compare(sent, row[1:])
        found.node = one_node(nodes)

    with report.case("error") as found:
        fresh_session()
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT 1/0")
            raise AssertionError("1/0 did not fail")
        except DataError as e:
            expect_sqlstate(e, "22012")
        found.node = node_of_read()

    # An error inside atomic(): the inner block's savepoint is rolled back, the transaction
    # goes on and commits what came before and after.
    with report.case("error_in_transaction") as found:
        with transaction.atomic():
            Item.objects.create(note="before the savepoint")
            try:
                with transaction.atomic(), connection.cursor() as cur:
                    Item.objects.create(note="inside the savepoint")
                    cur.execute("SELECT 1/0")
                raise AssertionError("1/0 did not fail")
            except DataError as e:
                expect_sqlstate(e, "22012")
            Item.objects.create(note="after the savepoint")
            found.node, count = notes("after the savepoint")
            expect(count == 1, "the transaction does not go on after the savepoint")
        places = ("before the savepoint", "inside the savepoint", "after the savepoint")
        counts = [notes(place)[1] for place in places]
        expect(counts == [1, 0, 1], f"rows before, inside, after the savepoint: {counts}")

    # QuerySet.iterator() inside atomic(): a server-side cursor without hold.
    with report.case("stream") as found, transaction.atomic():
        found.node = stream(Row.objects.all())

    with report.case("nextval") as found:
        fresh_session()
        with connection.cursor() as cur:
            cur.execute(plain_sql(settings, "nextval"))
            found.node = check_plain("nextval", cur.fetchone())

    with report.case("for_update") as found, transaction.atomic():
        locked = Locked.objects.select_for_update().annotate(node=node)
        found.node, v = locked.values_list("node", "v").get(pk=1)
        expect(v == 10, f"locked row has v = {v}")

    # QuerySet.iterator() in autocommit: psycopg's cursor(name, withhold=True).
    with report.case("iterator") as found:
        fresh_session()
        node_of_read()
        found.node = stream(Row.objects.all())

    with report.case("after_iterator") as found:
        until_replica(node_of_read, found)

    connection.close()


if __name__ == "__main__":
    main("django", run)
