//! SQLSTATE codes pgsluice sends, in one typed table.
//!
//! Code elsewhere names a constant (`SqlState::TOO_MANY_CONNECTIONS`), never a string
//! literal, so a typo cannot reach a client.

/// A five-character SQLSTATE error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlState(&'static str);

macro_rules! codes {
    ($($name:ident = $code:literal, $doc:literal;)*) => {
        impl SqlState {
            $(#[doc = $doc] pub const $name: SqlState = SqlState($code);)*
            /// Every code in the table, for tests and documentation.
            pub const ALL: &'static [SqlState] = &[$(SqlState::$name),*];
        }
    };
}

codes! {
    SUCCESSFUL_COMPLETION = "00000", "successful_completion (for notices)";
    WARNING = "01000", "warning (for notices)";
    CONNECTION_EXCEPTION = "08000", "connection_exception";
    CONNECTION_FAILURE = "08006", "connection_failure: the server connection was lost";
    UNABLE_TO_CONNECT = "08001", "sqlclient_unable_to_establish_sqlconnection";
    CONNECTION_REJECTED = "08004", "sqlserver_rejected_establishment_of_sqlconnection";
    PROTOCOL_VIOLATION = "08P01", "protocol_violation";
    FEATURE_NOT_SUPPORTED = "0A000", "feature_not_supported";
    INVALID_PARAMETER_VALUE = "22023", "invalid_parameter_value";
    NUMERIC_VALUE_OUT_OF_RANGE = "22003", "numeric_value_out_of_range";
    INVALID_TEXT_REPRESENTATION = "22P02", "invalid_text_representation";
    INVALID_BINARY_REPRESENTATION = "22P03", "invalid_binary_representation";
    BAD_COPY_FILE_FORMAT = "22P04", "bad_copy_file_format";
    INVALID_TRANSACTION_STATE = "25000", "invalid_transaction_state";
    INVALID_SQL_STATEMENT_NAME = "26000", "invalid_sql_statement_name";
    IDLE_IN_TRANSACTION_TIMEOUT = "25P03", "idle_in_transaction_session_timeout";
    TRANSACTION_TIMEOUT = "25P04", "transaction_timeout";
    INVALID_AUTHORIZATION = "28000", "invalid_authorization_specification";
    INVALID_PASSWORD = "28P01", "invalid_password";
    INVALID_CATALOG_NAME = "3D000", "invalid_catalog_name: no such database";
    SYNTAX_ERROR = "42601", "syntax_error";
    INSUFFICIENT_PRIVILEGE = "42501", "insufficient_privilege";
    UNDEFINED_OBJECT = "42704", "undefined_object";
    DUPLICATE_PREPARED_STATEMENT = "42P05", "duplicate_prepared_statement";
    OUT_OF_MEMORY = "53200", "out_of_memory";
    TOO_MANY_CONNECTIONS = "53300", "too_many_connections";
    OBJECT_NOT_IN_PREREQUISITE_STATE = "55000", "object_not_in_prerequisite_state";
    PROGRAM_LIMIT_EXCEEDED = "54000", "program_limit_exceeded";
    QUERY_CANCELED = "57014", "query_canceled";
    ADMIN_SHUTDOWN = "57P01", "admin_shutdown";
    CANNOT_CONNECT_NOW = "57P03", "cannot_connect_now";
    IDLE_SESSION_TIMEOUT = "57P05", "idle_session_timeout";
    SYSTEM_ERROR = "58000", "system_error";
    CONFIG_FILE_ERROR = "F0000", "config_file_error";
    INTERNAL_ERROR = "XX000", "internal_error";
    ACTIVE_SQL_TRANSACTION = "25001", "active_sql_transaction (a warning: BEGIN inside a block)";
    NO_ACTIVE_SQL_TRANSACTION = "25P01", "no_active_sql_transaction (a warning: COMMIT outside a block)";
    IN_FAILED_SQL_TRANSACTION = "25P02", "in_failed_sql_transaction";
    INVALID_CURSOR_NAME = "34000", "invalid_cursor_name: no such portal";
    CHARACTER_NOT_IN_REPERTOIRE = "22021", "character_not_in_repertoire";
}

impl SqlState {
    /// The five characters of the code.
    pub const fn code(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_well_formed_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in SqlState::ALL {
            assert_eq!(c.code().len(), 5);
            assert!(c
                .code()
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
            assert!(seen.insert(c.code()), "duplicate {c}");
        }
    }
}
