use super::*;

fn settings(statements: &[&str]) -> Settings {
    let mut settings = Settings::default();
    for sql in statements {
        settings.record(Bytes::copy_from_slice(sql.as_bytes()));
    }
    settings
}

fn replay(settings: &Settings, have: u64, params: &[(String, String)]) -> Vec<String> {
    settings
        .replay_since(have, params)
        .concat()
        .split("\n;\n")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_later_setting_of_a_parameter_replaces_the_earlier() {
    let s = settings(&[
        "SET search_path = a",
        "SET application_name = 'x'",
        "set SEARCH_PATH to b",
        "SET TIME ZONE 'UTC'",
        "SET timezone = 'CET'",
    ]);
    assert_eq!(
        replay(&s, 0, &[]),
        [
            "SET application_name = 'x'",
            "set SEARCH_PATH to b",
            "SET timezone = 'CET'"
        ]
    );
    assert_eq!(s.seq(), 5);
    assert_eq!(replay(&s, 3, &[]), ["SET timezone = 'CET'"]);
    assert!(s.replay_since(5, &[]).is_empty());
}

#[test]
fn reset_all_keeps_the_role() {
    let s = settings(&[
        "SET ROLE r",
        "SET search_path = a",
        "SET SESSION AUTHORIZATION u",
        "SET x.y = 1; SET work_mem = '8MB'",
        "RESET ALL",
    ]);
    assert_eq!(
        replay(&s, 0, &[]),
        ["SET ROLE r", "SET SESSION AUTHORIZATION u", "RESET ALL"]
    );
    let s = settings(&["SET ROLE r", "RESET ROLE", "RESET search_path"]);
    assert_eq!(replay(&s, 0, &[]), ["RESET ROLE", "RESET search_path"]);
}

#[test]
fn strings_are_split_into_statements_and_discard_all_starts_over() {
    let mut s = settings(&["SET a.b = 1; SET a.c = 2", "SET a.b = 1;SET a.c = 3"]);
    assert_eq!(replay(&s, 0, &[]), ["SET a.b = 1", "SET a.c = 3"]);
    s.record(Bytes::from_static(b"LOAD 'x'"));
    s.record(Bytes::from_static(b"LOAD 'x'"));
    assert_eq!(
        replay(&s, 0, &[]),
        ["SET a.b = 1", "SET a.c = 3", "LOAD 'x'"]
    );
    s.discard_all();
    let discarded = ["SET SESSION AUTHORIZATION DEFAULT", " RESET ALL"];
    assert_eq!(replay(&s, 0, &[]), discarded);
    assert_eq!(replay(&s, 2, &[]), discarded);
}

#[test]
fn keys() {
    let param = |name: &str| Key::Parameter(name.as_bytes().into());
    for (sql, key) in [
        ("SET search_path TO a", param("search_path")),
        ("SET SESSION search_path = a;", param("search_path")),
        ("SET SCHEMA 'a'", param("search_path")),
        ("SET NAMES 'UTF8'", param("client_encoding")),
        ("RESET TIME ZONE", param("timezone")),
        (
            "RESET SESSION AUTHORIZATION",
            param("session_authorization"),
        ),
        (
            "SET SESSION AUTHORIZATION DEFAULT",
            param("session_authorization"),
        ),
        ("SET \"Odd\" = 1", Key::Text),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            Key::Text,
        ),
        ("SET application_name = 'a;b'", Key::Text),
        ("reset all", Key::All),
        ("SELECT set_config('a.b', 'x', false)", Key::Text),
        (
            "SELECT pg_catalog.set_config(E'JIT', E'off', false)",
            param("jit"),
        ),
        (
            "SELECT pg_catalog.set_config(E'a', E'1', false), pg_catalog.set_config(E'b', E'2', false)",
            Key::Text,
        ),
        ("BEGIN; SET a.b = 1; COMMIT", Key::Text),
    ] {
        assert_eq!(key_of(sql.as_bytes()), key, "{sql}");
    }
}

