//! Decides whether a SQL string may run on the hot-standby replica.
//!
//! Only statements that provably cannot write, lock rows, or depend on
//! session state of the primary go to the replica; everything else, including
//! anything we fail to understand, goes to the primary. What the text alone
//! cannot tell, whether a user function is volatile, is left to
//! [`Analysis::resolve`].

use std::ops::ControlFlow;
use std::sync::Arc;

use sqlparser::ast::{
    Expr, ObjectName, Query, Select, Set, SetExpr, Statement, TableFactor, TransactionAccessMode,
    TransactionMode, UtilityOption, Visit, Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::analysis::{Analysis, Reads};
use super::catalog::UserFunctions;
use super::ddl::{catalog_changes, CatalogChanges};
use super::effects::{effects, Effects};
use super::functions::{Call, Overrides};
use super::hint::{causal_hint, route_hint, CausalHint};
use super::name::CatalogName;
use super::node_local;
use super::reason::{Classification, Reason, Route};

/// Upper bound on "structural" tokens (see [`is_structural`]) we hand to
/// sqlparser. Its recursion limit does not cover left-deep chains such as
/// `a+a+a...` or `a[1][1]...`: they build an AST as deep as the chain, and
/// parsing `a[1]...` or dropping any such AST overflows a 2 MiB stack at about
/// 15k-30k links, aborting the whole proxy. Each link needs at least one
/// structural token, so this keeps the depth several times below that while
/// still letting huge literal lists (`IN (1, 2, ...)`) through.
const MAX_STRUCTURAL_TOKENS: usize = 4096;

/// Classifies a (possibly multi-statement) SQL string by its text and the
/// built-in rules only, as the `classify` command does: no configuration, no
/// catalog. Never panics on any input.
pub fn classify(sql: &str) -> Classification {
    analyze(sql, &Overrides::default()).resolve(&UserFunctions::offline())
}

/// Everything the text of `sql` and the configured function lists say about
/// its route (see [`Analysis`]).
pub(super) fn analyze(sql: &str, overrides: &Overrides) -> Analysis {
    let dialect = PostgreSqlDialect {};
    let (classification, reads, changes, effects) =
        match Tokenizer::new(&dialect, sql).tokenize_with_location() {
            Ok(tokens) => {
                let changes = catalog_changes(&tokens);
                let effects = effects(&tokens);
                let (classification, reads) = classify_tokens(tokens, overrides);
                (classification, reads, changes, effects)
            }
            // Nothing is known of what it does: ask the server afterwards.
            Err(_) => (
                primary(Reason::Unparseable, None),
                Reads::default(),
                CatalogChanges::default(),
                Effects::OPAQUE,
            ),
        };
    // A hint only matters for a read.
    let (hint, causal) = match classification.route {
        Route::Replica => (route_hint(sql), causal_hint(sql)),
        Route::Primary => (None, CausalHint::NONE),
    };
    Analysis {
        classification,
        hint,
        causal,
        reads,
        changes,
        effects,
    }
}

/// Replica only if every statement is a read; otherwise the classification of
/// the first statement that needs the primary other than transaction control
/// (`BEGIN; INSERT ...; COMMIT` is a write, `BEGIN; SELECT ...` is not), or of
/// the first transaction control statement when nothing else needs it. Also
/// returns what the reads name that the catalog or a hint decides.
fn classify_tokens(tokens: Vec<TokenWithSpan>, overrides: &Overrides) -> (Classification, Reads) {
    let mut reads = Reads::default();
    if tokens.iter().filter(|t| is_structural(&t.token)).count() > MAX_STRUCTURAL_TOKENS {
        return (primary(Reason::Unparseable, Some("too complex")), reads);
    }
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut first_read = None;
    let mut first_control = None;
    // Inside a read-only transaction this string began: its end is no reason
    // for the primary.
    let mut read_only_transaction = false;
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token_ref().token == Token::EOF {
            break;
        }
        let Ok(statement) = parse_statement(&mut parser) else {
            return (primary(Reason::Unparseable, None), reads);
        };
        if read_only_transaction {
            if let Some(chain) = ends_transaction(&statement) {
                read_only_transaction = chain;
                continue;
            }
        }
        let classification = classify_statement(&statement, overrides, &mut reads);
        match (classification.route, classification.reason) {
            (Route::Primary, Reason::Transaction) => {
                first_control.get_or_insert(classification);
            }
            (Route::Primary, _) => return (classification, reads),
            _ => {
                read_only_transaction |= classification.reason == Reason::ReadOnlyTransaction;
                first_read.get_or_insert(classification);
            }
        }
    }
    let decided = first_control
        .or(first_read)
        .unwrap_or_else(|| replica(Reason::Empty));
    (decided, reads)
}

/// For COMMIT, END and ROLLBACK (not to a savepoint): whether they chain a new
/// transaction like the one they end.
fn ends_transaction(statement: &Statement) -> Option<bool> {
    match statement {
        Statement::Commit { chain, .. }
        | Statement::Rollback {
            chain,
            savepoint: None,
        } => Some(*chain),
        _ => None,
    }
}

/// READ ONLY, and no READ WRITE anywhere: PostgreSQL applies the modes in
/// order, and a standby refuses READ WRITE even when a later READ ONLY wins.
fn standby_can_begin(modes: &[TransactionMode]) -> bool {
    let has = |access| modes.contains(&TransactionMode::AccessMode(access));
    has(TransactionAccessMode::ReadOnly) && !has(TransactionAccessMode::ReadWrite)
}

/// The access mode a transaction's modes ask for: the last one counts.
fn access_mode(modes: &[TransactionMode]) -> Option<TransactionAccessMode> {
    modes.iter().rev().find_map(|mode| match mode {
        TransactionMode::AccessMode(access) => Some(*access),
        TransactionMode::IsolationLevel(_) => None,
    })
}

/// Tokens that can add a level to an unbounded left-deep chain. Literals,
/// placeholders and commas cannot, so long value lists stay cheap.
fn is_structural(token: &Token) -> bool {
    !matches!(
        token,
        Token::Whitespace(_)
            | Token::Comma
            | Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::Placeholder(_)
            | Token::EOF
    )
}

