# The client suite's cases for ruby-pg (see tests/drivers/README.md): one tab-separated line per case.
require 'pg'
require 'bigdecimal'
require 'json'

TABLE = ENV.fetch('PGREPL_TABLE')
NODE = "current_setting('cluster_name')"

def run(name)
  nodes = []
  ok = 'ok'
  begin
    detail = yield nodes
  rescue StandardError => e
    ok = 'fail'
    state = e.respond_to?(:result) && e.result ? e.result.error_field(PG::PG_DIAG_SQLSTATE) : nil
    detail = "#{state} #{e.class}: #{e.message}"
  end
  where = nodes.empty? ? '-' : nodes.uniq.join(',')
  puts ['ruby-pg', name, ok, where, detail.to_s.gsub(/\s+/, ' ')].join("\t")
  $stdout.flush
end

def check(cond, what)
  raise what unless cond
end

# Runs sql (first column cluster_name), records and returns where it ran.
def read_node(conn, nodes, sql, params = [])
  res = conn.exec_params(sql, params)
  check(res.ntuples.positive?, "#{sql}: no row")
  nodes << res.getvalue(0, 0)
  res.getvalue(0, 0)
end

def count(conn, where)
  conn.exec("SELECT count(*) FROM #{TABLE} WHERE #{where}").getvalue(0, 0).to_i
end

def expect_division_by_zero(conn)
  conn.exec('SELECT 1/0')
  raise '1/0 did not fail'
rescue PG::DivisionByZero => e
  check(e.result.error_field(PG::PG_DIAG_SQLSTATE) == '22012', e.message)
end

def megabyte(seed)
  Array.new(1 << 20) { |i| (i * 7 + seed) & 0xff }.pack('C*')
end

