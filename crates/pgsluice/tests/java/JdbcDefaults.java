// pgjdbc with its default settings through pgsluice (run by tests/session_params.rs as
// `java -cp postgresql.jar JdbcDefaults.java URL USER PASSWORD`). It connects (pgjdbc
// sends `SET extra_float_digits = 3` and `SET application_name` while setting up),
// runs one PreparedStatement past prepareThreshold (5) so that the driver switches to
// a named server-side statement, runs a transaction, and prints what it saw, one
// `key=value` per line, for the test to check.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.Statement;

public class JdbcDefaults {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            show(c, "extra_float_digits");
            show(c, "application_name");
            int sum = 0;
            boolean serverPrepared = false;
            try (PreparedStatement ps = c.prepareStatement("select ?::int * 2, 'row ' || ?::text")) {
                for (int i = 1; i <= 10; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "r" + i);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sum += rs.getInt(1);
                        if (!rs.getString(2).equals("row r" + i)) {
                            throw new IllegalStateException("bad row " + rs.getString(2));
                        }
                    }
                }
                serverPrepared = ps.unwrap(org.postgresql.PGStatement.class).isUseServerPrepare();
            }
            System.out.println("prepared_sum=" + sum);
            System.out.println("server_prepared=" + serverPrepared);
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.execute("create temp table j(x int) on commit drop");
                st.execute("insert into j values (1), (2), (3)");
                try (ResultSet rs = st.executeQuery("select count(*) from j")) {
                    rs.next();
                    System.out.println("transaction_rows=" + rs.getInt(1));
                }
            }
            c.commit();
            c.setAutoCommit(true);
            show(c, "extra_float_digits");
        }
        System.out.println("OK");
    }

    static void show(Connection c, String name) throws Exception {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("show " + name)) {
            rs.next();
            System.out.println(name + "=" + rs.getString(1));
        }
    }
}
