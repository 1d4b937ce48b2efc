// The client suite's cases for node-postgres (see tests/drivers/README.md): one tab-separated line
// per case. Debian's node-pg, unpacked by scripts/install-native-drivers.sh, comes from NODE_PATH.
'use strict';
const assert = require('assert');
const { Client } = require('pg');
const Cursor = require('pg-cursor');

const TABLE = process.env.PGREPL_TABLE;
const NODE = "current_setting('cluster_name')";

async function run(name, body) {
  const nodes = new Set();
  let ok = 'ok';
  let detail;
  try {
    detail = await body(nodes);
  } catch (e) {
    ok = 'fail';
    detail = `${e.code || ''} ${e.message}`;
  }
  const where = nodes.size ? [...nodes].join(',') : '-';
  console.log(['node-pg', name, ok, where, String(detail || '').replace(/\s+/g, ' ')].join('\t'));
}

// Runs sql (first column cluster_name), records and returns where it ran.
async function readNode(client, nodes, sql, values) {
  const res = await client.query({ text: sql, values, rowMode: 'array' });
  assert.ok(res.rows.length > 0, `${sql}: no row`);
  nodes.add(res.rows[0][0]);
  return res.rows[0][0];
}

async function count(client, where) {
  const res = await client.query(`SELECT count(*)::int AS n FROM ${TABLE} WHERE ${where}`);
  return res.rows[0].n;
}

async function expectDivisionByZero(client) {
  await assert.rejects(client.query('SELECT 1/0'), (e) => e.code === '22012');
}

function megabyte(seed) {
  const b = Buffer.alloc(1 << 20);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed) & 0xff;
  return b;
}

async function readerCases(c) {
  await run('replica_read', async (nodes) => `first statement ran on ${await readNode(c, nodes, `SELECT ${NODE}`)}`);
  await run('params', async (nodes) => {
    // A named query: parsed once on the first execution, then only bound and executed.
    const text = `SELECT ${NODE}, $1::int, $2::text, $3::numeric, $4::timestamptz, $5::bool, $6::int,`
      + ' $7::int[], $8::text[], $9::jsonb, $10::bytea';
    const str = "h\u00e9llo 'w\u00f6rld' \\ \"";
    const numeric = '12345678901234567890.123456789';
    const ts = new Date('2024-02-29T12:34:56.789Z');
    const json = { a: 1, b: [true, null, 'x'] };
    for (let i = 0; i < 12; i++) {
      const bytes = megabyte(i);
      const res = await c.query({
        name: 'params',
        text,
        values: [i, str, numeric, ts, true, null, [1, i, 3], ['a', 'b c', 'd"e'], JSON.stringify(json), bytes],
        rowMode: 'array',
      });
      const r = res.rows[0];
      nodes.add(r[0]);
      assert.strictEqual(r[1], i, 'int');
      assert.strictEqual(r[2], str, 'text');
      assert.strictEqual(r[3], numeric, 'numeric');
      assert.strictEqual(r[4].getTime(), ts.getTime(), 'timestamptz');
      assert.strictEqual(r[5], true, 'bool');
      assert.strictEqual(r[6], null, 'null');
      assert.deepStrictEqual(r[7], [1, i, 3], 'int[]');
      assert.deepStrictEqual(r[8], ['a', 'b c', 'd"e'], 'text[]');
      assert.deepStrictEqual(r[9], json, 'jsonb');
      assert.ok(bytes.equals(r[10]), 'bytea');
    }
    return '12 executions of a named query';
  });
  await run('stream', async (nodes) => {
    // pg-cursor: one portal, Execute with a row limit and Flush, no Sync until the end.
    const cursor = c.query(new Cursor(`SELECT g, ${NODE} FROM generate_series(1, 10000) g`, [], { rowMode: 'array' }));
    let rows = 0;
    let sum = 0;
    let reads = 0;
    for (;;) {
      const batch = await cursor.read(500);
      if (batch.length === 0) break;
      reads++;
      for (const [g, name] of batch) {
        rows++;
        sum += g;
        nodes.add(name);
      }
    }
    await cursor.close();
    assert.ok(rows === 10000 && sum === 50005000, `${rows} rows, sum ${sum}`);
    return `10000 rows in ${reads} pg-cursor reads`;
  });
}

async function inTx(c, nodes, id, commit) {
  await c.query('BEGIN');
  await c.query(`INSERT INTO ${TABLE} VALUES ($1, 'in a transaction')`, [id]);
  await readNode(c, nodes, `SELECT ${NODE}`);
  await c.query(commit ? 'COMMIT' : 'ROLLBACK');
  assert.strictEqual(await count(c, `id = ${id}`), commit ? 1 : 0, `rows with id ${id}`);
}

async function writerCases(c) {
  await run('write_read_back', async (nodes) => {
    await c.query(`INSERT INTO ${TABLE} VALUES (100, 'written')`);
    return `read back on ${await readNode(c, nodes, `SELECT ${NODE} FROM ${TABLE} WHERE id = 100 AND v = 'written'`)}`;
  });
  await run('tx_commit', (nodes) => inTx(c, nodes, 101, true));
  await run('tx_rollback', (nodes) => inTx(c, nodes, 102, false));
  await run('error', async (nodes) => {
    await expectDivisionByZero(c);
    await readNode(c, nodes, `SELECT ${NODE}`);
    return '22012, then the session answers';
  });
  await run('error_in_tx', async (nodes) => {
    await c.query('BEGIN');
    await expectDivisionByZero(c);
    await c.query('ROLLBACK');
    await inTx(c, nodes, 103, true);
  });
  await run('nextval', (nodes) => readNode(c, nodes, `SELECT ${NODE}, nextval('${TABLE}_seq')`).then(() => ''));
  await run('for_update', (nodes) => readNode(c, nodes, `SELECT ${NODE}, v FROM ${TABLE} WHERE id = 1 FOR UPDATE`).then(() => ''));
  await run('named_query', async (nodes) => {
    // A named read and a named write alternate, each parsed once and run 12 times.
    for (let i = 0; i < 12; i++) {
      const v = `update ${i}`;
      const upd = await c.query({ name: 'upd', text: `UPDATE ${TABLE} SET v = $1 WHERE id = $2`, values: [v, 2] });
      assert.strictEqual(upd.rowCount, 1, 'update');
      const res = await c.query({ name: 'get', text: `SELECT ${NODE}, v FROM ${TABLE} WHERE id = $1`, values: [2], rowMode: 'array' });
      nodes.add(res.rows[0][0]);
      assert.strictEqual(res.rows[0][1], v, 'read after update');
    }
    return '12 updates and reads by name';
  });
  await run('replica_after_write', async (nodes) => {
    const deadline = Date.now() + 20000;
    for (let tries = 1; ; tries++) {
      const res = await c.query({ text: `SELECT ${NODE}`, rowMode: 'array' });
      const name = res.rows[0][0];
      if (name === 'db02' || Date.now() > deadline) {
        nodes.add(name);
        return `${tries} reads`;
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  });
}

async function main() {
  const reader = new Client();
  const writer = new Client();
  await run('login', async () => {
    await reader.connect();
    await writer.connect();
    return `scram-sha-256 as ${process.env.PGUSER}`;
  });
  await readerCases(reader);
  await writerCases(writer);
  await reader.end();
  await writer.end();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
