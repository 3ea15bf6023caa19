#!/usr/bin/env python3
"""The chaos soak's load, chaos and checks (run by scripts/soak, which sets up).

Timeline: warm-up (load, no chaos; pgsluice's RSS baseline at its end), chaos (the
seeded schedule), a quiet tail, stop, settle, checks. See docs/reliability.md.

The canary. pgsluice is configured with `track_extra_parameters = soak.canary`, so a
session-level `SET soak.canary` is carried per client: pgsluice reads it back after the
transaction and, before each later transaction, makes the server connection's value
match the client's (`set_config`, or `RESET` when the client has none). Each driver
connection owns the values `c<client>.<connection>.<generation>`; at the start of each
transaction it reads `current_setting('soak.canary', true)`, which must be exactly what
its own committed SETs left (empty before the first). Another connection's value means a
server connection was handed over dirty; an own value other than the expected one (or
none) means its carried state was lost. pgbench clients never set it: their script
records any non-empty value it sees in table soak_dirty.
"""

import argparse
import asyncio
import collections
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import asyncpg
import psycopg

REQ_TIMEOUT = 60.0  # a request that neither answers nor errors by then is a hang
CONNECT_TIMEOUT = 30.0
SETTLE = 15.0  # seconds between the end of the load and the checks
RSS_FACTOR, RSS_SLACK_MB = 1.25, 8  # final RSS <= baseline * factor + slack
DRIVERS = [("asyncpg", 8), ("psycopg", 6), ("psycopg-simple", 6)]
PGBENCH = [("simple", 5), ("extended", 5), ("prepared", 5)]
PGBENCH_RATE = 150  # transactions per second per pgbench stream (-R)
PROCS = []  # the pgsluice processes this script started
NO_SQLSTATE = "conn"  # error class of failures without a SQLSTATE (socket closed ...)


class Hang(Exception):
    """A request that got neither an answer nor an error within its timeout."""


class Ctx:
    """Everything the tasks share."""

    def __init__(self, a):
        self.a = a
        self.t0 = time.monotonic()
        self.stop = asyncio.Event()
        self.log_file = open(os.path.join(a.out, "soak.log"), "a", buffering=1)
        self.stats = {}  # name -> Stats
        self.pid = None  # the current pgsluice
        self.rss = []  # (t, pid, kB)
        self.failures = []  # strings: failed checks found during the run
        self.events = collections.Counter()
        self.pgbench = {}  # mode -> Counter

    def log(self, msg):
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def fail(self, msg):
        self.failures.append(msg)
        self.log("FAIL: " + msg)

    def dsn(self, user="app", db="app"):
        return dict(host="127.0.0.1", port=self.a.port, user=user, password=user, database=db)


class Stats:
    def __init__(self, kind):
        self.kind = kind
        self.requests = 0
        self.txns = 0
        self.committed = 0  # increments of the client's own row known committed
        self.ambiguous = 0  # increments whose COMMIT failed (outcome unknown)
        self.expected_errors = 0  # the deliberate division by zero
        self.errors = collections.Counter()  # SQLSTATE (or "conn") -> count
        self.hangs = 0
        self.dirty = 0  # canary of another connection
        self.lost = 0  # own canary lost or stale
        self.connects = 0
        self.samples = []  # canary violations, the first few
        self.first = {}  # error class -> its first message


def sqlstate(e, st=None):
    code = getattr(e, "sqlstate", None)
    code = code if code else f"{NO_SQLSTATE}:{type(e).__name__}"
    if st is not None:
        st.errors[code] += 1
        st.first.setdefault(code, str(e).splitlines()[0][:160] if str(e) else repr(e))
    return code


async def timed(coro, timeout=REQ_TIMEOUT):
    try:
        return await asyncio.wait_for(coro, timeout)
    except asyncio.TimeoutError:
        raise Hang() from None


# ---------------------------------------------------------------- driver clients


