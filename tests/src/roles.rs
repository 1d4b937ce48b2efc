//! The roles and database every test cluster has, one per client
//! authentication method, so proxy tests can exercise each of them.

use pgrepl_provision::tutorial::REPLICATION_USER;

/// The database all login roles may use; owned by [`APP`].
pub const DATABASE: &str = "appdb";

/// The bootstrap superuser; it logs in over the Unix socket with `trust`.
pub const SUPERUSER: &str = "postgres";

/// A login role and how the server authenticates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Role {
    pub name: &'static str,
    pub password: Option<&'static str>,
    /// The pg_hba.conf method for this role's TCP logins.
    pub hba_method: &'static str,
    /// `password_encryption` when the password is stored; decides whether
    /// the server keeps a SCRAM or an md5 verifier.
    pub(crate) stored_as: &'static str,
    /// Extra CREATE ROLE options.
    pub(crate) options: &'static str,
}

/// Owner of [`DATABASE`], SCRAM verifier and SCRAM login.
pub const APP: Role = Role {
    name: "app",
    password: Some("app-pass"),
    hba_method: "scram-sha-256",
    stored_as: "scram-sha-256",
    options: "CREATEDB",
};

/// md5 verifier and md5 challenge login.
pub const MD5USER: Role = Role {
    name: "md5user",
    password: Some("md5-pass"),
    hba_method: "md5",
    stored_as: "md5",
    options: "",
};

/// SCRAM verifier, but the server asks for the cleartext password.
pub const PLAINUSER: Role = Role {
    name: "plainuser",
    password: Some("plain-pass"),
    hba_method: "password",
    stored_as: "scram-sha-256",
    options: "",
};

/// No password; the server trusts it.
pub const TRUSTUSER: Role = Role {
    name: "trustuser",
    password: None,
    hba_method: "trust",
    stored_as: "scram-sha-256",
    options: "",
};

/// The roles tests log in as, one per authentication method.
pub const LOGIN_ROLES: [Role; 4] = [APP, MD5USER, PLAINUSER, TRUSTUSER];

/// The password of a harness role, if it has one.
pub fn password(user: &str) -> Option<&'static str> {
    LOGIN_ROLES
        .iter()
        .find(|r| r.name == user)
        .and_then(|r| r.password)
}

/// Where the TCP logins of a cluster on the loopback come from: the proxy, psql, the standby.
pub(crate) const LOOPBACK_CLIENTS: &str = "127.0.0.1/32";

/// pg_hba.conf for both nodes, replacing the tutorial's (which trusts every
/// TCP login from 127.0.0.1), for TCP logins from `clients` (a CIDR: the
/// loopback, or the partition rig's subnet). The first matching line wins, so
/// the per-role lines come before the catch-all that lets roles created by
/// tests log in with SCRAM.
pub(crate) fn pg_hba(clients: &str) -> String {
    let mut hba = format!("local all {SUPERUSER} trust\nlocal replication {SUPERUSER} trust\n");
    for role in LOGIN_ROLES {
        hba += &format!("host all {} {clients} {}\n", role.name, role.hba_method);
    }
    // The tutorial's line, so the standby can reconnect from where its connections come from.
    hba += &format!("host replication {REPLICATION_USER} {clients} md5\n");
    hba += &format!("host all all {clients} scram-sha-256\n");
    hba
}

/// psql script, run by the superuser on the primary, that creates the roles,
/// the database and the grants; the replica gets them by replication.
pub(crate) fn setup_sql() -> String {
    let mut sql = String::new();
    for role in LOGIN_ROLES {
        sql += &format!("SET password_encryption = '{}';\n", role.stored_as);
        sql += &format!("CREATE ROLE {} LOGIN {}", role.name, role.options);
        if let Some(password) = role.password {
            sql += &format!(" PASSWORD '{password}'");
        }
        sql += ";\n";
    }
    let others: Vec<&str> = LOGIN_ROLES
        .iter()
        .filter(|r| r.name != APP.name)
        .map(|r| r.name)
        .collect();
    let others = others.join(", ");
    sql += &format!("CREATE DATABASE {DATABASE} OWNER {};\n", APP.name);
    sql += &format!("GRANT ALL ON DATABASE {DATABASE} TO {others};\n");
    // Since PostgreSQL 15 only the database owner may create in `public`.
    sql += &format!("\\connect {DATABASE}\nGRANT ALL ON SCHEMA public TO {others};\n");
    sql
}
