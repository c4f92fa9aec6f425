//! `decide` by table: a request in, (destination, reason) out, one line per rule of
//! docs/routing.md's order.

use super::*;
use crate::config::{Cli, LoadedConfig};
use crate::sql::analyze;
use clap::Parser;

const PRIMARY: usize = 0;

fn config(extra: &[&str]) -> Config {
    // Flags beyond the topology, when a case needs them.
    let mut args = vec![
        "weiche",
        "-b",
        "127.0.0.1:13306",
        "-r",
        "127.0.0.1:13307",
        "--user",
        "app:secret",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args).expect("flags");
    LoadedConfig::load(cli).expect("config").config
}

fn request<'a>(analysis: &'a Analysis, text: &'a [u8], writes: &'a Writes) -> Request<'a> {
    Request {
        analysis,
        text,
        user: "app",
        schema: None,
        held: Held::Free,
        script_backend: None,
        writes,
        avoid: None,
        last: None,
    }
}

/// Where `sql` goes, and the reason's text, with `held` and `script` applied to the request.
fn route(
    config: &Config,
    sql: &str,
    held: Held,
    script: Option<usize>,
    writes: &Writes,
) -> (Destination, String) {
    let table = BackendTable::new(config);
    let analysis = analyze(sql.as_bytes());
    let r = Request {
        held,
        script_backend: script,
        ..request(&analysis, sql.as_bytes(), writes)
    };
    let route = decide(config, &table, r).expect("a route");
    (route.destination, route.to_string())
}

/// (statement, what holds the session, Lua's backend, the writes, where it goes, the reason).
type Case<'a> = (
    &'a str,
    Held,
    Option<usize>,
    &'a Writes,
    Destination,
    &'a str,
);

#[test]
fn each_rule_in_its_order() {
    let c = config(&[]);
    let none = Writes::default();
    let mut wrote = Writes::default();
    wrote.after_statement(false, true, false, false);
    let pinned = || Held::Pinned {
        backend: PRIMARY,
        reasons: "transaction".into(),
    };
    let replica = Destination::Backend(1);
    let primary = Destination::Backend(PRIMARY);
    let cases: &[Case<'_>] = &[
        (
            "SELECT 1",
            pinned(),
            Some(1),
            &none,
            Destination::Current,
            "pinned: transaction",
        ),
        (
            "SELECT FOUND_ROWS()",
            Held::ForNext,
            None,
            &none,
            Destination::Current,
            "reads the previous statement's results on its server",
        ),
        ("SELECT 1", Held::ForNext, None, &none, replica, "read"),
        (
            "SELECT 1",
            Held::Free,
            Some(PRIMARY),
            &none,
            primary,
            "Lua: proxy.connection.backend_ndx",
        ),
        (
            "/* weiche:primary */ SELECT 1",
            Held::Free,
            None,
            &none,
            primary,
            "hint: primary",
        ),
        (
            "/* weiche:replica */ SELECT 1",
            Held::Free,
            None,
            &wrote,
            replica,
            "hint: replica",
        ),
        (
            "SELECT 1",
            Held::Free,
            None,
            &wrote,
            primary,
            "read after the session's own write (read-your-writes window)",
        ),
        (
            "SELECT 1 FOR UPDATE",
            Held::Free,
            None,
            &none,
            primary,
            "locking read (FOR UPDATE)",
        ),
        ("SELECT 1", Held::Free, None, &none, replica, "read"),
        (
            "START TRANSACTION READ ONLY",
            Held::Free,
            None,
            &none,
            replica,
            "START TRANSACTION READ ONLY runs on one replica",
        ),
    ];
    for (sql, held, script, writes, want, reason) in cases {
        let got = route(&c, sql, held.clone(), *script, writes);
        assert_eq!(got, (*want, reason.to_string()), "{sql} with {held:?}");
    }
}

#[test]
fn rules_come_after_hints_and_before_the_classifier() {
    let mut c = config(&[]);
    c.rules.push(crate::config::Rule {
        digest: None,
        text: Some(regex_lite::Regex::new("^SELECT 2$").expect("regex")),
        user: None,
        schema: None,
        target: RuleTarget::Primary,
        name: "rule 1".into(),
    });
    let none = Writes::default();
    let got = route(&c, "SELECT 2", Held::Free, None, &none);
    assert_eq!(
        got,
        (Destination::Backend(PRIMARY), "rule 1 matched".into())
    );
    let got = route(&c, "SELECT 3", Held::Free, None, &none);
    assert_eq!(got, (Destination::Backend(1), "read".into()));
}

#[test]
fn a_replica_rule_moves_reads_but_never_writes_or_locking_reads() {
    let mut c = config(&[]);
    c.rules.push(crate::config::Rule {
        digest: None,
        text: None,
        user: Some("app".into()),
        schema: None,
        target: RuleTarget::Replica,
        name: "rule 1".into(),
    });
    let none = Writes::default();
    let got = route(&c, "SELECT NOW()", Held::Free, None, &none);
    assert_eq!(got.0, Destination::Backend(1), "{got:?}");
    for sql in [
        "UPDATE t SET v = 1",
        "SELECT v FROM t FOR UPDATE",
        "SELECT GET_LOCK('x', 1)",
        "SELECT s.nextval",
        "SELECT 1; DELETE FROM t",
    ] {
        let got = route(&c, sql, Held::Free, None, &none);
        assert_eq!(got.0, Destination::Backend(PRIMARY), "{sql}: {got:?}");
    }
}

#[test]
fn reads_without_a_replica_fall_back_and_say_so() {
    let c = config(&[]);
    let table = BackendTable::new(&c);
    table.set_state(1, State::Down, "test");
    let analysis = analyze(b"SELECT 1");
    let none = Writes::default();
    let route = decide(&c, &table, request(&analysis, b"SELECT 1", &none)).expect("route");
    assert_eq!(route.destination, Destination::Backend(PRIMARY));
    assert_eq!(
        route.to_string(),
        "read; no replica available, primary serves it"
    );
}

#[test]
fn a_read_that_must_see_a_write_waits_on_a_replica_that_has_not_applied_it() {
    let c = config(&[]);
    let table = BackendTable::new(&c);
    let mut writes = Writes::default();
    let pos = GtidPos::parse("0-1-7").expect("gtid");
    writes.committed_at(&pos);
    writes.after_statement(true, true, false, false);
    let analysis = analyze(b"SELECT 1");
    let route = decide(&c, &table, request(&analysis, b"SELECT 1", &writes)).expect("route");
    assert_eq!(route.wait, Some(Wait::For(pos.clone())));
    // Behind, with the primary up: the primary serves it; without one, the replica as it is.
    assert_eq!(when_behind(&table, &route, Some(&pos)), Ok(PRIMARY));
    table.set_state(PRIMARY, State::Down, "test");
    assert_eq!(when_behind(&table, &route, Some(&pos)), Ok(1));
    table.set_state(1, State::Down, "test");
    assert!(when_behind(&table, &route, Some(&pos)).is_err());
}