class Conn:
    """One driver connection: asyncpg, or psycopg 3 (extended or simple protocol)."""

    def __init__(self, kind):
        self.kind = kind
        self.c = None

    async def open(self, ctx):
        d = ctx.dsn()
        if self.kind == "asyncpg":
            self.c = await asyncpg.connect(**d, timeout=CONNECT_TIMEOUT)
        else:
            extra = {"cursor_factory": psycopg.AsyncClientCursor} if self.kind == "psycopg-simple" else {}
            self.c = await psycopg.AsyncConnection.connect(
                host=d["host"], port=d["port"], user=d["user"], password=d["password"],
                dbname=d["database"], autocommit=True, connect_timeout=int(CONNECT_TIMEOUT), **extra)

    async def execute(self, sql, *args):
        if self.kind == "asyncpg":
            n = iter(range(1, 10))
            return await self.c.execute(re.sub("%s", lambda _: f"${next(n)}", sql), *args)
        return await self.c.execute(sql, args or None)

    async def value(self, sql, *args):
        if self.kind == "asyncpg":
            n = iter(range(1, 10))
            return await self.c.fetchval(re.sub("%s", lambda _: f"${next(n)}", sql), *args)
        cur = await self.c.execute(sql, args or None)
        return (await cur.fetchone())[0]

    def abort(self):
        try:
            if self.kind == "asyncpg":
                self.c.terminate()
            else:
                self.c.pgconn.finish()
        except Exception:
            pass


class Canary:
    """What one connection's transactions must see in soak.canary."""

    def __init__(self, client, conn_no):
        self.prefix = f"c{client}.{conn_no}."
        self.gen = 0
        self.confirmed = None  # None: never set on this connection
        self.ok = {None, ""}

    def next(self):
        self.gen += 1
        return f"{self.prefix}{self.gen}"

    def check(self, seen, st):
        if seen in self.ok:
            return
        if seen and not seen.startswith(self.prefix):
            st.dirty += 1
            what = "dirty"
        else:
            st.lost += 1
            what = "lost"
        if len(st.samples) < 5:
            st.samples.append(f"{what}: saw {seen!r}, expected one of {sorted(map(repr, self.ok))}")

    def settled(self, value):
        """A transaction ended with a known outcome; value: what it committed, if any
        ("" for a RESET)."""
        if value is not None:
            self.confirmed = value or None  # "" stands for RESET
        self.ok = {self.confirmed} if self.confirmed is not None else {None, ""}

    def unsure(self, value):
        """A COMMIT failed: the SET may or may not have taken."""
        if value is not None:
            self.ok = self.ok | ({value} if value else {None, ""})


async def driver(ctx, name, kind, client_id, rng):
    st = ctx.stats[name]
    conn_no = 0
    while not ctx.stop.is_set():
        conn_no += 1
        conn = Conn(kind)
        st.requests += 1
        st.connects += 1
        try:
            await timed(conn.open(ctx), CONNECT_TIMEOUT + 10)
        except Hang:
            st.hangs += 1
            ctx.log(f"{name}: HANG on connect")
            continue
        except Exception as e:
            sqlstate(e, st)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            continue
        canary = Canary(client_id, conn_no)
        try:
            while not ctx.stop.is_set():
                if not await transaction(ctx, conn, canary, st, client_id, rng):
                    break
                await asyncio.sleep(rng.uniform(0, 0.02))
        finally:
            conn.abort()


