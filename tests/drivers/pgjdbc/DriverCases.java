// The client suite's cases for pgjdbc (see tests/drivers/README.md): one tab-separated line per case.
import java.math.BigDecimal;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.time.Instant;
import java.util.Arrays;
import java.util.LinkedHashSet;
import java.util.Properties;
import java.util.Set;
import org.postgresql.PGStatement;

public class DriverCases {
    static final String TABLE = System.getenv("PGREPL_TABLE");
    static final String NODE = "current_setting('cluster_name')";

    /** One case: records the nodes its reads ran on; throws to fail. */
    interface Body {
        String run(Set<String> nodes) throws Exception;
    }

    static void run(String name, Body body) {
        Set<String> nodes = new LinkedHashSet<>();
        String ok = "ok";
        String detail;
        try {
            detail = body.run(nodes);
        } catch (Throwable e) {
            ok = "fail";
            String state = e instanceof SQLException ? ((SQLException) e).getSQLState() + " " : "";
            detail = state + e;
        }
        String where = nodes.isEmpty() ? "-" : String.join(",", nodes);
        System.out.println(String.join("\t", "pgjdbc", name, ok, where,
                detail == null ? "" : detail.replaceAll("[\t\r\n]+", " ")));
        System.out.flush();
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT")
                + "/" + System.getenv("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", System.getenv("PGUSER"));
        props.setProperty("password", System.getenv("PGPASSWORD"));
        props.setProperty("sslmode", "disable");
        return DriverManager.getConnection(url, props);
    }

