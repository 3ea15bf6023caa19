// LISTEN/NOTIFY with node-postgres through pgsluice in transaction mode:
// client.on('notification').
const { Client } = require('pg');

const cfg = {
  host: process.env.PGS_HOST,
  port: Number(process.env.PGS_PORT),
  user: 'app',
  password: 'secret',
  database: 'appdb',
};

async function main() {
  const listener = new Client(cfg);
  await listener.connect();
  const got = [];
  let want = 0;
  let wake = null;
  listener.on('notification', (m) => {
    got.push([m.channel, m.payload]);
    if (wake && got.length >= want) wake();
  });
  const until = (n) => new Promise((resolve, reject) => {
    want = n;
    if (got.length >= n) return resolve();
    const timer = setTimeout(() => reject(new Error(`timed out: ${JSON.stringify(got)}`)), 15000);
    wake = () => { clearTimeout(timer); wake = null; resolve(); };
  });
  await listener.query('LISTEN nodech');
  const notifier = new Client(cfg);
  await notifier.connect();
  for (let i = 0; i < 5; i++) {
    await notifier.query(`NOTIFY nodech, '${i}'`);
  }
  await until(5);
  // Work on the listener in between, then more.
  const r = await listener.query('select 41 + 1 as x');
  if (r.rows[0].x !== 42) throw new Error('bad result');
  await notifier.query("select pg_notify('nodech', 'later')");
  await until(6);
  const expect = [0, 1, 2, 3, 4].map((i) => ['nodech', String(i)]).concat([['nodech', 'later']]);
  if (JSON.stringify(got) !== JSON.stringify(expect)) {
    throw new Error(`got ${JSON.stringify(got)}`);
  }
  await listener.query('UNLISTEN nodech');
  await listener.end();
  await notifier.end();
  console.log('OK');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
