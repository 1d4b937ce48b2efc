// The client suite's cases for pgx v4 (see tests/drivers/README.md): one tab-separated line per
// case. Built offline against Debian's packaged sources (GOPATH=/usr/share/gocode, GO111MODULE=off).
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
)

const node = "current_setting('cluster_name')"

var (
	ctx   = context.Background()
	table = os.Getenv("PGREPL_TABLE")
)

// nodes records, in order, the nodes a case's reads ran on.
type nodes []string

func (n *nodes) add(name string) {
	for _, seen := range *n {
		if seen == name {
			return
		}
	}
	*n = append(*n, name)
}

func run(name string, body func(n *nodes) (string, error)) {
	var n nodes
	detail, err := body(&n)
	ok := "ok"
	if err != nil {
		ok = "fail"
		detail = err.Error()
	}
	where := "-"
	if len(n) > 0 {
		where = strings.Join(n, ",")
	}
	detail = strings.Join(strings.Fields(detail), " ")
	fmt.Printf("pgx\t%s\t%s\t%s\t%s\n", name, ok, where, detail)
}

func connect() (*pgx.Conn, error) {
	// An empty connection string: host, port, user, password, database from PG* variables.
	config, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, config)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...interface{}) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...interface{}) pgx.Row
}

// readNode runs sql (first column cluster_name, any others ignored) and records where it ran.
func readNode(q querier, n *nodes, sql string, args ...interface{}) (string, error) {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return "", fmt.Errorf("%s: %w", sql, err)
	}
	defer rows.Close()
	if !rows.Next() {
		return "", fmt.Errorf("%s: no row (%v)", sql, rows.Err())
	}
	values, err := rows.Values()
	if err != nil {
		return "", err
	}
	name, _ := values[0].(string)
	n.add(name)
	return name, nil
}

func count(c *pgx.Conn, where string) (int64, error) {
	var k int64
	err := c.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE "+where).Scan(&k)
	return k, err
}

func expectDivisionByZero(q querier) error {
	var x int
	err := q.QueryRow(ctx, "SELECT 1/0").Scan(&x)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
		return fmt.Errorf("expected 22012, got %v", err)
	}
	return nil
}

func megabyte(seed int) []byte {
	b := make([]byte, 1<<20)
	for i := range b {
		b[i] = byte(i*7 + seed)
	}
	return b
}

func main() {
	var reader, writer *pgx.Conn
	run("login", func(n *nodes) (string, error) {
		var err error
		if reader, err = connect(); err != nil {
			return "", err
		}
		writer, err = connect()
		return "scram-sha-256 as " + os.Getenv("PGUSER"), err
	})
	if reader == nil || writer == nil {
		os.Exit(1)
	}
	readerCases(reader)
	writerCases(writer)
}

func readerCases(c *pgx.Conn) {
	run("replica_read", func(n *nodes) (string, error) {
		name, err := readNode(c, n, "SELECT "+node)
		return "first statement ran on " + name, err
	})
	run("params", func(n *nodes) (string, error) {
		sql := "SELECT " + node + ", $1::int, $2::text, $3::numeric, $4::timestamptz, $5::bool, $6::int," +
			" $7::int[], $8::text[], $9::jsonb, $10::bytea"
		text := "h\u00e9llo 'w\u00f6rld' \\ \""
		ts := time.Date(2024, 2, 29, 12, 34, 56, 789123000, time.UTC)
		json := map[string]interface{}{"a": 1.0, "b": []interface{}{true, nil, "x"}}
		for i := 0; i < 12; i++ {
			var numeric pgtype.Numeric
			if err := numeric.Set("12345678901234567890.123456789"); err != nil {
				return "", err
			}
			data := megabyte(i)
			var (
				name, gotText string
				gotInt        int32
				gotNumeric    pgtype.Numeric
				gotTs         time.Time
				gotBool       bool
				gotNull       *int32
				gotInts       []int32
				gotTexts      []string
				gotJSON       map[string]interface{}
				gotBytes      []byte
			)
			err := c.QueryRow(ctx, sql, i, text, &numeric, ts, true, nil, []int32{1, int32(i), 3},
				[]string{"a", "b c", "d\"e"}, json, data).Scan(&name, &gotInt, &gotText, &gotNumeric,
				&gotTs, &gotBool, &gotNull, &gotInts, &gotTexts, &gotJSON, &gotBytes)
			if err != nil {
				return "", err
			}
			n.add(name)
			switch {
			case gotInt != int32(i):
				return "", fmt.Errorf("int %d", gotInt)
			case gotText != text:
				return "", fmt.Errorf("text %q", gotText)
			case gotNumeric.Int.Cmp(numeric.Int) != 0 || gotNumeric.Exp != numeric.Exp:
				return "", fmt.Errorf("numeric %v", gotNumeric)
			case !gotTs.Equal(ts):
				return "", fmt.Errorf("timestamptz %v", gotTs)
			case !gotBool:
				return "", fmt.Errorf("bool")
			case gotNull != nil:
				return "", fmt.Errorf("null %d", *gotNull)
			case fmt.Sprint(gotInts) != fmt.Sprint([]int32{1, int32(i), 3}):
				return "", fmt.Errorf("int[] %v", gotInts)
			case strings.Join(gotTexts, "|") != "a|b c|d\"e":
				return "", fmt.Errorf("text[] %v", gotTexts)
			case fmt.Sprint(gotJSON) != fmt.Sprint(json):
				return "", fmt.Errorf("jsonb %v", gotJSON)
			case !bytes.Equal(gotBytes, data):
				return "", fmt.Errorf("bytea differs")
			}
		}
		return "12 executions", nil
	})
	run("stream", func(n *nodes) (string, error) {
		rows, err := c.Query(ctx, "SELECT g, "+node+" FROM generate_series(1, 10000) g")
		if err != nil {
			return "", err
		}
		defer rows.Close()
		var total, sum int64
		for rows.Next() {
			var g int64
			var name string
			if err := rows.Scan(&g, &name); err != nil {
				return "", err
			}
			total++
			sum += g
			n.add(name)
		}
		if err := rows.Err(); err != nil {
			return "", err
		}
		if total != 10000 || sum != 50005000 {
			return "", fmt.Errorf("%d rows, sum %d", total, sum)
		}
		return "10000 rows iterated as they arrive", nil
	})
}