    /** Runs `sql` (its first column is cluster_name), records and returns the node. */
    static String node(Connection c, Set<String> nodes, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery(sql)) {
            check(rs.next(), sql + ": no row");
            nodes.add(rs.getString(1));
            return rs.getString(1);
        }
    }

    static String nodeNow(Connection c, Set<String> nodes) throws SQLException {
        return node(c, nodes, "SELECT " + NODE);
    }

    static long count(Connection c, String where) throws SQLException {
        try (Statement s = c.createStatement();
             ResultSet rs = s.executeQuery("SELECT count(*) FROM " + TABLE + " WHERE " + where)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static void expectDivisionByZero(Connection c) {
        try (Statement s = c.createStatement()) {
            s.executeQuery("SELECT 1/0");
        } catch (SQLException e) {
            check("22012".equals(e.getSQLState()), "expected 22012, got " + e.getSQLState() + " " + e);
            return;
        }
        throw new AssertionError("1/0 did not fail");
    }

    static byte[] megabyte(int seed) {
        byte[] b = new byte[1 << 20];
        for (int i = 0; i < b.length; i++) b[i] = (byte) (i * 7 + seed);
        return b;
    }

    public static void main(String[] args) throws Exception {
        Connection[] holder = new Connection[2];
        run("login", nodes -> {
            holder[0] = connect();
            holder[1] = connect();
            return "scram-sha-256 as " + System.getenv("PGUSER");
        });
        Connection reader = holder[0];
        Connection writer = holder[1];
        readerCases(reader);
        writerCases(writer);
        System.exit(0);
    }

    static void readerCases(Connection c) {
        run("replica_read", nodes -> {
            String n = nodeNow(c, nodes);
            return "first statement ran on " + n;
        });
        run("params", nodes -> {
            String sql = "SELECT " + NODE + ", ?::int, ?::text, ?::numeric, ?::timestamptz, ?::bool,"
                    + " ?::int, ?::int[], ?::text[], ?::jsonb, ?::bytea";
            BigDecimal numeric = new BigDecimal("12345678901234567890.123456789");
            Timestamp ts = Timestamp.from(Instant.parse("2024-02-29T12:34:56.789123Z"));
            String text = "h\u00e9llo 'w\u00f6rld' \\ \"";
            String json = "{\"a\": 1, \"b\": [true, null, \"x\"]}";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                for (int i = 0; i < 12; i++) {
                    byte[] bytes = megabyte(i);
                    Array ints = c.createArrayOf("int4", new Integer[] {1, i, 3});
                    Array texts = c.createArrayOf("text", new String[] {"a", "b c", "d\"e"});
                    ps.setInt(1, i);
                    ps.setString(2, text);
                    ps.setBigDecimal(3, numeric);
                    ps.setTimestamp(4, ts);
                    ps.setBoolean(5, true);
                    ps.setNull(6, Types.INTEGER);
                    ps.setArray(7, ints);
                    ps.setArray(8, texts);
                    ps.setString(9, json);
                    ps.setBytes(10, bytes);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "no row");
                        nodes.add(rs.getString(1));
                        check(rs.getInt(2) == i, "int");
                        check(text.equals(rs.getString(3)), "text " + rs.getString(3));
                        check(numeric.equals(rs.getBigDecimal(4)), "numeric " + rs.getBigDecimal(4));
                        check(ts.equals(rs.getTimestamp(5)), "timestamptz " + rs.getTimestamp(5));
                        check(rs.getBoolean(6), "bool");
                        rs.getInt(7);
                        check(rs.wasNull(), "null");
                        check(Arrays.equals((Integer[]) rs.getArray(8).getArray(), new Integer[] {1, i, 3}), "int[]");
                        check(Arrays.equals((String[]) rs.getArray(9).getArray(), new String[] {"a", "b c", "d\"e"}),
                                "text[]");
                        check(json.equals(rs.getString(10)), "jsonb " + rs.getString(10));
                        check(Arrays.equals(bytes, rs.getBytes(11)), "bytea");
                    }
                }
                check(ps.unwrap(PGStatement.class).isUseServerPrepare(),
                        "not server-prepared after 12 executions");
            }
            return "12 executions, server-prepared";
        });
        run("stream", nodes -> {
            // pgjdbc streams with a portal only outside autocommit; read-only: BEGIN READ ONLY.
            c.setReadOnly(true);
            c.setAutoCommit(false);
            long rows = 0;
            long sum = 0;
            try (Statement s = c.createStatement()) {
                s.setFetchSize(500);
                try (ResultSet rs = s.executeQuery(
                        "SELECT g, " + NODE + " FROM generate_series(1, 10000) g")) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                        nodes.add(rs.getString(2));
                    }
                }
            }
            c.commit();
            c.setAutoCommit(true);
            c.setReadOnly(false);
            check(rows == 10000 && sum == 50005000L, rows + " rows, sum " + sum);
            return "10000 rows, fetch size 500";
        });
    }

    static void writerCases(Connection c) {
        run("write_read_back", nodes -> {
            try (Statement s = c.createStatement()) {
                check(s.executeUpdate("INSERT INTO " + TABLE + " VALUES (100, 'written')") == 1, "insert");
            }
            String n = node(c, nodes, "SELECT " + NODE + ", v FROM " + TABLE + " WHERE id = 100 AND v = 'written'");
            return "read back on " + n;
        });
        run("tx_commit", nodes -> inTx(c, nodes, 101, true));
        run("tx_rollback", nodes -> inTx(c, nodes, 102, false));
        run("error", nodes -> {
            expectDivisionByZero(c);
            nodeNow(c, nodes);
            return "22012, then the session answers";
        });
        run("error_in_tx", nodes -> {
            c.setAutoCommit(false);
            expectDivisionByZero(c);
            c.rollback();
            c.setAutoCommit(true);
            return inTx(c, nodes, 103, true);
        });
        run("nextval", nodes -> {
            node(c, nodes, "SELECT " + NODE + ", nextval('" + TABLE + "_seq')");
            return null;
        });
        run("for_update", nodes -> {
            node(c, nodes, "SELECT " + NODE + ", v FROM " + TABLE + " WHERE id = 1 FOR UPDATE");
            return null;
        });
        run("server_prepared", nodes -> {
            // A read and a write statement alternate, each past prepareThreshold (5): the
            // read's named statement is used wherever the proxy sends the read.
            try (PreparedStatement read = c.prepareStatement("SELECT " + NODE + ", v FROM " + TABLE + " WHERE id = ?");
                 PreparedStatement write = c.prepareStatement("UPDATE " + TABLE + " SET v = ? WHERE id = ?")) {
                for (int i = 0; i < 12; i++) {
                    write.setString(1, "update " + i);
                    write.setInt(2, 2);
                    check(write.executeUpdate() == 1, "update");
                    read.setInt(1, 2);
                    try (ResultSet rs = read.executeQuery()) {
                        check(rs.next(), "no row");
                        nodes.add(rs.getString(1));
                        check(("update " + i).equals(rs.getString(2)), "read " + rs.getString(2) + " after update " + i);
                    }
                }
                check(read.unwrap(PGStatement.class).isUseServerPrepare()
                        && write.unwrap(PGStatement.class).isUseServerPrepare(), "not server-prepared");
            }
            return "12 updates and reads, server-prepared";
        });
        run("batch", nodes -> {
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, ?)")) {
                for (int i = 0; i < 100; i++) {
                    ps.setInt(1, 1000 + i);
                    ps.setString(2, "batch " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                check(counts.length == 100, counts.length + " counts");
            }
            long n = count(c, "id BETWEEN 1000 AND 1099");
            check(n == 100, n + " rows");
            return "100 inserts in one executeBatch";
        });
        run("replica_after_write", nodes -> replicaAfterWrite(c, nodes));
    }

    /** Inserts row `id` in a transaction, reads there, commits or rolls back, checks the row. */
    static String inTx(Connection c, Set<String> nodes, int id, boolean commit) throws SQLException {
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + TABLE + " VALUES (?, 'in a transaction')")) {
            ps.setInt(1, id);
            ps.executeUpdate();
        }
        nodeNow(c, nodes);
        if (commit) {
            c.commit();
        } else {
            c.rollback();
        }
        c.setAutoCommit(true);
        check(count(c, "id = " + id) == (commit ? 1 : 0), "rows with id " + id);
        return null;
    }

    static String replicaAfterWrite(Connection c, Set<String> nodes) throws Exception {
        long deadline = System.nanoTime() + 20_000_000_000L;
        int tries = 0;
        while (true) {
            tries++;
            Set<String> seen = new LinkedHashSet<>();
            String n = nodeNow(c, seen);
            if (n.equals("db02") || System.nanoTime() > deadline) {
                nodes.add(n);
                return tries + " reads";
            }
            Thread.sleep(50);
        }
    }
}