async def transaction(ctx, conn, canary, st, client_id, rng):
    """One transaction; False when the connection is unusable."""
    st.txns += 1
    step = "begin"
    new = None
    try:
        st.requests += 1
        await timed(conn.execute("BEGIN"))
        st.requests += 1
        canary.check(await timed(conn.value("select current_setting('soak.canary', true)")), st)
        step = "work"
        st.requests += 1
        await timed(conn.execute("update soak_accounts set n = n + 1 where id = %s", client_id))
        if rng.random() < 0.1:  # the hot row, which dropped clients also lock
            st.requests += 1
            await timed(conn.execute("update soak_hot set n = n + 1 where id = 0"))
        if rng.random() < 0.1:
            st.requests += 1
            await timed(conn.value("select pg_sleep(%s)", round(rng.uniform(0, 0.3), 3)))
        if rng.random() < 0.03:
            new = ""  # RESET: back to no value
            st.requests += 1
            await timed(conn.execute("reset soak.canary"))
        elif rng.random() < 0.2:
            new = canary.next()
            st.requests += 1
            if rng.random() < 0.5:
                await timed(conn.value("select set_config('soak.canary', %s, false)", new))
            else:
                await timed(conn.execute(f"set soak.canary = '{new}'"))
        r = rng.random()
        if r < 0.03:
            step = "expected-error"
            st.requests += 1
            try:
                await timed(conn.value("select 1 / 0"))
            except (asyncpg.DivisionByZeroError, psycopg.errors.DivisionByZero):
                st.expected_errors += 1
            step = "rollback"
            st.requests += 1
            await timed(conn.execute("ROLLBACK"))
            canary.settled(None)
        elif r < 0.08:
            step = "rollback"
            st.requests += 1
            await timed(conn.execute("ROLLBACK"))
            canary.settled(None)
        else:
            step = "commit"
            st.requests += 1
            await timed(conn.execute("COMMIT"))
            st.committed += 1
            canary.settled(new)
        return True
    except Hang:
        st.hangs += 1
        ctx.log(f"HANG: {st.kind} client {client_id} at {step}")
        return False
    except Exception as e:
        sqlstate(e, st)
        if step == "commit":
            st.ambiguous += 1
            canary.unsure(new)
        else:
            canary.settled(None)
    # Still usable? (pgsluice keeps a client whose server connection died when it can.)
    # The failure of this probe is not tallied: the error above already was.
    try:
        st.requests += 1
        await timed(conn.execute("ROLLBACK"), 15)
        return True
    except Hang:
        st.hangs += 1
        ctx.log(f"HANG: {st.kind} client {client_id} at rollback after an error")
    except Exception:
        pass
    return False


# ---------------------------------------------------------------- pgbench

PGBENCH_SCRIPT = r"""\set aid random(1, 200000)
\set delta random(-5000, 5000)
insert into soak_dirty(who, seen) select 'pgbench', v from (select current_setting('soak.canary', true) as v) s where coalesce(v, '') <> '';
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);
END;
"""


async def pgbench_stream(ctx, mode, clients, end):
    """Rounds of pgbench until `end` (a chaos event aborts pgbench's clients; the next
    round starts fresh). A round that outlives its time by 90 s is a hang."""
    c = ctx.pgbench.setdefault(mode, collections.Counter())
    script = os.path.join(ctx.a.out, "pgbench.sql")
    logpath = os.path.join(ctx.a.out, f"pgbench-{mode}.log")
    env = dict(os.environ, PGPASSWORD="app")
    while not ctx.stop.is_set():
        secs = int(min(60, end - time.monotonic()))
        if secs < 2:
            break
        cmd = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(ctx.a.port), "-U", "app", "-M", mode,
               "-c", str(clients), "-j", "1", "-T", str(secs), "-R", str(PGBENCH_RATE), "-f", script, "app"]
        p = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        c["rounds"] += 1
        try:
            out, _ = await asyncio.wait_for(p.communicate(), secs + 90)
        except asyncio.TimeoutError:
            p.kill()
            out, _ = await p.communicate()
            c["hangs"] += 1
            ctx.log(f"HANG: pgbench {mode} round did not end 90 s after its -T {secs}")
        text = out.decode(errors="replace")
        with open(logpath, "a") as f:
            f.write(f"==== round {c['rounds']} rc={p.returncode}\n{text}")
        m = re.search(r"actually processed: (\d+)", text)
        c["processed"] += int(m.group(1)) if m else 0
        m = re.search(r"number of failed transactions: (\d+)", text)
        c["failed"] += int(m.group(1)) if m else 0
        c["aborted clients"] += len(re.findall(r"client \d+ (?:script \d+ )?aborted", text))
        c["aborted rounds"] += "Run was aborted" in text
        errors = 0
        for line in text.splitlines():
            if "Run was aborted" in line:
                continue
            m = re.search(r"pgbench: error: (.*)", line) or re.search(r"(?:ERROR|FATAL):\s+(.*)", line)
            if m:
                errors += 1
                c["error: " + re.sub(r"\d+", "N", m.group(1))[:200]] += 1
        if p.returncode and not errors:
            c[f"error: exit {p.returncode} without a message"] += 1
        if p.returncode:
            await asyncio.sleep(1)