func writerCases(c *pgx.Conn) {
	run("write_read_back", func(n *nodes) (string, error) {
		if _, err := c.Exec(ctx, "INSERT INTO "+table+" VALUES (100, 'written')"); err != nil {
			return "", err
		}
		name, err := readNode(c, n, "SELECT "+node+" FROM "+table+" WHERE id = 100 AND v = 'written'")
		return "read back on " + name, err
	})
	inTx := func(n *nodes, id int, commit bool) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, 'in a transaction')", id); err != nil {
			return err
		}
		if _, err := readNode(tx, n, "SELECT "+node); err != nil {
			return err
		}
		if commit {
			err = tx.Commit(ctx)
		} else {
			err = tx.Rollback(ctx)
		}
		if err != nil {
			return err
		}
		want := int64(0)
		if commit {
			want = 1
		}
		got, err := count(c, fmt.Sprintf("id = %d", id))
		if err == nil && got != want {
			err = fmt.Errorf("%d rows with id %d, expected %d", got, id, want)
		}
		return err
	}
	run("tx_commit", func(n *nodes) (string, error) { return "", inTx(n, 101, true) })
	run("tx_rollback", func(n *nodes) (string, error) { return "", inTx(n, 102, false) })
	run("error", func(n *nodes) (string, error) {
		if err := expectDivisionByZero(c); err != nil {
			return "", err
		}
		_, err := readNode(c, n, "SELECT "+node)
		return "22012, then the session answers", err
	})
	run("error_in_tx", func(n *nodes) (string, error) {
		tx, err := c.Begin(ctx)
		if err != nil {
			return "", err
		}
		if err := expectDivisionByZero(tx); err != nil {
			return "", err
		}
		if err := tx.Rollback(ctx); err != nil {
			return "", err
		}
		return "", inTx(n, 103, true)
	})
	run("nextval", func(n *nodes) (string, error) {
		_, err := readNode(c, n, "SELECT "+node+", nextval('"+table+"_seq')")
		return "", err
	})
	run("for_update", func(n *nodes) (string, error) {
		_, err := readNode(c, n, "SELECT "+node+", v FROM "+table+" WHERE id = 1 FOR UPDATE")
		return "", err
	})
	run("statement_cache", func(n *nodes) (string, error) {
		// pgx prepares every statement once and keeps it in its cache (named lrupsc_*): a read and
		// a write alternate, each run 12 times by name wherever the proxy sends it.
		for i := 0; i < 12; i++ {
			v := fmt.Sprintf("update %d", i)
			if _, err := c.Exec(ctx, "UPDATE "+table+" SET v = $1 WHERE id = $2", v, 2); err != nil {
				return "", err
			}
			var name, got string
			if err := c.QueryRow(ctx, "SELECT "+node+", v FROM "+table+" WHERE id = $1", 2).Scan(&name, &got); err != nil {
				return "", err
			}
			n.add(name)
			if got != v {
				return "", fmt.Errorf("read %q after %q", got, v)
			}
		}
		if k := c.StatementCache().Len(); k < 2 {
			return "", fmt.Errorf("statement cache holds %d statements", k)
		}
		return fmt.Sprintf("statement cache holds %d statements", c.StatementCache().Len()), nil
	})
	run("prepared", func(n *nodes) (string, error) {
		if _, err := c.Prepare(ctx, "by_id", "SELECT "+node+", v FROM "+table+" WHERE id = $1"); err != nil {
			return "", err
		}
		for i := 0; i < 12; i++ {
			var name, v string
			if err := c.QueryRow(ctx, "by_id", 1).Scan(&name, &v); err != nil {
				return "", err
			}
			n.add(name)
			if v != "row 1" {
				return "", fmt.Errorf("read %q", v)
			}
		}
		return "12 executions of a named statement", c.Deallocate(ctx, "by_id")
	})
	run("copy_from", func(n *nodes) (string, error) {
		rows := make([][]interface{}, 10000)
		for i := range rows {
			rows[i] = []interface{}{int32(i), fmt.Sprintf("copied %d", i)}
		}
		copied, err := c.CopyFrom(ctx, pgx.Identifier{table + "_copy"}, []string{"a", "b"}, pgx.CopyFromRows(rows))
		if err != nil {
			return "", err
		}
		var k int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+table+"_copy").Scan(&k); err != nil {
			return "", err
		}
		if copied != 10000 || k != 10000 {
			return "", fmt.Errorf("copied %d, table has %d", copied, k)
		}
		return "10000 rows in binary COPY", nil
	})
	run("replica_after_write", func(n *nodes) (string, error) {
		deadline := time.Now().Add(20 * time.Second)
		for tries := 1; ; tries++ {
			var name string
			if err := c.QueryRow(ctx, "SELECT "+node).Scan(&name); err != nil {
				return "", err
			}
			if name == "db02" || time.Now().After(deadline) {
				n.add(name)
				return fmt.Sprintf("%d reads", tries), nil
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