/// Parses one statement and insists it ends at `;` or end of input.
///
/// We drive the parser ourselves instead of `Parser::parse_sql` because
/// `parse_sql` silently stops at a stray `END` after a statement (dropping
/// everything after it) and rejects PostgreSQL's `TABLE name` statement.
fn parse_statement(parser: &mut Parser<'_>) -> Result<Statement, ParserError> {
    let statement = if parser.peek_keyword(Keyword::TABLE) {
        Statement::Query(parser.parse_query()?)
    } else {
        parser.parse_statement()?
    };
    match parser.peek_token_ref() {
        TokenWithSpan {
            token: Token::SemiColon | Token::EOF,
            ..
        } => Ok(statement),
        found => parser.expected_ref("end of statement", found),
    }
}

/// Classifies one statement, adding what a read names to `reads`.
fn classify_statement(
    statement: &Statement,
    overrides: &Overrides,
    reads: &mut Reads,
) -> Classification {
    match statement {
        Statement::Query(query) => classify_query(query, overrides, reads),
        Statement::Explain {
            analyze,
            options,
            statement,
            ..
        } => classify_explain(*analyze, options.as_deref(), statement, overrides, reads),
        Statement::StartTransaction { modes, .. } if standby_can_begin(modes) => {
            replica(Reason::ReadOnlyTransaction)
        }
        Statement::ShowVariable { variable } => {
            if let [name] = variable.as_slice() {
                if node_local::setting(&name.value) {
                    reads
                        .node_local
                        .get_or_insert_with(|| name.value.to_ascii_lowercase().into());
                }
            }
            replica(Reason::Show)
        }
        Statement::ShowFunctions { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. } => replica(Reason::Show),
        other => {
            let (reason, detail) = statement_kind(other);
            Classification {
                route: Route::Primary,
                reason,
                detail,
            }
        }
    }
}

/// EXPLAIN ANALYZE executes its statement, so it needs the primary. Plain
/// EXPLAIN goes to the replica only when the explained statement would too:
/// `EXPLAIN EXECUTE` needs the primary's prepared statement, and explaining a
/// write gains nothing from the replica.
fn classify_explain(
    analyze: bool,
    options: Option<&[UtilityOption]>,
    statement: &Statement,
    overrides: &Overrides,
    reads: &mut Reads,
) -> Classification {
    if analyze || options.unwrap_or_default().iter().any(enables_analyze) {
        return primary(Reason::ExplainAnalyze, None);
    }
    let inner = classify_statement(statement, overrides, reads);
    match inner.route {
        Route::Replica => replica(Reason::Explain),
        Route::Primary => Classification {
            route: Route::Primary,
            reason: Reason::Explain,
            detail: inner.detail,
        },
    }
}

/// `ANALYZE`, `ANALYZE true`, `ANALYZE on`... count; only an explicit false
/// value does not.
fn enables_analyze(option: &UtilityOption) -> bool {
    if !option.name.value.eq_ignore_ascii_case("analyze") {
        return false;
    }
    let Some(arg) = &option.arg else {
        return true;
    };
    let value = arg.to_string().to_ascii_lowercase();
    !matches!(value.trim_matches('\''), "false" | "off" | "no" | "0")
}

/// A query is a read unless something inside it writes, locks or calls a
/// side-effect function.
fn classify_query(query: &Query, overrides: &Overrides, reads: &mut Reads) -> Classification {
    // `WITH ... INSERT ...` parses as a query whose body is the write.
    if let SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) =
        query.body.as_ref()
    {
        let (reason, detail) = statement_kind(s);
        return Classification {
            route: Route::Primary,
            reason,
            detail,
        };
    }
    match query.visit(&mut ReadChecker { overrides, reads }) {
        ControlFlow::Break(classification) => classification,
        ControlFlow::Continue(()) => replica(Reason::Read),
    }
}

/// Walks a query and breaks with the first construct that needs the primary;
/// collects what it reads on the way.
struct ReadChecker<'a> {
    overrides: &'a Overrides,
    reads: &'a mut Reads,
}

impl Visitor for ReadChecker<'_> {
    type Break = Classification;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Classification> {
        if let Some(lock) = query.locks.first() {
            let detail = format!("FOR {}", lock.lock_type);
            return ControlFlow::Break(primary(Reason::Lock, Some(&detail)));
        }
        self.note_table_statements(&query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<Classification> {
        match select.into {
            Some(_) => ControlFlow::Break(primary(Reason::Into, None)),
            None => ControlFlow::Continue(()),
        }
    }

    /// Statements nested in a query are data-modifying CTEs.
    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<Classification> {
        let (_, detail) = statement_kind(statement);
        ControlFlow::Break(Classification {
            route: Route::Primary,
            reason: Reason::Cte,
            detail,
        })
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Classification> {
        match expr {
            Expr::Function(function) => self.check_function(&function.name),
            _ => ControlFlow::Continue(()),
        }
    }

    /// Table functions (`FROM nextval('s')`, `FROM LATERAL nextval('s')`) and relations.
    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Classification> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.check_function(name),
            TableFactor::Table {
                name, args: None, ..
            } => {
                if let Some(relation) = CatalogName::of(name) {
                    self.note_relation(relation);
                }
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Continue(()),
        }
    }
}

impl ReadChecker<'_> {
    /// `TABLE name` reads a relation too, but names it with bare identifiers the visitor
    /// does not show as one; it stands in a query's body or any branch of a set operation.
    fn note_table_statements(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(table) => {
                if let Some(name) = &table.table_name {
                    self.note_relation(CatalogName::from_idents(table.schema_name.as_ref(), name));
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.note_table_statements(left);
                self.note_table_statements(right);
            }
            _ => {}
        }
    }

    /// Remembers a relation read once, and whether it is node-local by its name alone.
    fn note_relation(&mut self, relation: CatalogName) {
        if self.reads.node_local.is_none() && node_local::relation(relation.name()) {
            self.reads.node_local = Some(relation.detail());
        }
        if !self.reads.relations.contains(&relation) {
            self.reads.relations.push(relation);
        }
    }

    /// Breaks if `name` is a side-effect function (see [`Overrides::judge`]);
    /// remembers it once if it is a user function.
    fn check_function(&mut self, name: &ObjectName) -> ControlFlow<Classification> {
        match self.overrides.judge(name) {
            Call::SideEffect(detail) => ControlFlow::Break(Classification {
                route: Route::Primary,
                reason: Reason::Function,
                detail: Some(detail),
            }),
            Call::NodeLocal(detail) => {
                self.reads.node_local.get_or_insert(detail);
                ControlFlow::Continue(())
            }
            Call::Harmless => ControlFlow::Continue(()),
            Call::User(call) => {
                if !self.reads.calls.contains(&call) {
                    self.reads.calls.push(call);
                }
                ControlFlow::Continue(())
            }
        }
    }
}

