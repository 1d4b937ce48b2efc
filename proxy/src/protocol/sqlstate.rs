//! The SQLSTATE codes the proxy answers with itself, by PostgreSQL's names for them
//! (`errcodes.txt`), so a reader sees what an error means where it is raised.

/// 08006: the connection to a server failed or was lost.
pub const CONNECTION_FAILURE: &str = "08006";
/// 08P01: a client sent a message the protocol does not allow.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 0A000: a protocol feature or version the proxy does not speak.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// 22023: a setting given a value it does not take.
pub const INVALID_PARAMETER_VALUE: &str = "22023";
/// 25006: a statement that may write, refused where it cannot run.
pub const READ_ONLY_SQL_TRANSACTION: &str = "25006";
/// 25P02: any statement but the end of a transaction that already failed.
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
/// 28000: a login the proxy does not accept.
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
/// 28P01: a wrong password.
pub const INVALID_PASSWORD: &str = "28P01";
/// 53300: no connection slot left, for a client or towards a server.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// 55000: what a standby answers to maintenance it cannot do ("recovery is in progress").
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// 57P01: the proxy is shutting down.
pub const ADMIN_SHUTDOWN: &str = "57P01";
