<?php
// The client suite's cases for PHP PDO pgsql (see tests/drivers/README.md): one tab-separated line
// per case. Prepared statements are the server's (ATTR_EMULATE_PREPARES off): PDO parses a named
// statement (pdo_stmt_NNNNNNNN) and sends SQL `DEALLOCATE` when the statement object is destroyed.

const NODE = "current_setting('cluster_name')";
$table = getenv('PGREPL_TABLE');

function run(string $name, callable $body): void
{
    $nodes = [];
    $ok = 'ok';
    try {
        $detail = $body($nodes);
    } catch (Throwable $e) {
        $ok = 'fail';
        $state = $e instanceof PDOException ? $e->getCode() . ' ' : '';
        $detail = $state . get_class($e) . ': ' . $e->getMessage();
    }
    $where = $nodes ? implode(',', array_unique($nodes)) : '-';
    echo implode("\t", ['php-pdo', $name, $ok, $where, preg_replace('/\s+/', ' ', (string) $detail)]), "\n";
}

function check(bool $cond, string $what): void
{
    if (!$cond) {
        throw new RuntimeException($what);
    }
}

function connect(): PDO
{
    $dsn = sprintf('pgsql:host=%s;port=%s;dbname=%s;sslmode=disable', getenv('PGHOST'), getenv('PGPORT'),
        getenv('PGDATABASE'));
    return new PDO($dsn, getenv('PGUSER'), getenv('PGPASSWORD'), [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
    ]);
}

/** Runs $sql (first column cluster_name), records and returns where it ran. */
function read_node(PDO $db, array &$nodes, string $sql, array $params = []): string
{
    $st = $db->prepare($sql);
    $st->execute($params);
    $name = $st->fetchColumn();
    check($name !== false, "$sql: no row");
    $nodes[] = $name;
    return $name;
}

function count_rows(PDO $db, string $where): int
{
    global $table;
    return (int) $db->query("SELECT count(*) FROM $table WHERE $where")->fetchColumn();
}

function expect_division_by_zero(PDO $db): void
{
    try {
        $db->query('SELECT 1/0');
    } catch (PDOException $e) {
        check($e->getCode() === '22012', 'expected 22012, got ' . $e->getCode() . ' ' . $e->getMessage());
        return;
    }
    throw new RuntimeException('1/0 did not fail');
}

function megabyte(int $seed): string
{
    $b = '';
    for ($i = 0; $i < 256; $i++) {
        $b .= chr(($i * 7 + $seed) & 0xff);
    }
    return str_repeat($b, 4096);
}

function reader_cases(PDO $db): void
{
    run('replica_read', fn (array &$nodes) => 'first statement ran on ' . read_node($db, $nodes, 'SELECT ' . NODE));
    run('params', function (array &$nodes) use ($db) {
        $st = $db->prepare('SELECT ' . NODE . ', ?::int, ?::text, ?::numeric, ?::timestamptz, ?::bool, ?::int,'
            . ' ?::int[], ?::text[], ?::jsonb, ?::bytea');
        $text = "h\u{e9}llo 'w\u{f6}rld' \\ \"";
        $numeric = '12345678901234567890.123456789';
        $json = '{"a": 1, "b": [true, null, "x"]}';
        for ($i = 0; $i < 12; $i++) {
            $bytes = megabyte($i);
            $st->bindValue(1, $i, PDO::PARAM_INT);
            $st->bindValue(2, $text);
            $st->bindValue(3, $numeric);
            $st->bindValue(4, '2024-02-29 12:34:56.789123+00');
            $st->bindValue(5, true, PDO::PARAM_BOOL);
            $st->bindValue(6, null, PDO::PARAM_NULL);
            $st->bindValue(7, "{1,$i,3}");
            $st->bindValue(8, '{a,"b c","d\"e"}');
            $st->bindValue(9, $json);
            $st->bindValue(10, $bytes, PDO::PARAM_LOB);
            $st->execute();
            $row = $st->fetch(PDO::FETCH_NUM);
            $st->closeCursor();
            $nodes[] = $row[0];
            check($row[1] === $i, 'int ' . var_export($row[1], true));
            check($row[2] === $text, "text $row[2]");
            check($row[3] === $numeric, "numeric $row[3]");
            $ts = new DateTimeImmutable($row[4]);
            check($ts->format('U.u') === '1709210096.789123', "timestamptz $row[4]");
            check($row[5] === true, 'bool ' . var_export($row[5], true));
            check($row[6] === null, 'null ' . var_export($row[6], true));
            check($row[7] === "{1,$i,3}", "int[] $row[7]");
            check($row[8] === '{a,"b c","d\"e"}', "text[] $row[8]");
            check($row[9] === $json, "jsonb $row[9]");
            $got = is_resource($row[10]) ? stream_get_contents($row[10]) : $row[10];
            check($got === $bytes, 'bytea differs');
        }
        return '12 executions of one server-prepared statement';
    });
    run('stream', function (array &$nodes) use ($db) {
        // A cursor in a read-only transaction, fetched 500 rows at a time.
        $db->exec('BEGIN READ ONLY');
        $db->exec('DECLARE c CURSOR FOR SELECT g, ' . NODE . ' FROM generate_series(1, 10000) g');
        $rows = 0;
        $sum = 0;
        $fetches = 0;
        while (true) {
            $batch = $db->query('FETCH 500 FROM c')->fetchAll(PDO::FETCH_NUM);
            if (!$batch) {
                break;
            }
            $fetches++;
            foreach ($batch as [$g, $name]) {
                $rows++;
                $sum += $g;
                $nodes[] = $name;
            }
        }
        $db->exec('CLOSE c');
        $db->exec('COMMIT');
        check($rows === 10000 && $sum === 50005000, "$rows rows, sum $sum");
        return "10000 rows in $fetches FETCHes";
    });
}

