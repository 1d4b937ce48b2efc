//! What a function call means for routing, as far as the statement text and the
//! configuration tell: a built-in or configured side effect (primary), known harmless (no
//! effect on the route), or a user function only the database's catalog can judge.

use std::sync::Arc;

use sqlparser::ast::ObjectName;

use super::name::CatalogName;
use super::node_local;

/// Exact names of functions whose call makes a read unsafe for the replica:
/// they write, take locks, or read session state that only the primary has.
/// Sorted for binary search; prefix families are in [`SIDE_EFFECT_PREFIXES`].
const SIDE_EFFECT_FUNCTIONS: &[&str] = &[
    // Index maintenance: they write the index, and a standby refuses them.
    "brin_desummarize_range",
    "brin_summarize_new_values",
    "brin_summarize_range",
    "currval",
    "dblink_exec",
    "gin_clean_pending_list",
    "lastval",
    "loread",
    "lowrite",
    "nextval",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_cancel_backend",
    "pg_create_restore_point",
    "pg_current_xact_id",
    "pg_current_xact_id_if_assigned",
    "pg_import_system_collations",
    "pg_logical_emit_message",
    "pg_notify",
    "pg_promote",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_switch_wal",
    "pg_terminate_backend",
    "set_config",
    "setval",
    "txid_current",
    "txid_current_if_assigned",
];

/// Name prefixes of side-effect function families (large objects, advisory
/// locks, replication origins, stats resets, logical slot consumers).
const SIDE_EFFECT_PREFIXES: &[&str] = &[
    "lo_",
    "pg_advisory_",
    "pg_logical_slot_",
    "pg_replication_origin_",
    "pg_stat_reset",
    "pg_try_advisory_",
];

/// Built-in functions without side effects that need no catalog look-up when called
/// unqualified: the volatile ones (which a volatility check alone would send to the primary)
/// and the most common others (so statements using them stay on the replica while a
/// database's catalog is not known yet). PostgreSQL searches `pg_catalog` first, so an
/// unqualified call with the built-in's argument types is the built-in. Sorted.
const BUILTIN_READ_FUNCTIONS: &[&str] = &[
    "array_agg",
    "avg",
    "clock_timestamp",
    "coalesce",
    "count",
    "current_database",
    "current_schema",
    "current_setting",
    "gen_random_uuid",
    "generate_series",
    "json_agg",
    "jsonb_agg",
    "length",
    "lower",
    "max",
    "min",
    "now",
    "pg_backend_pid",
    "pg_current_snapshot",
    "pg_sleep",
    "pg_sleep_for",
    "pg_sleep_until",
    "random",
    "statement_timestamp",
    "string_agg",
    "sum",
    "timeofday",
    "transaction_timestamp",
    "txid_current_snapshot",
    "unnest",
    "upper",
    "version",
];

/// Schemas whose functions are all built in: their side effects are covered by the lists.
const BUILTIN_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// Whether calling `name` (already lower-cased, last name part) has side
/// effects; also matches every `pg_*replication_slot*` function.
fn has_side_effects(name: &str) -> bool {
    SIDE_EFFECT_FUNCTIONS.binary_search(&name).is_ok()
        || SIDE_EFFECT_PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with("pg_") && name.contains("replication_slot"))
}

/// What a call means for routing, before any catalog is asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Call {
    /// It has side effects: the statement needs the primary. Carries the detail to log.
    SideEffect(Arc<str>),
    /// It answers for the server that runs it (see `node_local.rs`): the primary, unless a
    /// hint chooses. Carries the detail to log.
    NodeLocal(Arc<str>),
    /// It cannot change the route.
    Harmless,
    /// A user function: the database's catalog decides.
    User(CatalogName),
}

/// `[routing] write_functions` and `read_only_functions`. An unqualified entry matches the
/// name in any schema; a qualified one only calls of the name in that schema, except that a
/// write function also matches an unqualified call of its name, since the search path may
/// lead there.
#[derive(Debug, Default)]
pub struct Overrides {
    write: Vec<CatalogName>,
    read_only: Vec<CatalogName>,
}

impl Overrides {
    pub fn new(write: &[String], read_only: &[String]) -> Overrides {
        let parse = |list: &[String]| list.iter().map(|e| CatalogName::parse(e)).collect();
        Overrides {
            write: parse(write),
            read_only: parse(read_only),
        }
    }

    /// Judges a call by the built-in lists and the configuration: side effects first, then
    /// the configured lists (so `read_only_functions` can keep a node-local function on the
    /// replica), then node-local functions, then the harmless built-ins.
    pub fn judge(&self, name: &ObjectName) -> Call {
        let Some(call) = CatalogName::of(name) else {
            return Call::Harmless;
        };
        let lower = call.name().to_ascii_lowercase();
        if has_side_effects(&lower) {
            return Call::SideEffect(lower.into());
        }
        if self.write.iter().any(|entry| matches(entry, &call, true)) {
            return Call::SideEffect(call.detail());
        }
        if self
            .read_only
            .iter()
            .any(|entry| matches(entry, &call, false))
        {
            return Call::Harmless;
        }
        if node_local::function(&lower) {
            return Call::NodeLocal(lower.into());
        }
        let builtin = match call.schema() {
            Some(schema) => BUILTIN_SCHEMAS.contains(&schema),
            None => BUILTIN_READ_FUNCTIONS.binary_search(&call.name()).is_ok(),
        };
        if builtin {
            Call::Harmless
        } else {
            Call::User(call)
        }
    }
}