def reader_cases(conn)
  run('replica_read') { |nodes| "first statement ran on #{read_node(conn, nodes, "SELECT #{NODE}")}" }
  run('params') do |nodes|
    # Type maps encode the parameters (arrays, a Hash as jsonb, a binary String as bytea) and
    # decode the results (BinaryData marks a String as bytea); a statement prepared once by name, run 12 times.
    queries = PG::BasicTypeMapForQueries.new(conn)
    results = PG::BasicTypeMapForResults.new(conn)
    conn.prepare('params', "SELECT #{NODE}, $1::int, $2::text, $3::numeric, $4::timestamptz, $5::bool, " \
                           '$6::int, $7::int[], $8::text[], $9::jsonb, $10::bytea')
    text = "h\u00e9llo 'w\u00f6rld' \\ \""
    numeric = BigDecimal('12345678901234567890.123456789')
    ts = Time.utc(2024, 2, 29, 12, 34, Rational(56_789_123, 1_000_000))
    json = { 'a' => 1, 'b' => [true, nil, 'x'] }
    12.times do |i|
      bytes = megabyte(i)
      res = conn.exec_prepared('params', [i, text, numeric, ts, true, nil, [1, i, 3], ['a', 'b c', 'd"e'], json,
                                          PG::BasicTypeMapForQueries::BinaryData.new(bytes)], 0, queries)
      res.type_map = results
      row = res.values.first
      nodes << row[0]
      check(row[1] == i, "int #{row[1].inspect}")
      check(row[2] == text, "text #{row[2].inspect}")
      check(row[3] == numeric, "numeric #{row[3].inspect}")
      check(row[4] == ts, "timestamptz #{row[4].inspect}")
      check(row[5] == true, "bool #{row[5].inspect}")
      check(row[6].nil?, "null #{row[6].inspect}")
      check(row[7] == [1, i, 3], "int[] #{row[7].inspect}")
      check(row[8] == ['a', 'b c', 'd"e'], "text[] #{row[8].inspect}")
      check(row[9] == json, "jsonb #{row[9].inspect}")
      check(row[10] == bytes, 'bytea differs')
    end
    conn.exec('DEALLOCATE params')
    '12 executions of a prepared statement with basic type maps'
  end
  run('stream') do |nodes|
    # Single-row mode: the rows are taken one by one as they arrive.
    conn.send_query("SELECT g, #{NODE} FROM generate_series(1, 10000) g")
    conn.set_single_row_mode
    rows = 0
    sum = 0
    while (res = conn.get_result)
      res.check
      res.each_row do |g, name|
        rows += 1
        sum += g.to_i
        nodes << name
      end
      res.clear
    end
    check(rows == 10_000 && sum == 50_005_000, "#{rows} rows, sum #{sum}")
    '10000 rows in single-row mode'
  end
end

def in_tx(conn, nodes, id, commit)
  conn.exec('BEGIN')
  conn.exec_params("INSERT INTO #{TABLE} VALUES ($1, 'in a transaction')", [id])
  read_node(conn, nodes, "SELECT #{NODE}")
  conn.exec(commit ? 'COMMIT' : 'ROLLBACK')
  check(count(conn, "id = #{id}") == (commit ? 1 : 0), "rows with id #{id}")
  nil
end

def writer_cases(conn)
  run('write_read_back') do |nodes|
    conn.exec("INSERT INTO #{TABLE} VALUES (100, 'written')")
    "read back on #{read_node(conn, nodes, "SELECT #{NODE} FROM #{TABLE} WHERE id = 100 AND v = 'written'")}"
  end
  run('tx_commit') { |nodes| in_tx(conn, nodes, 101, true) }
  run('tx_rollback') { |nodes| in_tx(conn, nodes, 102, false) }
  run('error') do |nodes|
    expect_division_by_zero(conn)
    read_node(conn, nodes, "SELECT #{NODE}")
    '22012, then the session answers'
  end
  run('error_in_tx') do |nodes|
    conn.exec('BEGIN')
    expect_division_by_zero(conn)
    conn.exec('ROLLBACK')
    in_tx(conn, nodes, 103, true)
  end
  run('nextval') { |nodes| read_node(conn, nodes, "SELECT #{NODE}, nextval('#{TABLE}_seq')") && nil }
  run('for_update') { |nodes| read_node(conn, nodes, "SELECT #{NODE}, v FROM #{TABLE} WHERE id = 1 FOR UPDATE") && nil }
  run('prepared') do |nodes|
    # A prepared read and a prepared write alternate, each run 12 times by name.
    conn.prepare('upd', "UPDATE #{TABLE} SET v = $1 WHERE id = $2")
    conn.prepare('get', "SELECT #{NODE}, v FROM #{TABLE} WHERE id = $1")
    12.times do |i|
      v = "update #{i}"
      check(conn.exec_prepared('upd', [v, 2]).cmd_tuples == 1, 'update')
      res = conn.exec_prepared('get', [2])
      nodes << res.getvalue(0, 0)
      check(res.getvalue(0, 1) == v, "read #{res.getvalue(0, 1)} after #{v}")
    end
    '12 updates and reads by name'
  end
  run('copy') do |_nodes|
    encoder = PG::TextEncoder::CopyRow.new
    conn.copy_data("COPY #{TABLE}_copy (a, b) FROM STDIN", encoder) do
      10_000.times { |i| conn.put_copy_data([i, "copied #{i}\ttab"]) }
    end
    n = conn.exec("SELECT count(*) FROM #{TABLE}_copy WHERE b LIKE '%\ttab'").getvalue(0, 0).to_i
    check(n == 10_000, "#{n} rows copied")
    '10000 rows with copy_data'
  end
  run('replica_after_write') do |nodes|
    deadline = Time.now + 20
    tries = 0
    loop do
      tries += 1
      name = conn.exec("SELECT #{NODE}").getvalue(0, 0)
      if name == 'db02' || Time.now > deadline
        nodes << name
        break
      end
      sleep 0.05
    end
    "#{tries} reads"
  end
end

reader = writer = nil
run('login') do
  reader = PG.connect
  writer = PG.connect
  "scram-sha-256 as #{ENV.fetch('PGUSER')}"
end
exit 1 unless reader && writer
reader_cases(reader)
writer_cases(writer)