function in_tx(PDO $db, array &$nodes, int $id, bool $commit): void
{
    global $table;
    $db->beginTransaction();
    $db->prepare("INSERT INTO $table VALUES (?, 'in a transaction')")->execute([$id]);
    read_node($db, $nodes, 'SELECT ' . NODE);
    $commit ? $db->commit() : $db->rollBack();
    check(count_rows($db, "id = $id") === ($commit ? 1 : 0), "rows with id $id");
}

function writer_cases(PDO $db): void
{
    global $table;
    run('write_read_back', function (array &$nodes) use ($db, $table) {
        $db->exec("INSERT INTO $table VALUES (100, 'written')");
        return 'read back on ' . read_node($db, $nodes, 'SELECT ' . NODE . " FROM $table WHERE id = 100 AND v = 'written'");
    });
    run('tx_commit', fn (array &$nodes) => in_tx($db, $nodes, 101, true));
    run('tx_rollback', fn (array &$nodes) => in_tx($db, $nodes, 102, false));
    run('error', function (array &$nodes) use ($db) {
        expect_division_by_zero($db);
        read_node($db, $nodes, 'SELECT ' . NODE);
        return '22012, then the session answers';
    });
    run('error_in_tx', function (array &$nodes) use ($db) {
        $db->beginTransaction();
        expect_division_by_zero($db);
        $db->rollBack();
        in_tx($db, $nodes, 103, true);
    });
    run('nextval', fn (array &$nodes) => read_node($db, $nodes, 'SELECT ' . NODE . ", nextval('{$table}_seq')") && false);
    run('for_update', fn (array &$nodes) => read_node($db, $nodes, 'SELECT ' . NODE . ", v FROM $table WHERE id = 1 FOR UPDATE") && false);
    run('replica_after_write', function (array &$nodes) use ($db) {
        $deadline = microtime(true) + 20;
        for ($tries = 1;; $tries++) {
            $name = $db->query('SELECT ' . NODE)->fetchColumn();
            if ($name === 'db02' || microtime(true) > $deadline) {
                $nodes[] = $name;
                return "$tries reads";
            }
            usleep(50000);
        }
    });
}

function fresh_cases(PDO $db): void
{
    global $table;
    run('reprepare', function (array &$nodes) use ($db, $table) {
        // Autocommit reads on a session that never wrote: each statement is prepared, run and
        // destroyed (DEALLOCATE); the DEALLOCATE is no write, so every read stays on the replica.
        for ($i = 0; $i < 12; $i++) {
            read_node($db, $nodes, 'SELECT ' . NODE . ", v FROM $table WHERE id = ?", [1 + $i % 10]);
        }
        return '12 statements prepared, run and destroyed';
    });
}

function fresh_tx_cases(PDO $db): void
{
    global $table;
    run('reprepare_tx', function (array &$nodes) use ($db, $table) {
        // A statement prepared and run outside a transaction (the session's first: on the replica), destroyed
        // inside one (DEALLOCATE), then statements prepared, run and destroyed in the
        // transaction, and a write: the transaction must still commit.
        $outside = $db->prepare("SELECT v FROM $table WHERE id = ?");
        $outside->execute([1]);
        $outside->fetchAll();
        $db->beginTransaction();
        $outside = null;
        for ($i = 0; $i < 3; $i++) {
            read_node($db, $nodes, 'SELECT ' . NODE . ", v FROM $table WHERE id = ?", [1]);
        }
        $db->prepare("INSERT INTO $table VALUES (?, 'after re-prepares')")->execute([104]);
        $db->commit();
        check(count_rows($db, 'id = 104') === 1, 'row of the transaction missing');
        return 'statements destroyed in a transaction, then committed';
    });
}

$dbs = [];
run('login', function () use (&$dbs) {
    $dbs = [connect(), connect(), connect(), connect()];
    return 'scram-sha-256 as ' . getenv('PGUSER');
});
if (count($dbs) !== 4) {
    exit(1);
}
reader_cases($dbs[0]);
writer_cases($dbs[1]);
fresh_cases($dbs[2]);
fresh_tx_cases($dbs[3]);
