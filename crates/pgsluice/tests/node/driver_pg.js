// node-postgres (npm `pg`) in the driver matrix (docs/clients.md), run by
// tests/drivers.rs through pgsluice in transaction pooling with SCRAM:
//   - 400 named prepared queries from 20 concurrent clients (issue 19's acceptance):
//     each client its own pg.Client, query objects {name, text, values}; every client
//     uses the same names with its own texts, and every result is checked;
//   - a committed transaction, an error mid-transaction (25P02 until ROLLBACK);
//   - a cancel of pg_sleep(10) (Client.cancel, 57014).
// node-postgres has no COPY of its own (that is the pg-copy-streams package).
// Prints OK.
const { Client, Query } = require('pg');

const cfg = {
  host: process.env.PGS_HOST,
  port: Number(process.env.PGS_PORT),
  user: 'app',
  password: 'secret',
  database: 'appdb',
};
const CLIENTS = 20;
const PER_CLIENT = 20;
const SLEEP = 'select pg_sleep(10)';

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function expectError(client, sql, code) {
  try {
    await client.query(sql);
  } catch (e) {
    assert(e.code === code, `${sql}: want ${code}, got ${e.code} (${e.message})`);
    return;
  }
  throw new Error(`${sql} succeeded, want ${code}`);
}

async function namedWorker(k) {
  const c = new Client(cfg);
  await c.connect();
  let done = 0;
  try {
    for (let i = 0; i < PER_CLIENT; i++) {
      if (i % 2 === 0) {
        const r = await c.query({
          name: 'mul',
          text: `select $1::int * ${k + 1} as v, $2::text as tag`,
          values: [i, `c${k}`],
        });
        assert(r.rows.length === 1 && r.rows[0].v === i * (k + 1) && r.rows[0].tag === `c${k}`,
          `client ${k} mul ${i}: ${JSON.stringify(r.rows)}`);
      } else {
        const r = await c.query({
          name: 'cat',
          text: `select $1::text || '-${k}' as s`,
          values: [`q${i}`],
        });
        assert(r.rows.length === 1 && r.rows[0].s === `q${i}-${k}`,
          `client ${k} cat ${i}: ${JSON.stringify(r.rows)}`);
      }
      done++;
    }
  } finally {
    await c.end();
  }
  return done;
}

async function waitActive(watcher, needle) {
  const deadline = Date.now() + 15000;
  while (Date.now() < deadline) {
    const r = await watcher.query(
      "select count(*)::int as n from pg_stat_activity where state = 'active' " +
        'and strpos(query, $1) > 0 and pid <> pg_backend_pid()',
      [needle],
    );
    if (r.rows[0].n > 0) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  throw new Error(`no backend ran ${needle}`);
}

async function main() {
  const c = new Client(cfg);
  await c.connect();
  await c.query('create table matrix(id int primary key, label text)');

  const counts = await Promise.all([...Array(CLIENTS).keys()].map(namedWorker));
  const total = counts.reduce((a, b) => a + b, 0);
  assert(total === CLIENTS * PER_CLIENT, `ran ${total} named queries`);
  console.log(`named_queries=${total}`);

  // A transaction, committed.
  await c.query('BEGIN');
  for (const id of [1, 2, 3]) {
    await c.query({ name: 'ins', text: "insert into matrix values ($1, 'tx')", values: [id] });
  }
  await c.query('COMMIT');
  const other = new Client(cfg);
  await other.connect();
  const n = await other.query("select count(*)::int as n from matrix where label = 'tx'");
  assert(n.rows[0].n === 3, `committed rows: ${n.rows[0].n}`);

  // An error mid-transaction.
  await c.query('BEGIN');
  await expectError(c, 'select 1/0', '22012');
  await expectError(c, 'select 1', '25P02');
  await c.query('ROLLBACK');
  assert((await c.query('select 42 as v')).rows[0].v === 42, 'after rollback');

  // Cancel.
  const start = Date.now();
  const q = c.query(new Query(SLEEP));
  const failed = new Promise((resolve, reject) => {
    q.on('error', resolve);
    q.on('end', () => reject(new Error('pg_sleep(10) was not cancelled')));
  });
  await waitActive(other, SLEEP);
  new Client(cfg).cancel(c, q);
  const err = await failed;
  assert(err.code === '57014', `cancel: ${err.code} ${err.message}`);
  const elapsed = Date.now() - start;
  assert(elapsed < 9500, `cancel took ${elapsed} ms`);
  assert((await c.query('select 7 as v')).rows[0].v === 7, 'after cancel');

  await other.end();
  await c.end();
  console.log('OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
