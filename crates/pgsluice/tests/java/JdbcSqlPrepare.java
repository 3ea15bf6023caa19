// SQL-level PREPARE / EXECUTE through pgsluice with pgjdbc (run by tests/sql_prepare.rs
// as `java -cp postgresql.jar JdbcSqlPrepare.java URL USER PASSWORD`). With default
// settings pgjdbc sends every statement with the extended protocol: PREPARE is refused
// (0A000). With preferQueryMode=extendedForPrepared a plain Statement uses simple
// queries: PREPARE works, and a PreparedStatement that EXECUTEs it (extended protocol,
// a named server-side statement past prepareThreshold) runs it. Prints key=value lines.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class JdbcSqlPrepare {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2]);
             Statement st = c.createStatement()) {
            try {
                st.execute("PREPARE p AS SELECT 1");
                System.out.println("default_prepare=ok");
            } catch (SQLException e) {
                System.out.println("default_prepare=" + e.getSQLState());
            }
        }
        String url = args[0] + "?preferQueryMode=extendedForPrepared";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2]);
             Statement st = c.createStatement()) {
            st.execute("PREPARE p(int) AS SELECT $1 * 2");
            int sum = 0;
            try (PreparedStatement ps = c.prepareStatement("EXECUTE p(21)")) {
                for (int i = 0; i < 10; i++) {
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sum += rs.getInt(1);
                    }
                }
            }
            System.out.println("extended_sum=" + sum);
            try (ResultSet rs = st.executeQuery("EXECUTE p(5)")) {
                rs.next();
                System.out.println("simple=" + rs.getInt(1));
            }
            st.execute("DEALLOCATE p");
            try {
                st.executeQuery("EXECUTE p(5)");
                System.out.println("after_deallocate=ok");
            } catch (SQLException e) {
                System.out.println("after_deallocate=" + e.getSQLState());
            }
        }
        System.out.println("OK");
    }
}