/// Reason and log detail for a statement that is not a query, SHOW or EXPLAIN.
fn statement_kind(statement: &Statement) -> (Reason, Option<Arc<str>>) {
    use Reason::{Ddl, Lock, Transaction, Utility, Write};
    let (reason, keyword) = match statement {
        Statement::Insert(_) | Statement::Directory { .. } => (Write, "INSERT"),
        Statement::Update(_) => (Write, "UPDATE"),
        Statement::Delete(_) => (Write, "DELETE"),
        Statement::Merge(_) => (Write, "MERGE"),
        Statement::Truncate(_) => (Write, "TRUNCATE"),
        Statement::Copy { to: false, .. } | Statement::CopyIntoSnowflake { .. } => (Write, "COPY"),
        Statement::Copy { to: true, .. } => (Utility, "COPY TO"),
        Statement::RefreshMaterializedView(_) => (Write, "REFRESH MATERIALIZED VIEW"),
        Statement::LoadData { .. } => (Write, "LOAD DATA"),

        // An explicit READ WRITE is told apart: it overrides a read-only default.
        Statement::StartTransaction { begin, modes, .. } => match (begin, access_mode(modes)) {
            (true, Some(TransactionAccessMode::ReadWrite)) => (Transaction, "BEGIN READ WRITE"),
            (true, _) => (Transaction, "BEGIN"),
            (false, Some(TransactionAccessMode::ReadWrite)) => {
                (Transaction, "START TRANSACTION READ WRITE")
            }
            (false, _) => (Transaction, "START TRANSACTION"),
        },
        Statement::Commit { end: true, .. } => (Transaction, "END"),
        Statement::Commit { end: false, .. } => (Transaction, "COMMIT"),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => (Transaction, "ROLLBACK TO SAVEPOINT"),
        Statement::Rollback {
            savepoint: None, ..
        } => (Transaction, "ROLLBACK"),
        Statement::Savepoint { .. } => (Transaction, "SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => (Transaction, "RELEASE SAVEPOINT"),
        Statement::Set(Set::SetTransaction { session: false, .. }) => {
            (Transaction, "SET TRANSACTION")
        }

        Statement::Lock(_) => (Lock, "LOCK TABLE"),
        Statement::LockTables { .. } => (Lock, "LOCK TABLES"),

        Statement::Drop { object_type, .. } => {
            return (Ddl, Some(format!("DROP {object_type}").into()));
        }
        Statement::CreateTable(_) | Statement::CreateVirtualTable { .. } => (Ddl, "CREATE TABLE"),
        Statement::CreateView(view) if view.materialized => (Ddl, "CREATE MATERIALIZED VIEW"),
        Statement::CreateView(_) => (Ddl, "CREATE VIEW"),
        Statement::CreateIndex(_) => (Ddl, "CREATE INDEX"),
        Statement::CreateSchema { .. } => (Ddl, "CREATE SCHEMA"),
        Statement::CreateDatabase { .. } => (Ddl, "CREATE DATABASE"),
        Statement::CreateSequence { .. } => (Ddl, "CREATE SEQUENCE"),
        Statement::CreateFunction(_) => (Ddl, "CREATE FUNCTION"),
        Statement::CreateProcedure { .. } => (Ddl, "CREATE PROCEDURE"),
        Statement::CreateTrigger(_) => (Ddl, "CREATE TRIGGER"),
        Statement::CreateType { .. } => (Ddl, "CREATE TYPE"),
        Statement::CreateDomain(_) => (Ddl, "CREATE DOMAIN"),
        Statement::CreateExtension(_) => (Ddl, "CREATE EXTENSION"),
        Statement::CreateRole(_) => (Ddl, "CREATE ROLE"),
        Statement::CreateUser(_) => (Ddl, "CREATE USER"),
        Statement::CreatePolicy(_) => (Ddl, "CREATE POLICY"),
        Statement::CreateRule(_) => (Ddl, "CREATE RULE"),
        Statement::CreateServer(_) => (Ddl, "CREATE SERVER"),
        Statement::CreateForeignTable(_) => (Ddl, "CREATE FOREIGN TABLE"),
        Statement::CreateCollation(_) => (Ddl, "CREATE COLLATION"),
        Statement::CreateAggregate(_) => (Ddl, "CREATE AGGREGATE"),
        Statement::CreateOperator(_)
        | Statement::CreateOperatorFamily(_)
        | Statement::CreateOperatorClass(_) => (Ddl, "CREATE OPERATOR"),
        Statement::CreateTextSearch(_) => (Ddl, "CREATE TEXT SEARCH"),
        Statement::CreateForeignDataWrapper(_) => (Ddl, "CREATE FOREIGN DATA WRAPPER"),
        Statement::CreateUserMapping(_) => (Ddl, "CREATE USER MAPPING"),
        Statement::AlterTable(_) => (Ddl, "ALTER TABLE"),
        Statement::AlterIndex { .. } => (Ddl, "ALTER INDEX"),
        Statement::AlterView(_) => (Ddl, "ALTER VIEW"),
        Statement::AlterSchema(_) => (Ddl, "ALTER SCHEMA"),
        Statement::AlterFunction(_) => (Ddl, "ALTER FUNCTION"),
        Statement::AlterType(_) => (Ddl, "ALTER TYPE"),
        Statement::AlterRole { .. } => (Ddl, "ALTER ROLE"),
        Statement::AlterUser(_) => (Ddl, "ALTER USER"),
        Statement::AlterPolicy(_) => (Ddl, "ALTER POLICY"),
        Statement::AlterTrigger(_) => (Ddl, "ALTER TRIGGER"),
        Statement::AlterCollation(_) => (Ddl, "ALTER COLLATION"),
        Statement::AlterOperator(_)
        | Statement::AlterOperatorFamily(_)
        | Statement::AlterOperatorClass(_) => (Ddl, "ALTER OPERATOR"),
        Statement::AlterTextSearch(_) => (Ddl, "ALTER TEXT SEARCH"),
        Statement::AlterDefaultPrivileges(_) => (Ddl, "ALTER DEFAULT PRIVILEGES"),
        Statement::RenameTable(_) => (Ddl, "RENAME TABLE"),
        Statement::DropFunction(_) => (Ddl, "DROP FUNCTION"),
        Statement::DropProcedure { .. } => (Ddl, "DROP PROCEDURE"),
        Statement::DropTrigger(_) => (Ddl, "DROP TRIGGER"),
        Statement::DropDomain(_) => (Ddl, "DROP DOMAIN"),
        Statement::DropExtension(_) => (Ddl, "DROP EXTENSION"),
        Statement::DropPolicy(_) => (Ddl, "DROP POLICY"),
        Statement::DropRule(_) => (Ddl, "DROP RULE"),
        Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_) => (Ddl, "DROP OPERATOR"),
        Statement::Comment { .. } => (Ddl, "COMMENT"),
        Statement::Grant(_) | Statement::GrantRole(_) => (Ddl, "GRANT"),
        Statement::Revoke(_) | Statement::RevokeRole(_) => (Ddl, "REVOKE"),

        Statement::Set(_) => (Utility, "SET"),
        Statement::Reset(_) => (Utility, "RESET"),
        Statement::LISTEN { .. } => (Utility, "LISTEN"),
        Statement::UNLISTEN { .. } => (Utility, "UNLISTEN"),
        Statement::NOTIFY { .. } => (Utility, "NOTIFY"),
        Statement::Discard { .. } => (Utility, "DISCARD"),
        Statement::Prepare { .. } => (Utility, "PREPARE"),
        Statement::Execute { .. } => (Utility, "EXECUTE"),
        Statement::Deallocate { .. } => (Utility, "DEALLOCATE"),
        Statement::Declare { .. } => (Utility, "DECLARE"),
        Statement::Fetch { .. } => (Utility, "FETCH"),
        Statement::Close { .. } => (Utility, "CLOSE"),
        Statement::Vacuum(_) => (Utility, "VACUUM"),
        Statement::Analyze(_) => (Utility, "ANALYZE"),
        Statement::Call(_) => (Utility, "CALL"),
        Statement::Load { .. } => (Utility, "LOAD"),
        _ => return (Utility, None),
    };
    (reason, Some(keyword.into()))
}