#[test]
fn a_string_with_transaction_control_is_a_query_of_its_own() {
    let mut s = settings(&["SET a.b = 1"]);
    s.record_whole(Bytes::from_static(b"BEGIN; SET a.c = 2; ROLLBACK"));
    s.record(Bytes::from_static(b"SET a.d = 3"));
    s.record(Bytes::from_static(b"SET a.e = 4"));
    assert_eq!(
        s.replay_since(0, &[]),
        [
            "SET a.b = 1\n;\n",
            "BEGIN; SET a.c = 2; ROLLBACK\n;\n",
            "SET a.d = 3\n;\nSET a.e = 4\n;\n"
        ]
    );
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn started(settings: &[(&str, &str)], told: &[(&str, &str)]) -> Settings {
    Settings::new(&StartupSettings {
        settings: pairs(settings),
        told: std::sync::Arc::new(pairs(told)),
    })
}

/// A unit of `sql` settled.
fn set(s: &mut Settings, sql: &'static str) {
    s.record(Bytes::from_static(sql.as_bytes()));
    s.unit_settled();
}

#[test]
fn reported_parameters_are_replayed_with_their_reported_value() {
    let told = [
        ("application_name", ""),
        ("DateStyle", "ISO, MDY"),
        ("server_version", "15.1"),
        ("TimeZone", "UTC"),
    ];
    let mut s = started(&[], &told);
    assert_eq!(
        s.seq(),
        0,
        "nothing to replay for a client without settings"
    );
    // What the primary reports after each statement; the statements are not logged.
    set(&mut s, "SET DateStyle = 'ISO, YMD'");
    s.report("DateStyle", "ISO, YMD");
    let first = s.seq();
    set(&mut s, "SET datestyle TO 'Postgres'");
    s.report("DateStyle", "Postgres, YMD");
    s.report("server_version", "99");
    s.report("DateStyle", "Postgres, YMD");
    assert_eq!(s.seq(), first + 1, "a value reported again changes nothing");
    let fresh = pairs(&told);
    assert_eq!(
        replay(&s, 0, &fresh),
        ["SELECT pg_catalog.set_config(E'DateStyle', E'Postgres, YMD', false)"]
    );
    assert_eq!(replay(&s, first, &fresh), replay(&s, 0, &fresh));
    // After a logged statement, which may have changed any of them: all of them.
    set(&mut s, "SET work_mem = '8MB'");
    assert_eq!(
        replay(&s, first + 1, &fresh),
        [
            "SET work_mem = '8MB'",
            "SELECT pg_catalog.set_config(E'application_name', E'', false), \
             pg_catalog.set_config(E'DateStyle', E'Postgres, YMD', false), \
             pg_catalog.set_config(E'TimeZone', E'UTC', false)"
        ]
    );
    assert_eq!(s.take_runner_seq(), s.seq());
}

#[test]
fn startup_settings_come_first_and_back_after_a_reset() {
    let told = [
        ("application_name", "app"),
        ("DateStyle", "Postgres, MDY"),
        ("TimeZone", "UTC"),
    ];
    let settings = [
        ("search_path", "a, b"),
        ("application_name", "app"),
        ("datestyle", "Postgres, MDY"),
    ];
    let mut s = started(&settings, &told);
    assert_eq!(s.seq(), 1);
    let fresh = pairs(&[
        ("application_name", ""),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
    ]);
    let search_path = "SELECT pg_catalog.set_config(E'search_path', E'a, b', false)";
    let all_reported = "SELECT pg_catalog.set_config(E'application_name', E'app', false), \
                        pg_catalog.set_config(E'DateStyle', E'Postgres, MDY', false), \
                        pg_catalog.set_config(E'TimeZone', E'UTC', false)";
    assert_eq!(replay(&s, 0, &fresh), [search_path, all_reported]);

    // RESET ALL on the connection that has them: the server reports its defaults.
    s.report("application_name", "");
    s.report("DateStyle", "ISO, MDY");
    set(&mut s, "RESET ALL");
    let runner = s.take_runner_seq();
    assert_eq!(
        s.take_corrections(),
        pairs(&[("application_name", "app"), ("DateStyle", "Postgres, MDY")])
    );
    assert_eq!(replay(&s, runner, &fresh), [search_path, all_reported]);
    assert_eq!(
        replay(&s, 1, &fresh),
        ["RESET ALL", search_path, all_reported],
        "another connection"
    );

    // RESET of one startup setting, and a SET that replaces the return to it.
    set(&mut s, "SET search_path = c");
    set(&mut s, "RESET search_path");
    let runner = s.take_runner_seq();
    assert!(s.take_corrections().is_empty());
    assert_eq!(replay(&s, runner, &fresh), [search_path, all_reported]);
    set(&mut s, "SET search_path TO c");
    assert_eq!(s.take_runner_seq(), s.seq());
    assert_eq!(
        replay(&s, 0, &fresh),
        ["RESET ALL", "SET search_path TO c", all_reported]
    );
}

#[test]
fn a_whole_string_returns_only_what_it_last_reset() {
    let mut s = started(&[("search_path", "a"), ("work_mem", "8MB")], &[]);
    let seq = s.seq();
    s.record_whole(Bytes::from_static(
        b"BEGIN; RESET ALL; SET search_path = c; COMMIT",
    ));
    s.unit_settled();
    let runner = s.take_runner_seq();
    assert_eq!(runner, seq + 1);
    assert_eq!(
        replay(&s, runner, &[]),
        ["SELECT pg_catalog.set_config(E'work_mem', E'8MB', false)"]
    );
    s.record_whole(Bytes::from_static(b"BEGIN; RESET ALL; ROLLBACK"));
    assert_eq!(
        s.take_runner_seq(),
        s.seq(),
        "rolled back: nothing to return to"
    );
}

#[test]
fn recognises_resets() {
    for sql in [
        "RESET search_path",
        "reset all",
        "SET search_path TO DEFAULT",
        "set session work_mem = default;",
        "SET TIME ZONE LOCAL",
        "SET TIME ZONE DEFAULT",
    ] {
        assert!(is_reset(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "SET search_path TO a",
        "SET TIME ZONE 'UTC'",
        "SET a = 'DEFAULT'",
        "SET LOCAL a TO DEFAULT x",
        "SELECT 1",
    ] {
        assert!(!is_reset(sql.as_bytes()), "{sql}");
    }
    assert_eq!(
        statements(b"SET a = 'x;y'; SET \"b;\" = 1;; "),
        [&b"SET a = 'x;y'"[..], &b" SET \"b;\" = 1"[..]]
    );
}