/// Whether a configured `entry` names `call`; `unqualified_call_matches` lets a qualified
/// entry match an unqualified call of the same name.
fn matches(entry: &CatalogName, call: &CatalogName, unqualified_call_matches: bool) -> bool {
    entry.name() == call.name()
        && match (entry.schema(), call.schema()) {
            (None, _) => true,
            (Some(wanted), Some(called)) => wanted == called,
            (Some(_), None) => unqualified_call_matches,
        }
}

#[cfg(test)]
mod tests {
    use sqlparser::ast::{Expr, SelectItem, SetExpr, Statement};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::*;

    /// The function name of `SELECT <call>`.
    fn name_of(call: &str) -> ObjectName {
        let sql = format!("SELECT {call}");
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &sql).unwrap();
        let Statement::Query(query) = &statements[0] else {
            panic!("{sql}: not a query");
        };
        let SetExpr::Select(select) = query.body.as_ref() else {
            panic!("{sql}: not a select");
        };
        match &select.projection[0] {
            SelectItem::UnnamedExpr(Expr::Function(f)) => f.name.clone(),
            other => panic!("{sql}: not a call: {other:?}"),
        }
    }

    fn user(text: &str) -> Call {
        Call::User(CatalogName::parse(text))
    }

    #[test]
    fn lists_are_sorted_for_binary_search() {
        assert!(SIDE_EFFECT_FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
        assert!(BUILTIN_READ_FUNCTIONS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn names_are_spelled_as_the_catalog_spells_them() {
        for (call, schema, name) in [
            ("f()", None, "f"),
            ("My_Func(1)", None, "my_func"),
            ("\"My_Func\"(1)", None, "My_Func"),
            ("App.F()", Some("app"), "f"),
            ("\"App\".\"F.G\"()", Some("App"), "F.G"),
            ("db.app.f()", Some("app"), "f"),
        ] {
            let got = CatalogName::of(&name_of(call)).unwrap();
            assert_eq!((got.schema(), got.name()), (schema, name), "{call}");
        }
    }

    #[test]
    fn judges_by_builtin_lists_then_configuration() {
        let overrides = Overrides::new(
            &["audit.log_it".into(), "bump".into()],
            &["my_random".into(), "util.pick".into()],
        );
        let side = |detail: &str| Call::SideEffect(detail.into());
        for (call, want) in [
            ("nextval('s')", side("nextval")),
            ("pg_catalog.NEXTVAL('s')", side("nextval")),
            ("lo_import('/x')", side("lo_import")),
            ("lower('A')", Call::Harmless),
            ("random()", Call::Harmless),
            ("pg_catalog.anything()", Call::Harmless),
            ("information_schema._pg_truetypid(a, t)", Call::Harmless),
            ("public.random()", user("public.random")),
            ("my_writer()", user("my_writer")),
            ("app.my_writer()", user("app.my_writer")),
            ("\"Lower\"('A')", user("Lower")),
            // write_functions: a qualified entry also catches the unqualified call.
            ("audit.log_it()", side("audit.log_it")),
            ("log_it()", side("log_it")),
            ("other.log_it()", user("other.log_it")),
            ("bump()", side("bump")),
            ("x.bump()", side("x.bump")),
            // read_only_functions: a qualified entry matches only that schema.
            ("my_random()", Call::Harmless),
            ("app.my_random()", Call::Harmless),
            ("util.pick()", Call::Harmless),
            ("pick()", user("pick")),
            ("other.pick()", user("other.pick")),
        ] {
            assert_eq!(overrides.judge(&name_of(call)), want, "{call}");
        }
    }

    #[test]
    fn node_local_functions_unless_listed_read_only() {
        let node_local = |detail: &str| Call::NodeLocal(detail.into());
        let overrides = Overrides::default();
        for (call, want) in [
            ("pg_is_in_recovery()", node_local("pg_is_in_recovery")),
            (
                "pg_catalog.PG_CURRENT_WAL_LSN()",
                node_local("pg_current_wal_lsn"),
            ),
            (
                "public.pg_stat_statements(true)",
                node_local("pg_stat_statements"),
            ),
            ("pg_stat_reset()", Call::SideEffect("pg_stat_reset".into())),
            (
                "brin_summarize_new_values('i')",
                Call::SideEffect("brin_summarize_new_values".into()),
            ),
            ("pg_backend_pid()", Call::Harmless),
        ] {
            assert_eq!(overrides.judge(&name_of(call)), want, "{call}");
        }
        let listed = Overrides::new(&[], &["pg_is_in_recovery".into()]);
        assert_eq!(
            listed.judge(&name_of("pg_is_in_recovery()")),
            Call::Harmless
        );
    }

    #[test]
    fn write_functions_win_over_read_only_functions() {
        let overrides = Overrides::new(&["f".into()], &["f".into()]);
        assert_eq!(
            overrides.judge(&name_of("f()")),
            Call::SideEffect("f".into())
        );
    }
}