fn primary(reason: Reason, detail: Option<&str>) -> Classification {
    Classification {
        route: Route::Primary,
        reason,
        detail: detail.map(Into::into),
    }
}

fn replica(reason: Reason) -> Classification {
    Classification {
        route: Route::Replica,
        reason,
        detail: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Reason::*;
    use Route::{Primary as P, Replica as R};

    /// (sql, route, reason, expected Display or "" to skip that check)
    const CASES: &[(&str, Route, Reason, &str)] = &[
        // Plain reads.
        ("SELECT 1", R, Read, "replica: read"),
        ("select 1", R, Read, ""),
        ("SeLeCt 1", R, Read, ""),
        ("SELECT random()", R, Read, ""),
        ("SELECT now()", R, Read, ""),
        ("SELECT count(*) FROM t WHERE x IN (SELECT y FROM u)", R, Read, ""),
        ("WITH a AS (SELECT 1) SELECT * FROM a", R, Read, ""),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 9) SELECT * FROM r", R, Read, ""),
        ("VALUES (1),(2)", R, Read, ""),
        ("TABLE t", R, Read, "replica: read"),
        ("table public.t;", R, Read, ""),
        ("SELECT a FROM t UNION ALL TABLE u", R, Read, ""),
        ("SELECT a FROM t INTERSECT SELECT b FROM u ORDER BY 1", R, Read, ""),
        ("SELECT * FROM t WHERE id = $1", R, Read, ""),
        ("SELECT $1::int, $2::text", R, Read, ""),
        ("/* x */ SELECT 1", R, Read, ""),
        ("-- c\nSELECT 1", R, Read, ""),
        ("SELECT 1 -- trailing comment", R, Read, ""),
        ("SELECT 1;", R, Read, ""),
        ("  SELECT 1 ;; ; ", R, Read, ""),
        ("SELECT 1; SELECT 2", R, Read, "replica: read"),
        ("SELECT * FROM generate_series(1, 10)", R, Read, ""),
        ("SELECT * FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace", R, Read, ""),
        ("SELECT t.*, (SELECT max(x) FROM u WHERE u.id = t.id) FROM t ORDER BY lower(name) LIMIT 10 OFFSET 5", R, Read, ""),
        ("SELECT * FROM t LEFT JOIN LATERAL (SELECT * FROM u WHERE u.id = t.id) s ON true", R, Read, ""),
        ("SELECT sum(x) FILTER (WHERE x > 0) OVER (PARTITION BY y) FROM t", R, Read, ""),
        // Names that merely resemble side-effect functions.
        ("SELECT nextval_count, \"nextval\" FROM t", R, Read, ""),
        ("SELECT * FROM nextval", R, Read, ""),
        ("SELECT lower('A'), loglevel FROM t", R, Read, ""),
        ("SELECT * FROM pg_statistic, pg_stats, pg_settings", R, Read, ""),
        ("SELECT pg_backend_pid(), inet_server_port(), pg_relation_size('t')", R, Read, ""),
        ("SELECT * FROM pg_backend_memory_contexts", R, Read, ""),
        ("SELECT current_setting('cluster_name'), pg_wal_lsn_diff('0/2', '0/1')", R, Read, ""),
        ("SHOW cluster_name", R, Show, ""),
        // Node-local views, functions and settings: the primary's answers.
        ("SELECT * FROM pg_stat_activity", P, NodeLocal, "primary: node_local (pg_stat_activity)"),
        ("select pid from PG_STAT_REPLICATION", P, NodeLocal, "primary: node_local (pg_stat_replication)"),
        ("SELECT * FROM pg_catalog.pg_stat_wal_receiver", P, NodeLocal, "primary: node_local (pg_catalog.pg_stat_wal_receiver)"),
        ("SELECT * FROM pg_stat_wal", P, NodeLocal, ""),
        ("SELECT * FROM pg_stat_slru", P, NodeLocal, ""),
        ("SELECT * FROM pg_stat_bgwriter", P, NodeLocal, ""),
        ("SELECT * FROM pg_stat_database WHERE datname = current_database()", P, NodeLocal, ""),
        ("SELECT * FROM pg_stat_progress_vacuum", P, NodeLocal, ""),
        ("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 't'", P, NodeLocal, ""),
        ("SELECT * FROM pg_statio_all_sequences", P, NodeLocal, ""),
        ("SELECT * FROM public.pg_stat_statements", P, NodeLocal, ""),
        ("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation", P, NodeLocal, "primary: node_local (pg_locks)"),
        ("SELECT * FROM pg_replication_slots", P, NodeLocal, ""),
        ("SELECT * FROM pg_prepared_xacts", P, NodeLocal, ""),
        ("SELECT last_value FROM pg_sequences", P, NodeLocal, ""),
        ("TABLE pg_locks", P, NodeLocal, ""),
        ("SELECT a FROM t WHERE a IN (SELECT pid FROM pg_stat_activity)", P, NodeLocal, ""),
        ("SELECT pg_is_in_recovery()", P, NodeLocal, "primary: node_local (pg_is_in_recovery)"),
        ("SELECT pg_current_wal_lsn()", P, NodeLocal, "primary: node_local (pg_current_wal_lsn)"),
        ("SELECT pg_current_wal_insert_lsn(), pg_current_wal_flush_lsn()", P, NodeLocal, ""),
        ("SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()", P, NodeLocal, ""),
        ("SELECT pg_walfile_name(pg_current_wal_lsn())", P, NodeLocal, ""),
        ("SELECT pg_stat_get_numscans('t'::regclass)", P, NodeLocal, "primary: node_local (pg_stat_get_numscans)"),
        ("SELECT * FROM pg_stat_get_activity(NULL)", P, NodeLocal, ""),
        ("SELECT pg_sequence_last_value('s')", P, NodeLocal, ""),
        ("SELECT pg_postmaster_start_time(), pg_conf_load_time()", P, NodeLocal, ""),
        ("SELECT * FROM pg_control_checkpoint()", P, NodeLocal, ""),
        ("SELECT * FROM pg_ls_waldir()", P, NodeLocal, ""),
        ("SELECT pg_blocking_pids(1)", P, NodeLocal, ""),
        ("SELECT pg_listening_channels()", P, NodeLocal, ""),
        ("SHOW transaction_read_only", P, NodeLocal, "primary: node_local (transaction_read_only)"),
        ("SHOW in_hot_standby", P, NodeLocal, ""),
        ("EXPLAIN SELECT * FROM pg_locks", P, NodeLocal, ""),
        ("SELECT 1; SELECT * FROM pg_stat_activity", P, NodeLocal, ""),
        // ...unless a hint chooses, or something else needs the primary more.
        ("/* pgrepl:replica */ SELECT * FROM pg_stat_wal_receiver", R, Hint, "replica: hint"),
        ("/* pgrepl:primary */ SELECT pg_is_in_recovery()", P, Hint, ""),
        ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", P, Function, "primary: function (pg_terminate_backend)"),
        ("SELECT pg_stat_reset()", P, Function, "primary: function (pg_stat_reset)"),
        ("SELECT * FROM pg_locks FOR UPDATE", P, Lock, ""),
        ("SELECT 1 AS \"end\", a COLLATE \"C\" FROM t", R, Read, ""),
        ("SELECT '{\"a\":1}'::json #>> '{a}', x->'a'->0 FROM t", R, Read, ""),
        // Keywords inside literals and comments are not code.
        ("SELECT 'INSERT INTO t VALUES (1)'", R, Read, ""),
        ("SELECT * FROM t WHERE note = 'FOR UPDATE'", R, Read, ""),
        ("SELECT E'\\'; DELETE FROM t; --'", R, Read, ""),
        ("/* /* */ DELETE FROM t; */ SELECT 1", R, Read, ""),
        ("SELECT $a$ $$; DELETE FROM t; $$ $a$", R, Read, ""),
        // ...but code next to tricky literals is seen.
        ("SELECT '\\'; DELETE FROM t; --'", P, Write, "primary: write (DELETE)"),
        ("SELECT E'\\\\'; DELETE FROM t; --'", P, Write, ""),
        ("/* /* */ SELECT 1 */ DELETE FROM t", P, Write, ""),
        ("SELECT $_$ x $_$; DELETE FROM t", P, Write, ""),
        // SHOW and EXPLAIN.
        ("SHOW search_path", R, Show, "replica: show"),
        ("show ALL", R, Show, ""),
        ("EXPLAIN SELECT 1", R, Explain, "replica: explain"),
        ("EXPLAIN (COSTS false, FORMAT JSON) SELECT * FROM t", R, Explain, ""),
        ("EXPLAIN (ANALYZE false) SELECT 1", R, Explain, ""),
        ("EXPLAIN (ANALYZE off) SELECT 1", R, Explain, ""),
        ("EXPLAIN ANALYZE SELECT 1", P, ExplainAnalyze, "primary: explain_analyze"),
        ("explain analyze verbose SELECT 1", P, ExplainAnalyze, ""),
        ("EXPLAIN (ANALYZE, BUFFERS) SELECT 1", P, ExplainAnalyze, ""),
        ("EXPLAIN (ANALYZE true) SELECT 1", P, ExplainAnalyze, ""),
        ("EXPLAIN INSERT INTO t VALUES (1)", P, Explain, "primary: explain (INSERT)"),
        ("EXPLAIN EXECUTE p", P, Explain, "primary: explain (EXECUTE)"),
        ("EXPLAIN SELECT nextval('s')", P, Explain, "primary: explain (nextval)"),
        // Empty.
        ("", R, Empty, "replica: empty"),
        ("   \n\t", R, Empty, ""),
        (";", R, Empty, ""),
        ("-- just a comment", R, Empty, ""),
        ("/* c */ ; ;", R, Empty, ""),
        // Side-effect functions, everywhere a function can hide.
        ("SELECT nextval('s')", P, Function, "primary: function (nextval)"),
        ("SELECT pg_catalog.nextval('s')", P, Function, "primary: function (nextval)"),
        ("SELECT NEXTVAL('s')", P, Function, "primary: function (nextval)"),
        ("SELECT * FROM t WHERE id = nextval('s')", P, Function, ""),
        ("SELECT * FROM nextval('s')", P, Function, "primary: function (nextval)"),
        ("SELECT * FROM pg_catalog.nextval('s') AS n", P, Function, ""),
        ("SELECT * FROM t, LATERAL nextval('s')", P, Function, ""),
        ("SELECT * FROM t WHERE x IN (SELECT nextval('s'))", P, Function, ""),
        ("SELECT (SELECT (SELECT setval('s', 1)))", P, Function, "primary: function (setval)"),
        ("WITH a AS (SELECT nextval('s')) SELECT * FROM a", P, Function, ""),
        ("SELECT coalesce(nextval('s'), 0)", P, Function, ""),
        ("SELECT * FROM t ORDER BY nextval('s')", P, Function, ""),
        ("SELECT x FROM t GROUP BY x HAVING count(nextval('s')) > 0", P, Function, ""),
        ("SELECT max(x) OVER (ORDER BY nextval('s')) FROM t", P, Function, ""),
        ("SELECT CASE WHEN x THEN pg_advisory_lock(1) END FROM t", P, Function, ""),
        ("SELECT nextval('s')::int + 1", P, Function, ""),
        ("VALUES (nextval('s'))", P, Function, ""),
        ("SELECT 1 UNION SELECT currval('s')", P, Function, "primary: function (currval)"),
        ("SELECT lastval()", P, Function, "primary: function (lastval)"),
        ("SELECT pg_advisory_xact_lock(1)", P, Function, ""),
        ("SELECT pg_try_advisory_lock_shared(1)", P, Function, ""),
        ("SELECT pg_advisory_unlock_all()", P, Function, ""),
        ("SELECT set_config('a.b', 'c', false)", P, Function, "primary: function (set_config)"),
        ("SELECT pg_notify('c', 'x')", P, Function, ""),
        ("SELECT txid_current()", P, Function, ""),
        ("SELECT txid_current_if_assigned()", P, Function, ""),
        ("SELECT pg_current_xact_id()", P, Function, ""),
        ("SELECT pg_current_xact_id_if_assigned()", P, Function, ""),
        ("SELECT lo_import('/tmp/x')", P, Function, "primary: function (lo_import)"),
        ("SELECT lo_export(1, '/tmp/x'), lo_creat(-1)", P, Function, ""),
        ("SELECT lo_create(0), lo_unlink(1), lo_put(1, 0, 'x')", P, Function, ""),
        ("SELECT lo_from_bytea(0, 'x')", P, Function, ""),
        ("SELECT lo_open(1, 131072)", P, Function, ""),
        ("SELECT lowrite(0, 'x')", P, Function, ""),
        ("SELECT pg_create_logical_replication_slot('s', 'pgoutput')", P, Function, ""),
        ("SELECT pg_create_physical_replication_slot('s')", P, Function, ""),
        ("SELECT pg_drop_replication_slot('s')", P, Function, ""),
        ("SELECT pg_replication_slot_advance('s', '0/0')", P, Function, ""),
        ("SELECT pg_copy_logical_replication_slot('a', 'b')", P, Function, ""),
        ("SELECT pg_replication_origin_create('o')", P, Function, ""),
        ("SELECT pg_logical_emit_message(true, 'p', 'm')", P, Function, ""),
        ("SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", P, Function, ""),
        ("SELECT * FROM pg_logical_slot_peek_changes('s', NULL, NULL)", P, Function, ""),
        ("SELECT pg_logical_slot_get_binary_changes('s', NULL, NULL)", P, Function, ""),
        ("SELECT pg_logical_slot_peek_binary_changes('s', NULL, NULL)", P, Function, ""),
        ("SELECT pg_switch_wal()", P, Function, ""),
        ("SELECT pg_create_restore_point('x')", P, Function, ""),
        ("SELECT pg_backup_start('l'), pg_backup_stop()", P, Function, ""),
        ("SELECT pg_start_backup('l')", P, Function, ""),
        ("SELECT pg_stop_backup()", P, Function, ""),
        ("SELECT pg_reload_conf()", P, Function, ""),
        ("SELECT pg_rotate_logfile()", P, Function, ""),
        ("SELECT pg_stat_reset()", P, Function, ""),
        ("SELECT pg_stat_reset_shared('bgwriter')", P, Function, ""),
        ("SELECT pg_promote()", P, Function, ""),
        ("SELECT pg_cancel_backend(1)", P, Function, ""),
        ("SELECT dblink_exec('c', 'DELETE FROM t')", P, Function, ""),
        ("SELECT pg_import_system_collations('pg_catalog')", P, Function, ""),
        // Index maintenance writes the index; a standby refuses it.
        ("SELECT brin_summarize_new_values('i')", P, Function, "primary: function (brin_summarize_new_values)"),
        ("SELECT brin_summarize_range('i'::regclass, 0)", P, Function, "primary: function (brin_summarize_range)"),
        ("SELECT brin_desummarize_range('i', 0)", P, Function, "primary: function (brin_desummarize_range)"),
        ("SELECT gin_clean_pending_list('i')", P, Function, "primary: function (gin_clean_pending_list)"),
        ("SELECT pg_catalog.gin_clean_pending_list(c.oid) FROM pg_class c", P, Function, ""),
        // Row locks, at any depth, and LOCK TABLE.
        ("SELECT * FROM t FOR UPDATE", P, Lock, "primary: lock (FOR UPDATE)"),
        ("SELECT * FROM t FOR SHARE", P, Lock, "primary: lock (FOR SHARE)"),
        ("SELECT * FROM t FOR UPDATE OF t SKIP LOCKED", P, Lock, ""),
        ("SELECT * FROM t WHERE a = $1 LIMIT 1 FOR UPDATE NOWAIT", P, Lock, ""),
        ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", P, Lock, ""),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u FOR SHARE)", P, Lock, ""),
        ("WITH a AS (SELECT * FROM t FOR UPDATE) SELECT * FROM a", P, Lock, ""),
        ("LOCK TABLE t", P, Lock, "primary: lock (LOCK TABLE)"),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", P, Lock, ""),
        // sqlparser cannot parse these lock strengths: still the primary.
        ("SELECT * FROM t FOR NO KEY UPDATE", P, Unparseable, ""),
        ("SELECT * FROM t FOR KEY SHARE", P, Unparseable, ""),
        // SELECT INTO.
        ("SELECT * INTO t2 FROM t", P, Into, "primary: into"),
        ("SELECT 1 INTO TEMP t2", P, Into, ""),
        // Data-modifying CTEs.
        ("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", P, Cte, "primary: cte (INSERT)"),
        ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", P, Cte, "primary: cte (UPDATE)"),
        ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", P, Cte, "primary: cte (DELETE)"),
        ("WITH a AS (WITH b AS (DELETE FROM t RETURNING *) SELECT * FROM b) SELECT * FROM a", P, Cte, "primary: cte (DELETE)"),
        ("SELECT * FROM t WHERE id IN (WITH d AS (DELETE FROM u RETURNING id) SELECT id FROM d)", P, Cte, ""),
        ("WITH x AS (MERGE INTO t USING u ON true WHEN MATCHED THEN DELETE RETURNING *) SELECT * FROM x", P, Cte, "primary: cte (MERGE)"),
        ("WITH a AS (SELECT 1) INSERT INTO t SELECT * FROM a", P, Write, "primary: write (INSERT)"),
        // Multi-statement strings.
        ("SELECT 1; INSERT INTO t VALUES (1)", P, Write, "primary: write (INSERT)"),
        ("INSERT INTO t VALUES (1); SELECT 1", P, Write, "primary: write (INSERT)"),
        ("SELECT 1; SELECT nextval('s'); DELETE FROM t", P, Function, "primary: function (nextval)"),
        ("SHOW x; SELECT 1", R, Show, "replica: show"),
        ("BEGIN; SELECT 1; COMMIT", P, Transaction, "primary: transaction (BEGIN)"),
        ("SELECT 1; garbage", P, Unparseable, ""),
        // parse_sql would drop everything after a stray END; we do not.
        ("SELECT 1 END; DELETE FROM t", P, Unparseable, ""),
        // Writes.
        ("INSERT INTO t VALUES (1)", P, Write, "primary: write (INSERT)"),
        ("insert into t select * from u on conflict do nothing", P, Write, ""),
        ("UPDATE t SET a = 1 WHERE id = $1", P, Write, "primary: write (UPDATE)"),
        ("DELETE FROM t", P, Write, "primary: write (DELETE)"),
        ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", P, Write, "primary: write (MERGE)"),
        ("COPY t FROM STDIN", P, Write, "primary: write (COPY)"),
        ("COPY t TO STDOUT", P, Utility, "primary: utility (COPY TO)"),
        ("COPY (SELECT 1) TO STDOUT", P, Utility, ""),
        ("TRUNCATE t", P, Write, "primary: write (TRUNCATE)"),
        ("REFRESH MATERIALIZED VIEW v", P, Write, ""),
        // DDL.
        ("CREATE TABLE t (id int)", P, Ddl, "primary: ddl (CREATE TABLE)"),
        ("CREATE TABLE t2 AS SELECT * FROM t", P, Ddl, "primary: ddl (CREATE TABLE)"),
        ("ALTER TABLE t ADD COLUMN c int", P, Ddl, "primary: ddl (ALTER TABLE)"),
        ("DROP TABLE t", P, Ddl, "primary: ddl (DROP TABLE)"),
        ("CREATE INDEX i ON t (a)", P, Ddl, "primary: ddl (CREATE INDEX)"),
        ("CREATE VIEW v AS SELECT 1", P, Ddl, ""),
        ("CREATE SEQUENCE s", P, Ddl, ""),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1 $$ LANGUAGE sql", P, Ddl, ""),
        ("COMMENT ON TABLE t IS 'x'", P, Ddl, "primary: ddl (COMMENT)"),
        ("GRANT SELECT ON t TO u", P, Ddl, "primary: ddl (GRANT)"),
        ("REVOKE SELECT ON t FROM u", P, Ddl, "primary: ddl (REVOKE)"),
        // Transaction control.
        ("BEGIN", P, Transaction, "primary: transaction (BEGIN)"),
        ("START TRANSACTION", P, Transaction, "primary: transaction (START TRANSACTION)"),
        ("BEGIN READ WRITE", P, Transaction, "primary: transaction (BEGIN READ WRITE)"),
        ("START TRANSACTION READ WRITE", P, Transaction, "primary: transaction (START TRANSACTION READ WRITE)"),
        ("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", P, Transaction, "primary: transaction (START TRANSACTION)"),
        ("COMMIT", P, Transaction, "primary: transaction (COMMIT)"),
        ("END", P, Transaction, ""),
        ("ROLLBACK", P, Transaction, "primary: transaction (ROLLBACK)"),
        ("ABORT", P, Transaction, ""),
        ("SAVEPOINT s", P, Transaction, "primary: transaction (SAVEPOINT)"),
        ("RELEASE SAVEPOINT s", P, Transaction, ""),
        ("ROLLBACK TO SAVEPOINT s", P, Transaction, ""),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", P, Transaction, ""),
        ("SET TRANSACTION READ ONLY", P, Transaction, "primary: transaction (SET TRANSACTION)"),
        ("PREPARE TRANSACTION 'x'", P, Unparseable, ""),
        ("COMMIT PREPARED 'x'", P, Unparseable, ""),
        // Read-only transactions, whatever their isolation level.
        ("BEGIN READ ONLY", R, ReadOnlyTransaction, "replica: read_only_transaction"),
        ("START TRANSACTION READ ONLY", R, ReadOnlyTransaction, "replica: read_only_transaction"),
        ("begin transaction isolation level serializable, read only", R, ReadOnlyTransaction, ""),
        ("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", R, ReadOnlyTransaction, ""),
        ("BEGIN WORK READ ONLY;", R, ReadOnlyTransaction, ""),
        ("BEGIN READ WRITE, READ ONLY", P, Transaction, "primary: transaction (BEGIN)"),
        ("BEGIN READ ONLY, READ WRITE", P, Transaction, "primary: transaction (BEGIN READ WRITE)"),
        ("BEGIN READ ONLY; SELECT 1; COMMIT", R, ReadOnlyTransaction, ""),
        ("BEGIN READ ONLY; SELECT 1; ROLLBACK; SELECT 2", R, ReadOnlyTransaction, ""),
        ("BEGIN READ ONLY; COMMIT AND CHAIN; SELECT 1; END", R, ReadOnlyTransaction, ""),
        ("BEGIN READ ONLY; COMMIT; COMMIT", P, Transaction, "primary: transaction (COMMIT)"),
        ("BEGIN READ ONLY; SELECT 1; COMMIT; INSERT INTO t VALUES (1)", P, Write, ""),
        ("BEGIN READ ONLY; INSERT INTO t VALUES (1); COMMIT", P, Write, ""),
        ("BEGIN READ ONLY; SELECT nextval('s'); COMMIT", P, Function, ""),
        ("BEGIN READ ONLY; SAVEPOINT s", P, Transaction, ""),
        ("SELECT 1; COMMIT", P, Transaction, ""),
        // sqlparser cannot parse DEFERRABLE: still the primary.
        ("START TRANSACTION READ ONLY DEFERRABLE", P, Unparseable, ""),
        // A read-only default is session state: the primary runs the SET.
        ("SET default_transaction_read_only = on", P, Utility, "primary: utility (SET)"),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", P, Utility, "primary: utility (SET)"),
        // Hints choose among the routes a read may take; nothing else.
        ("/* pgrepl:primary */ SELECT 1", P, Hint, "primary: hint"),
        ("/* pgrepl:replica */ SELECT 1", R, Hint, "replica: hint"),
        ("  /* PGREPL:PRIMARY */ SELECT * FROM t WHERE id = 7", P, Hint, ""),
        ("-- pgrepl:primary\nSELECT 1; SELECT 2", P, Hint, ""),
        ("/* app */ /* pgrepl:primary */ SHOW x", P, Hint, ""),
        ("/* pgrepl:primary */ BEGIN READ ONLY", P, Hint, ""),
        ("/* pgrepl:primary */ ", P, Hint, ""),
        ("/* pgrepl:replica */ INSERT INTO t VALUES (1)", P, Write, "primary: write (INSERT)"),
        ("/* pgrepl:replica */ SELECT nextval('s')", P, Function, "primary: function (nextval)"),
        ("/* pgrepl:replica */ SELECT * FROM t FOR UPDATE", P, Lock, ""),
        ("/* pgrepl:replica */ BEGIN", P, Transaction, ""),
        ("/* pgrepl:replica */ SELECT 1; DELETE FROM t", P, Write, ""),
        ("SELECT 1 /* pgrepl:primary */", R, Read, "replica: read"),
        ("SELECT /* pgrepl:primary */ 1", R, Read, ""),
        ("/* pgrepl:elsewhere */ SELECT 1", R, Read, ""),
        // Offline, user functions are judged by the configuration alone.
        ("SELECT my_writer()", R, Read, "replica: read"),
        // Utility.
        ("SET x = 1", P, Utility, "primary: utility (SET)"),
        ("SET search_path TO public", P, Utility, ""),
        ("SET LOCAL statement_timeout = 0", P, Utility, ""),
        ("RESET ALL", P, Utility, "primary: utility (RESET)"),
        ("LISTEN c", P, Utility, "primary: utility (LISTEN)"),
        ("UNLISTEN *", P, Utility, ""),
        ("NOTIFY c", P, Utility, "primary: utility (NOTIFY)"),
        ("NOTIFY c, 'payload'", P, Utility, ""),
        ("DISCARD ALL", P, Utility, ""),
        ("PREPARE p AS SELECT 1", P, Utility, "primary: utility (PREPARE)"),
        ("EXECUTE p", P, Utility, "primary: utility (EXECUTE)"),
        ("DEALLOCATE p", P, Utility, ""),
        ("DECLARE c CURSOR FOR SELECT 1", P, Utility, "primary: utility (DECLARE)"),
        ("FETCH NEXT FROM c", P, Utility, ""),
        ("CLOSE c", P, Utility, ""),
        ("VACUUM", P, Utility, "primary: utility (VACUUM)"),
        ("VACUUM FULL t", P, Utility, ""),
        ("ANALYZE t", P, Utility, "primary: utility (ANALYZE)"),
        ("CALL p()", P, Utility, "primary: utility (CALL)"),
        // Not parseable by sqlparser (some valid PostgreSQL): the primary.
        ("garbage", P, Unparseable, "primary: unparseable"),
        ("SELEC 1", P, Unparseable, ""),
        ("SELECT 1 +", P, Unparseable, ""),
        ("DO $$ BEGIN END $$", P, Unparseable, ""),
        ("CHECKPOINT", P, Unparseable, ""),
        ("VACUUM ANALYZE t", P, Unparseable, ""),
        ("SELECT * FROM t WHERE a BETWEEN SYMMETRIC 1 AND 2", P, Unparseable, ""),
        ("EXPLAIN EXPLAIN SELECT 1", P, Unparseable, ""),
        ("SELECT 'unterminated", P, Unparseable, ""),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for &(sql, route, reason, display) in CASES {
            let got = classify(sql);
            let display_ok = display.is_empty() || got.to_string() == display;
            if got.route != route || got.reason != reason || !display_ok {
                failures.push(format!(
                    "{sql:?}: got {got}, want {route}: {}",
                    reason.as_str()
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(CASES.len() >= 80);
    }

    #[test]
    fn deeply_nested_parentheses_are_unparseable_not_a_crash() {
        let sql = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
        let got = classify(&sql);
        assert_eq!((got.route, got.reason), (P, Unparseable));
        let sql = format!(
            "SELECT * FROM t WHERE x IN {}1{}",
            "(SELECT ".repeat(5000),
            ")".repeat(5000)
        );
        assert_eq!(classify(&sql).reason, Unparseable);
    }

    #[test]
    fn long_operator_chains_are_refused_before_parsing() {
        // Each would otherwise build an AST thousands of levels deep.
        for link in ["+1", "->1", "[1]", "::int", " || 'a'", " UNION SELECT 1"] {
            let sql = format!("SELECT 1{}", link.repeat(20_000));
            assert_eq!(
                classify(&sql).to_string(),
                "primary: unparseable (too complex)",
                "{link}"
            );
        }
    }

    #[test]
    fn chains_just_under_the_limit_still_classify() {
        let sql = format!("SELECT a{} FROM t", "->1".repeat(MAX_STRUCTURAL_TOKENS - 8));
        assert_eq!(classify(&sql).reason, Read);
        let sql = format!(
            "SELECT a{} FROM t, nextval('s')",
            "[1]".repeat(MAX_STRUCTURAL_TOKENS / 2 - 16)
        );
        assert_eq!(classify(&sql).reason, Function);
    }

    #[test]
    fn long_literal_lists_stay_on_the_replica() {
        let ids: Vec<String> = (0..20_000).map(|i| i.to_string()).collect();
        let sql = format!("SELECT * FROM t WHERE id IN ({})", ids.join(", "));
        assert_eq!(classify(&sql).route, R);
        let params: Vec<String> = (1..=10_000).map(|i| format!("${i}")).collect();
        let sql = format!("SELECT * FROM t WHERE id IN ({})", params.join(","));
        assert_eq!(classify(&sql).route, R);
    }

    #[test]
    fn odd_input_never_panics() {
        for sql in [
            "\0",
            "'",
            "\"",
            "$$",
            "$1$",
            "/*",
            "--",
            "(",
            ")",
            "E'\\",
            "U&'\\",
            "\u{feff}SELECT 1",
            "SELECT 1 FROM t FOR",
            "é",
        ] {
            let got = classify(sql);
            assert!(got.route == P || got.reason == Empty, "{sql:?}: {got}");
        }
    }
}
