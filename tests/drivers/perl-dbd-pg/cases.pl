#!/usr/bin/perl
# The client suite's cases for Perl DBD::Pg (see tests/drivers/README.md): one tab-separated line
# per case. DBD::Pg prepares statements on the server (dbdpg_p<pid>_<n>) at their second execute,
# and sends SQL `DEALLOCATE` when a statement handle is destroyed or bound with another type.
use strict;
use warnings;
use utf8;
use DBI qw(:sql_types);
use DBD::Pg qw(:pg_types);

binmode STDOUT, ':encoding(UTF-8)';
$| = 1;
my $TABLE = $ENV{PGREPL_TABLE};
my $NODE  = "current_setting('cluster_name')";

sub run {
    my ($name, $body) = @_;
    my @nodes;
    my $ok     = 'ok';
    my $detail = eval { $body->(\@nodes) };
    if ($@) {
        $ok     = 'fail';
        $detail = ($DBI::state // '') . " $@";
    }
    my %seen;
    my @where = grep { !$seen{$_}++ } @nodes;
    $detail //= '';
    $detail =~ s/\s+/ /g;
    print join("\t", 'perl-dbd-pg', $name, $ok, (@where ? join(',', @where) : '-'), $detail), "\n";
}

sub check {
    my ($cond, $what) = @_;
    die "$what\n" unless $cond;
}

sub connect_db {
    return DBI->connect('dbi:Pg:sslmode=disable', undef, undef,
        { RaiseError => 1, PrintError => 0, AutoCommit => 1, pg_enable_utf8 => 1 });
}

# Runs $sql (first column cluster_name), records and returns where it ran.
sub read_node {
    my ($db, $nodes, $sql, @params) = @_;
    my $row = $db->selectrow_arrayref($sql, undef, @params);
    check($row, "$sql: no row");
    push @$nodes, $row->[0];
    return $row->[0];
}

sub count_rows {
    my ($db, $where) = @_;
    return $db->selectrow_array("SELECT count(*) FROM $TABLE WHERE $where");
}

sub expect_division_by_zero {
    my ($db) = @_;
    my $failed = !eval { $db->do('SELECT 1/0'); 1 };
    check($failed, '1/0 did not fail');
    check($db->state eq '22012', 'expected 22012, got ' . $db->state . " $@");
}

sub megabyte {
    my ($seed) = @_;
    return join('', map { chr(($_ * 7 + $seed) & 0xff) } 0 .. 255) x 4096;
}

sub reader_cases {
    my ($db) = @_;
    run('replica_read', sub { 'first statement ran on ' . read_node($db, $_[0], "SELECT $NODE") });
    run('params', sub {
        my ($nodes) = @_;
        my $st = $db->prepare("SELECT $NODE, ?::int, ?::text, ?::numeric, ?::timestamptz, ?::bool, ?::int,"
              . ' ?::int[], ?::text[], ?::jsonb, ?::bytea');
        my $text    = "h\x{e9}llo 'w\x{f6}rld' \\ \"";
        my $numeric = '12345678901234567890.123456789';
        my $json    = '{"a": 1, "b": [true, null, "x"]}';
        for my $i (0 .. 11) {
            my $bytes = megabyte($i);
            $st->bind_param(1, $i, SQL_INTEGER);
            $st->bind_param(2, $text);
            $st->bind_param(3, $numeric, SQL_NUMERIC);
            $st->bind_param(4, '2024-02-29 12:34:56.789123+00');
            $st->bind_param(5, 1, SQL_BOOLEAN);
            $st->bind_param(6, undef, SQL_INTEGER);
            $st->bind_param(7, [1, $i, 3]);
            $st->bind_param(8, ['a', 'b c', 'd"e']);
            $st->bind_param(9, $json);
            $st->bind_param(10, $bytes, { pg_type => PG_BYTEA });
            $st->execute;
            my $row = $st->fetchrow_arrayref;
            $st->finish;
            push @$nodes, $row->[0];
            check($row->[1] == $i,                     "int $row->[1]");
            check($row->[2] eq $text,                  "text $row->[2]");
            check($row->[3] eq $numeric,               "numeric $row->[3]");
            check($row->[4] eq '2024-02-29 12:34:56.789123+00', "timestamptz $row->[4]");
            check($row->[5] == 1,                      "bool $row->[5]");
            check(!defined $row->[6],                  'null');
            check("@{$row->[7]}" eq "1 $i 3",          "int[] @{$row->[7]}");
            check(join('|', @{ $row->[8] }) eq 'a|b c|d"e', "text[] @{$row->[8]}");
            check($row->[9] eq $json,                  "jsonb $row->[9]");
            check($row->[10] eq $bytes,                'bytea differs');
        }
        return '12 executions of one server-prepared statement';
    });
    run('stream', sub {
        my ($nodes) = @_;
        # A cursor in a read-only transaction, fetched 500 rows at a time.
        # DBD::Pg's begin_work has no access mode: the transaction is started by hand.
        $db->do('BEGIN READ ONLY');
        $db->do("DECLARE c CURSOR FOR SELECT g, $NODE FROM generate_series(1, 10000) g");
        my ($rows, $sum, $fetches) = (0, 0, 0);
        my $fetch = $db->prepare('FETCH 500 FROM c');
        while (1) {
            $fetch->execute;
            my $batch = $fetch->fetchall_arrayref;
            last unless @$batch;
            $fetches++;
            for my $r (@$batch) {
                $rows++;
                $sum += $r->[0];
                push @$nodes, $r->[1];
            }
        }
        undef $fetch;
        $db->do('CLOSE c');
        $db->do('COMMIT');
        check($rows == 10000 && $sum == 50005000, "$rows rows, sum $sum");
        return "10000 rows in $fetches FETCHes";
    });
}

sub in_tx {
    my ($db, $nodes, $id, $commit) = @_;
    $db->begin_work;
    $db->do("INSERT INTO $TABLE VALUES (?, 'in a transaction')", undef, $id);
    read_node($db, $nodes, "SELECT $NODE");
    $commit ? $db->commit : $db->rollback;
    check(count_rows($db, "id = $id") == ($commit ? 1 : 0), "rows with id $id");
    return '';
}

sub writer_cases {
    my ($db) = @_;
    run('write_read_back', sub {
        $db->do("INSERT INTO $TABLE VALUES (100, 'written')");
        return 'read back on ' . read_node($db, $_[0], "SELECT $NODE FROM $TABLE WHERE id = 100 AND v = 'written'");
    });
    run('tx_commit',   sub { in_tx($db, $_[0], 101, 1) });
    run('tx_rollback', sub { in_tx($db, $_[0], 102, 0) });
    run('error', sub {
        expect_division_by_zero($db);
        read_node($db, $_[0], "SELECT $NODE");
        return '22012, then the session answers';
    });
    run('error_in_tx', sub {
        $db->begin_work;
        expect_division_by_zero($db);
        $db->rollback;
        in_tx($db, $_[0], 103, 1);
    });
    run('nextval',    sub { read_node($db, $_[0], "SELECT $NODE, nextval('${TABLE}_seq')"); '' });
    run('for_update', sub { read_node($db, $_[0], "SELECT $NODE, v FROM $TABLE WHERE id = 1 FOR UPDATE"); '' });
    run('replica_after_write', sub {
        my ($nodes) = @_;
        my $deadline = time + 20;
        for (my $tries = 1;; $tries++) {
            my ($name) = $db->selectrow_array("SELECT $NODE");
            if ($name eq 'db02' || time > $deadline) {
                push @$nodes, $name;
                return "$tries reads";
            }
            select(undef, undef, undef, 0.05);
        }
    });
}

sub fresh_cases {
    my ($db) = @_;
    run('bind_types', sub {
        my ($nodes) = @_;
        # Autocommit reads on a session that never wrote: each statement is run twice with one
        # bound type (prepared by name at the second), twice with another (DBD::Pg deallocates
        # it and prepares it again), then destroyed (DEALLOCATE);
        # no DEALLOCATE is a write, so every read stays on the replica.
        for my $i (0 .. 2) {
            my $st = $db->prepare("SELECT $NODE, ?::text");
            for my $type (SQL_INTEGER, SQL_INTEGER, SQL_VARCHAR, SQL_VARCHAR) {
                $st->bind_param(1, 40 + $i, $type);
                $st->execute;
                my $row = $st->fetchrow_arrayref;
                $st->finish;
                push @$nodes, $row->[0];
                check($row->[1] eq 40 + $i, "read $row->[1]");
            }
        }
        return '3 statements each bound with 2 types, 12 executions';
    });
}

sub fresh_tx_cases {
    my ($db) = @_;
    run('reprepare_tx', sub {
        my ($nodes) = @_;
        # A statement prepared and run outside a transaction (the session's first: on the replica), destroyed
        # inside one (DEALLOCATE), then statements prepared, run and destroyed in the
        # transaction, and a write: the transaction must still commit.
        my $outside = $db->prepare("SELECT v FROM $TABLE WHERE id = ?");
        # DBD::Pg prepares a statement by name at its second execute (pg_switch_prepared).
        for (1 .. 2) {
            $outside->execute(1);
            $outside->fetchall_arrayref;
        }
        $db->begin_work;
        # DBD::Pg sends BEGIN with the transaction's first statement.
        read_node($db, $nodes, "SELECT $NODE");
        undef $outside;
        for (1 .. 3) {
            my $st = $db->prepare("SELECT $NODE, v FROM $TABLE WHERE id = ?");
            for (1 .. 2) {
                $st->execute(1);
                push @$nodes, $st->fetchrow_arrayref->[0];
                $st->finish;
            }
        }
        $db->do("INSERT INTO $TABLE VALUES (?, 'after re-prepares')", undef, 104);
        $db->commit;
        check(count_rows($db, 'id = 104') == 1, 'row of the transaction missing');
        return 'statements destroyed in a transaction, then committed';
    });
}

my @dbs;
run('login', sub {
    @dbs = map { connect_db() } 1 .. 4;
    return "scram-sha-256 as $ENV{PGUSER}";
});
exit 1 unless @dbs == 4;
reader_cases($dbs[0]);
writer_cases($dbs[1]);
fresh_cases($dbs[2]);
fresh_tx_cases($dbs[3]);
$_->disconnect for @dbs;