# ---------------------------------------------------------------- pgsluice processes


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None


def listening_pid(port):
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out)]
    return pids


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def start_pgsluice(ctx, extra=()):
    log = open(os.path.join(ctx.a.out, "pgsluice.stderr"), "a")
    p = subprocess.Popen([ctx.a.bin, *extra, ctx.a.config], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    PROCS.append(p)
    return p


def set_current(ctx, pid):
    ctx.pid = pid
    with open(os.path.join(ctx.a.out, "pgsluice.pid"), "w") as f:
        f.write(str(pid))


async def wait_listening(ctx, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", ctx.a.port)
            w.close()
            return True
        except OSError:
            await asyncio.sleep(0.1)
    return False


def psql(ctx, sql, user="admin", db="pgbouncer", port=None, csv=False):
    cmd = ["psql", "-X", "-h", "127.0.0.1", "-p", str(port or ctx.a.port), "-U", user, "-d", db, "-c", sql]
    cmd.insert(1, "--csv" if csv else "-At")
    env = dict(os.environ, PGPASSWORD=user, PGCONNECT_TIMEOUT="10")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    return r.returncode, r.stdout, r.stderr


# ---------------------------------------------------------------- chaos


def schedule(rng, start, stop, minutes, upgrades):
    """The heavy events (restart, reload, upgrade) spread over [start, stop) with jitter;
    backend kills and client drops run on their own timers."""
    heavy = ["restart"] * max(1, round(minutes / 8)) + ["reload"] * max(2, round(minutes / 5))
    heavy += ["upgrade"] * upgrades
    rng.shuffle(heavy)
    slot = (stop - start) / len(heavy)
    return [(start + slot * (i + rng.uniform(0.2, 0.8)), kind) for i, kind in enumerate(heavy)]


async def chaos_terminate(ctx):
    try:
        with psycopg.connect(host="127.0.0.1", port=ctx.a.pg_port, user="postgres", dbname="postgres",
                             autocommit=True, connect_timeout=10) as c:
            pids = [r[0] for r in c.execute(
                "select pid from pg_stat_activity where usename = 'app' and backend_type = 'client backend'")]
            victims = ctx.rng.sample(pids, min(len(pids), ctx.rng.randint(1, 3)))
            for pid in victims:
                c.execute("select pg_terminate_backend(%s)", (pid,))
        ctx.events["backends terminated"] += len(victims)
    except Exception as e:
        ctx.log(f"chaos: terminate failed: {e}")


async def chaos_drop(ctx, n):
    """A client that goes away in the middle of a transaction (idle in it, or during a
    query), closing its socket with FIN or RST; it locks the hot row first."""
    st = ctx.stats["dropped"]
    rng = ctx.rng
    st.connects += 1
    try:
        st.requests += 1
        c = await timed(asyncpg.connect(**ctx.dsn(), timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 10)
    except Hang:
        st.hangs += 1
        return
    except Exception as e:
        sqlstate(e, st)
        return
    mid_query = rng.random() < 0.4
    rst = rng.random() < 0.5
    try:
        st.requests += 3
        await timed(c.execute(f"set soak.canary = 'dropped.{n}'"))  # committed: carried
        await timed(c.execute("BEGIN"))
        await timed(c.execute("update soak_hot set n = n + 1 where id = 0"))
        pending = None
        if mid_query:
            pending = asyncio.ensure_future(c.execute("select pg_sleep(10)"))
            # Its failure is the point; fetch it so asyncio does not report it.
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
            await asyncio.sleep(0.2)
        sock = c._transport.get_extra_info("socket")
        if rst and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c._transport.abort()
        if pending:
            try:
                await asyncio.wait_for(pending, 5)
            except BaseException:
                pass
        ctx.events["clients dropped " + ("mid-query" if mid_query else "in a transaction")] += 1
    except Hang:
        st.hangs += 1
    except Exception as e:
        sqlstate(e, st)
    finally:
        c.terminate()


async def chaos_restart(ctx):
    a = ctx.a
    t = time.monotonic()
    cmd = a.pg_ctl.split() + ["-D", a.pgdata, "-l", os.path.join(a.out, "postgres.log"), "-m", "fast", "-w", "restart"]
    p = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await p.communicate()
    if p.returncode:
        ctx.fail(f"PostgreSQL restart failed: {err.decode()[:200]}")
    ctx.events["PostgreSQL restarts"] += 1
    ctx.log(f"chaos: PostgreSQL restarted in {time.monotonic() - t:.1f} s")


async def chaos_reload(ctx):
    ctx.pool_size = 14 if ctx.pool_size == 10 else 10
    with open(ctx.a.config) as f:
        text = f.read()
    with open(ctx.a.config, "w") as f:
        f.write(re.sub(r"(?m)^default_pool_size = \d+", f"default_pool_size = {ctx.pool_size}", text))
    rc, _, err = await asyncio.to_thread(psql, ctx, "RELOAD")
    rc2, out, _ = await asyncio.to_thread(psql, ctx, "SHOW CONFIG", csv=True)
    took = re.search(rf"(?m)^default_pool_size,{ctx.pool_size},", out or "")
    if rc or not took:
        ctx.fail(f"RELOAD to default_pool_size = {ctx.pool_size} did not take (rc {rc}: {err.strip()[:200]})")
    ctx.events["RELOADs"] += 1
    ctx.log(f"chaos: RELOAD, default_pool_size = {ctx.pool_size}")


async def chaos_upgrade(ctx):
    if not ctx.can_upgrade:
        ctx.log("upgrade step skipped: not supported by this binary")
        ctx.events["upgrades skipped"] += 1
        return
    old = ctx.pid
    t = time.monotonic()
    p = start_pgsluice(ctx, ["--upgrade"])
    while alive(old) and time.monotonic() - t < 120:
        await asyncio.sleep(0.2)
    for q in PROCS:
        q.poll()  # reap the old one if it was our child
    pids = [x for x in listening_pid(ctx.a.port) if x != old]
    if alive(old) or not pids:
        ctx.fail(f"upgrade: old pgsluice {old} still running={alive(old)}, new listening={pids}, "
                 f"--upgrade process rc={p.poll()}")
        return
    set_current(ctx, pids[0])
    ctx.events["upgrades"] += 1
    ctx.log(f"chaos: upgraded pgsluice {old} -> {pids[0]} in {time.monotonic() - t:.1f} s")


async def chaos(ctx, heavy, start, stop):
    tasks = []

    async def timer(kind, lo, hi, fn):
        n = 0
        await asyncio.sleep(max(0, start - time.monotonic()))
        while time.monotonic() < stop and not ctx.stop.is_set():
            n += 1
            tasks.append(asyncio.ensure_future(fn(ctx, n) if kind == "drop" else fn(ctx)))
            await asyncio.sleep(ctx.rng.uniform(lo, hi))

    async def heavy_events():
        for at, kind in heavy:
            await asyncio.sleep(max(0, at - time.monotonic()))
            ctx.log(f"chaos: {kind}")
            await {"restart": chaos_restart, "reload": chaos_reload, "upgrade": chaos_upgrade}[kind](ctx)

    await asyncio.gather(timer("terminate", 15, 35, chaos_terminate), timer("drop", 2, 6, chaos_drop),
                         heavy_events())
    await asyncio.gather(*tasks, return_exceptions=True)


async def sample_rss(ctx):
    while not ctx.stop.is_set():
        kb = rss_kb(ctx.pid)
        if kb:
            ctx.rss.append((time.monotonic() - ctx.t0, ctx.pid, kb))
        await asyncio.sleep(5)


# ---------------------------------------------------------------- checks


def direct(ctx, user="app"):
    return psycopg.connect(host="127.0.0.1", port=ctx.a.pg_port, user=user, password=user,
                           dbname="app" if user == "app" else "postgres", autocommit=True, connect_timeout=10)


async def probe_clean(ctx):
    """Fresh clients, 12 at a time in open transactions (so on distinct server
    connections): none may see a canary."""
    seen = collections.Counter()

    async def one():
        c = await timed(asyncpg.connect(**ctx.dsn(), timeout=CONNECT_TIMEOUT), CONNECT_TIMEOUT + 10)
        try:
            await timed(c.execute("BEGIN"))
            v = await timed(c.fetchval("select current_setting('soak.canary', true)"))
            await asyncio.sleep(0.5)
            await timed(c.execute("COMMIT"))
            return v
        finally:
            await c.close()

    for _ in range(3):
        for v in await asyncio.gather(*[one() for _ in range(12)], return_exceptions=True):
            seen["clean" if v in (None, "") else repr(v)] += 1
    return seen


def checks(ctx, baseline_kb, final_kb, driver_ids):
    res = []  # (name, ok, detail)

    def check(name, ok, detail):
        res.append((name, ok, detail))

    drivers = [s for n, s in ctx.stats.items() if n != "dropped"]
    hangs = sum(s.hangs for s in ctx.stats.values()) + sum(c["hangs"] for c in ctx.pgbench.values())
    check("no hang (every failed request got an error)", hangs == 0 and not ctx.stuck,
          f"{hangs} hangs, {ctx.stuck} client tasks stuck at stop")
    dirty = sum(s.dirty for s in drivers)
    check("canary: no dirty server connection (driver clients)", dirty == 0, f"{dirty} seen")
    lost = sum(s.lost for s in drivers)
    check("canary: carried value never lost", lost == 0, f"{lost} seen")
    with direct(ctx) as c:
        rows = c.execute("select who, seen, count(*) from soak_dirty group by 1, 2").fetchall()
        check("canary: no dirty server connection (pgbench clients)", not rows, f"{rows[:5]}" if rows else "0 seen")
        n = dict(c.execute("select id, n from soak_accounts").fetchall())
    bad = []
    for name, cid in driver_ids.items():
        s = ctx.stats[name]
        if not s.committed <= n[cid] <= s.committed + s.ambiguous:
            bad.append(f"{name}: row {n[cid]}, committed {s.committed} + unsure {s.ambiguous}")
    check("commits: every acknowledged COMMIT is in the table, nothing more", not bad, "; ".join(bad[:3]) or "ok")
    with direct(ctx, "postgres") as c:
        leaked = c.execute(
            "select pid, state, now() - coalesce(xact_start, query_start), left(query, 60) from pg_stat_activity "
            "where usename = 'app' and state <> 'idle' and coalesce(xact_start, query_start) < now() - %s::interval",
            (f"{SETTLE} seconds",)).fetchall()
        servers = c.execute("select count(*) from pg_stat_activity where usename = 'app'").fetchone()[0]
    check("no leaked transaction (pg_stat_activity)", not leaked, f"{leaked[:3]}" if leaked else
          f"0 of {servers} server connections busy")
    rc, out, err = psql(ctx, "SHOW POOLS", csv=True)
    pools = [dict(zip(out.splitlines()[0].split(","), line.split(","))) for line in out.splitlines()[1:]] if rc == 0 else []
    busy = [f"{p['database']}: cl_active {p['cl_active']} cl_waiting {p['cl_waiting']} sv_active {p['sv_active']}"
            for p in pools if p.get("database") == "app"
            and (p["cl_active"], p["cl_waiting"], p["sv_active"]) != ("0", "0", "0")]
    check("pgsluice pools idle (SHOW POOLS)", rc == 0 and not busy, "; ".join(busy) or err.strip() or "ok")
    check("pgsluice is running", ctx.pid is not None and alive(ctx.pid), f"pid {ctx.pid}")
    limit = baseline_kb * RSS_FACTOR + RSS_SLACK_MB * 1024
    check(f"memory: final RSS <= baseline x {RSS_FACTOR} + {RSS_SLACK_MB} MiB",
          final_kb is not None and final_kb <= limit,
          f"baseline {baseline_kb / 1024:.1f} MiB, final {(final_kb or 0) / 1024:.1f} MiB, limit {limit / 1024:.1f} MiB, "
          f"peak {max(k for _, _, k in ctx.rss) / 1024:.1f} MiB")
    panics = 0
    for name in ("pgsluice.log", "pgsluice.stderr"):
        path = os.path.join(ctx.a.out, name)
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                panics += sum("panicked" in line for line in f)
    check("no panic in pgsluice's log", panics == 0, f"{panics} lines")
    for f in ctx.failures:
        check("during the run", False, f)
    return res


def summary(ctx, res, seed):
    lines = [f"seed {seed}, {ctx.a.minutes} min, {ctx.a.profile} build", ""]
    lines.append(f"{'clients':<16}{'n':>4}{'connects':>10}{'txns':>9}{'requests':>10}{'commits':>9}"
                 f"{'hangs':>6}{'dirty':>6}{'lost':>5}  errors by SQLSTATE")
    kinds = collections.OrderedDict()
    for s in ctx.stats.values():
        kinds.setdefault(s.kind, []).append(s)
    for kind, ss in kinds.items():
        errs = collections.Counter()
        for s in ss:
            errs.update(s.errors)
        e = " ".join(f"{k}x{v}" for k, v in errs.most_common())
        exp = sum(s.expected_errors for s in ss)
        lines.append(f"{kind:<16}{len(ss):>4}{sum(s.connects for s in ss):>10}{sum(s.txns for s in ss):>9}"
                     f"{sum(s.requests for s in ss):>10}{sum(s.committed for s in ss):>9}"
                     f"{sum(s.hangs for s in ss):>6}{sum(s.dirty for s in ss):>6}{sum(s.lost for s in ss):>5}  "
                     f"{e or '-'}" + (f" (+{exp} deliberate 22012)" if exp else ""))
    lines.append("")
    for kind, ss in kinds.items():
        first, samples = {}, []
        for s in ss:
            for k, v in s.first.items():
                first.setdefault(k, v)
            samples += s.samples
        for k, v in sorted(first.items()):
            lines.append(f"  {kind} {k}: {v}")
        for v in samples[:3]:
            lines.append(f"  {kind} canary {v}")
    lines.append("")
    lines.append(f"{'pgbench':<10}{'rounds':>7}{'aborted':>8}{'processed':>11}{'failed':>8}{'clients aborted':>16}"
                 f"{'hangs':>6}")
    for mode, c in ctx.pgbench.items():
        lines.append(f"{mode:<10}{c['rounds']:>7}{c['aborted rounds']:>8}{c['processed']:>11}{c['failed']:>8}"
                     f"{c['aborted clients']:>16}{c['hangs']:>6}")
        for k, v in sorted(c.items(), key=lambda kv: -kv[1]):
            if k.startswith("error: "):
                lines.append(f"  {mode} x{v}: {k[7:]}")
    lines.append("")
    lines.append("chaos: " + ", ".join(f"{k} {v}" for k, v in sorted(ctx.events.items())))
    lines.append("")
    for name, ok, detail in res:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    with open(os.path.join(ctx.a.out, "summary.txt"), "w") as f:
        f.write(text + "\n")


# ---------------------------------------------------------------- main


def setup_tables(ctx, n):
    with direct(ctx) as c:
        c.execute("create table soak_accounts (id int primary key, n bigint not null default 0)")
        c.execute("insert into soak_accounts select g from generate_series(1, %s) g", (n,))
        c.execute("create table soak_hot (id int primary key, n bigint not null default 0)")
        c.execute("insert into soak_hot values (0)")
        c.execute("create table soak_dirty (at timestamptz default now(), who text, seen text)")
    with open(os.path.join(ctx.a.out, "pgbench.sql"), "w") as f:
        f.write(PGBENCH_SCRIPT)


async def run(a):
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    ctx = Ctx(a)
    ctx.rng = random.Random(seed)
    ctx.pool_size = 10
    ctx.stuck = 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    ctx.log(f"soak: seed {seed} (SOAK_SEED={seed} repeats the schedule), {a.minutes} min, {a.profile} build, "
            f"commit {commit}")
    help_text = subprocess.run([a.bin, "--help"], capture_output=True, text=True).stdout
    ctx.can_upgrade = "--upgrade" in help_text
    if not ctx.can_upgrade:
        ctx.log("upgrade step skipped: not supported by this binary (the two upgrades are no-ops)")
    nclients = sum(n for _, n in DRIVERS)
    setup_tables(ctx, nclients)
    p = start_pgsluice(ctx)
    set_current(ctx, p.pid)
    if not await wait_listening(ctx):
        ctx.log("pgsluice did not start; see pgsluice.log / pgsluice.stderr")
        return 2
    total = a.minutes * 60
    warm, tail = min(60, max(20, total * 0.1)), min(60, max(20, total * 0.1))
    t = time.monotonic()
    end = t + total
    heavy = schedule(random.Random(seed), t + warm, end - tail, a.minutes, 2)
    ctx.log("schedule: warm-up %ds, chaos until %ds; %s" % (warm, total - tail, ", ".join(
        f"{k} at {at - ctx.t0:.0f}s" for at, k in heavy)))
    ctx.stats["dropped"] = Stats("dropped mid-txn")
    tasks, driver_ids = [], {}
    cid = 0
    for kind, count in DRIVERS:
        for _ in range(count):
            cid += 1
            name = f"{kind}-{cid}"
            ctx.stats[name] = Stats(kind)
            driver_ids[name] = cid
            tasks.append(asyncio.ensure_future(driver(ctx, name, kind, cid, random.Random(seed * 1000 + cid))))
    benches = [asyncio.ensure_future(pgbench_stream(ctx, mode, n, end)) for mode, n in PGBENCH]
    rss_task = asyncio.ensure_future(sample_rss(ctx))
    await asyncio.sleep(warm)
    baseline = rss_kb(ctx.pid)
    ctx.log(f"warm-up done: pgsluice {ctx.pid} RSS baseline {baseline / 1024:.1f} MiB")
    chaos_task = asyncio.ensure_future(chaos(ctx, heavy, t + warm, end - tail))
    while time.monotonic() < end:
        await asyncio.sleep(1)
        if int(time.monotonic() - t) % 60 == 0:
            txns = sum(s.txns for s in ctx.stats.values())
            ctx.log(f"progress: {txns} driver transactions, RSS {(rss_kb(ctx.pid) or 0) / 1024:.1f} MiB")
    ctx.log("load stops")
    ctx.stop.set()
    done, pending = await asyncio.wait(tasks, timeout=2 * REQ_TIMEOUT + 30)
    ctx.stuck = len(pending)
    for task in pending:
        task.cancel()
    await asyncio.wait(benches, timeout=200)
    try:
        await asyncio.wait_for(chaos_task, 300)
    except asyncio.TimeoutError:
        ctx.fail("chaos events still running 300 s after the load stopped")
    await rss_task
    ctx.log(f"settling {SETTLE:.0f} s")
    await asyncio.sleep(SETTLE)
    probe = await probe_clean(ctx)
    ctx.log(f"probe of fresh clients: {dict(probe)}")
    if set(probe) != {"clean"}:
        ctx.fail(f"fresh clients saw a canary or failed: {dict(probe)}")
    final = rss_kb(ctx.pid)
    res = checks(ctx, baseline, final, driver_ids)
    summary(ctx, res, seed)
    return 0 if all(ok for _, ok, _ in res) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for opt in ("out", "bin", "profile", "config", "pgdata", "pg-ctl"):
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    loop = asyncio.new_event_loop()
    code = 2
    try:
        code = loop.run_until_complete(run(a))
    finally:
        # Stop every pgsluice this script started (scripts/soak's trap is the backstop).
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
    sys.exit(code)


if __name__ == "__main__":
    main()
