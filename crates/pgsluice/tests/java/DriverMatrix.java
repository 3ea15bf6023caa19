// pgjdbc in the driver matrix (docs/clients.md), run by tests/drivers.rs as
// `java -cp postgresql.jar DriverMatrix.java URL USER PASSWORD` through pgsluice in
// transaction pooling with SCRAM, with prepareThreshold=1 so that every
// PreparedStatement is a named server-side statement from its first execution:
//   - 50 prepared queries (issue 19's acceptance), from 5 concurrent connections,
//     every result checked;
//   - a committed transaction, an error mid-transaction (25P02 until rollback);
//   - COPY in and out (CopyManager);
//   - a cancel of pg_sleep(10) (Statement.cancel, 57014).
// Prints key=value lines and OK.

import java.io.StringReader;
import java.io.StringWriter;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import org.postgresql.PGConnection;
import org.postgresql.PGStatement;
import org.postgresql.copy.CopyManager;

public class DriverMatrix {
    static final String SLEEP = "select pg_sleep(10)";
    static String url, user, password;

    public static void main(String[] args) throws Exception {
        url = args[0] + "?prepareThreshold=1";
        user = args[1];
        password = args[2];
        try (Connection c = connect(); Connection other = connect()) {
            exec(c, "create table matrix(id int primary key, label text)");
            System.out.println("prepared_ok=" + prepared());
            transaction(c, other);
            errorMidTransaction(c);
            copy(c);
            cancel(c, other);
        }
        System.out.println("OK");
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, user, password);
    }

    static void exec(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        }
    }

    static long scalar(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getLong(1);
        }
    }

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("assertion failed: " + what);
        }
    }

    /** 5 connections x 10 executions of a named statement; returns how many were right. */
    static int prepared() throws Exception {
        AtomicInteger ok = new AtomicInteger();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = new ArrayList<>();
        for (int t = 0; t < 5; t++) {
            final int k = t;
            Thread th = new Thread(() -> {
                try (Connection c = connect();
                     PreparedStatement ps = c.prepareStatement("select ?::int * 2, ?::text || '-" + k + "'")) {
                    for (int i = 0; i < 10; i++) {
                        ps.setInt(1, i);
                        ps.setString(2, "r" + i);
                        try (ResultSet rs = ps.executeQuery()) {
                            rs.next();
                            check(rs.getInt(1) == i * 2, "value " + rs.getInt(1));
                            check(rs.getString(2).equals("r" + i + "-" + k), "text " + rs.getString(2));
                        }
                        check(ps.unwrap(PGStatement.class).isUseServerPrepare(), "server prepared");
                        ok.incrementAndGet();
                    }
                } catch (Throwable e) {
                    synchronized (errors) {
                        errors.add(e);
                    }
                }
            });
            th.start();
            threads.add(th);
        }
        for (Thread th : threads) {
            th.join();
        }
        if (!errors.isEmpty()) {
            throw new IllegalStateException("prepared: " + errors, errors.get(0));
        }
        return ok.get();
    }

    static void transaction(Connection c, Connection other) throws SQLException {
        c.setAutoCommit(false);
        try (PreparedStatement ps = c.prepareStatement("insert into matrix values (?, 'tx')")) {
            for (int id = 1; id <= 3; id++) {
                ps.setInt(1, id);
                ps.executeUpdate();
            }
        }
        c.commit();
        c.setAutoCommit(true);
        long n = scalar(other, "select count(*) from matrix where label = 'tx'");
        check(n == 3, "committed rows " + n);
        System.out.println("committed=" + n);
    }

    static void errorMidTransaction(Connection c) throws SQLException {
        c.setAutoCommit(false);
        try {
            scalar(c, "select 1/0");
            check(false, "1/0 succeeded");
        } catch (SQLException e) {
            check("22012".equals(e.getSQLState()), "1/0: " + e.getSQLState());
        }
        try {
            scalar(c, "select 1");
            check(false, "a statement ran in an aborted transaction");
        } catch (SQLException e) {
            System.out.println("aborted=" + e.getSQLState());
        }
        c.rollback();
        c.setAutoCommit(true);
        check(scalar(c, "select 42") == 42, "after rollback");
    }

    static void copy(Connection c) throws Exception {
        CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
        StringBuilder data = new StringBuilder();
        for (int i = 1000; i < 3000; i++) {
            data.append(i).append("\tcopy ").append(i).append('\n');
        }
        long in = cm.copyIn("copy matrix(id, label) from stdin", new StringReader(data.toString()));
        StringWriter out = new StringWriter();
        long outRows = cm.copyOut("copy (select id, label from matrix where id >= 1000 order by id) to stdout", out);
        check(out.toString().equals(data.toString()), "copy out differs");
        System.out.println("copy_in=" + in);
        System.out.println("copy_out=" + outRows);
    }

    static void cancel(Connection c, Connection other) throws Exception {
        try (Statement st = c.createStatement()) {
            Thread canceller = new Thread(() -> {
                try {
                    waitActive(other, SLEEP);
                    st.cancel();
                } catch (Exception e) {
                    e.printStackTrace();
                }
            });
            canceller.start();
            long start = System.nanoTime();
            try {
                st.execute(SLEEP);
                check(false, "pg_sleep(10) was not cancelled");
            } catch (SQLException e) {
                System.out.println("cancel=" + e.getSQLState());
            }
            long ms = (System.nanoTime() - start) / 1_000_000;
            canceller.join();
            check(ms < 9500, "cancel took " + ms + " ms");
        }
        check(scalar(c, "select 7") == 7, "after cancel");
    }

    static void waitActive(Connection watcher, String needle) throws Exception {
        long deadline = System.currentTimeMillis() + 15000;
        try (PreparedStatement ps = watcher.prepareStatement(
                "select count(*) from pg_stat_activity where state = 'active' "
                        + "and strpos(query, ?) > 0 and pid <> pg_backend_pid()")) {
            while (System.currentTimeMillis() < deadline) {
                ps.setString(1, needle);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    if (rs.getLong(1) > 0) {
                        return;
                    }
                }
                Thread.sleep(20);
            }
        }
        throw new IllegalStateException("no backend ran " + needle);
    }
}
