//! The SQLSTATE codes the proxy answers with itself, by PostgreSQL's names for them
//! (`errcodes.txt`), so a reader sees what an error means where it is raised.

/// 08006: the connection to a server failed or was lost.
pub const CONNECTION_FAILURE: &str = "08006";
/// 08007: the connection was lost while a transaction's commit was on its way: whether it
/// committed is unknown.
pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
/// 40001: the transaction was not committed and may be retried (PostgreSQL's code for a
/// standby's recovery conflicts; here, the primary changed under it).
pub const SERIALIZATION_FAILURE: &str = "40001";
/// 08P01: a client sent a message the protocol does not allow.
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// 0A000: a protocol feature or version the proxy does not speak.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// 00000: a notice that reports no problem (the admin console's SHOW HELP).
pub const SUCCESSFUL_COMPLETION: &str = "00000";
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
/// 42501: a user the admin console does not let in.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// 42601: an admin console command the proxy does not know.
pub const SYNTAX_ERROR: &str = "42601";
/// 42704: what an admin console command names does not exist (a client id).
pub const UNDEFINED_OBJECT: &str = "42704";
/// 53300: no connection slot left, for a client or towards a server.
pub const TOO_MANY_CONNECTIONS: &str = "53300";
/// 55000: what a standby answers to maintenance it cannot do ("recovery is in progress").
pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
/// 55006: server connections still in use when a PAUSE gave up waiting for them.
pub const OBJECT_IN_USE: &str = "55006";
/// 57P01: the proxy is shutting down, or an administrator ended the session.
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// F0000: a reload refused the new configuration.
pub const CONFIG_FILE_ERROR: &str = "F0000";
