//! Provisioning of the primary `db01` and its streaming replica `db02`, following the user's
//! tutorial (`shared/seed/steps-en.md`): its names, files and commands.
//!
//! `tutorial` holds the pieces of the steps that are pure text: what goes into
//! `postgresql.conf`, `pg_hba.conf`, `.pgpass` and the replication user's SQL script.
//! `runtime` is what the steps need from wherever the servers run; `docker` and `local`
//! implement it.

pub mod app_roles;
pub mod conninfo;
pub mod docker;
pub mod failover;
pub mod local;
pub mod psql;
pub mod runtime;
pub mod status;
pub mod steps;
pub mod text;
pub mod topology;
pub mod tutorial;
pub mod verify;
