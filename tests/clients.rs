//! Real client programs (the mariadb CLI, PHP mysqli and PDO, Python PyMySQL) run the same
//! script against the primary directly and through Weiche; their output must be identical.
//! Each script covers types, prepared statements, a rolled-back transaction, multi-statements,
//! LOAD DATA LOCAL INFILE of 20 MB, a 20 MB blob and KILL QUERY (see tests/clients/).
//! The `split_*` scripts run application patterns (SET NAMES, time_zone, USE, user variables,
//! temporary tables, LAST_INSERT_ID(), FOUND_ROWS(), GET_LOCK, transactions, autocommit=0,
//! prepared statements reused 1,000 times, SHOW WARNINGS) through a splitting Weiche.
//! The `compressed_*` tests run them on the compressed protocol (DB_COMPRESS=1) both ways, with
//! Weiche's backend connections compressed or not; each script prints the connection's
//! `Compression` status, which must say ON through Weiche as it does directly.

mod common;

use common::{app_password, app_user, host_port, primary, Weiche};
use std::process::Command;

fn run_client(program: &str, args: &[&str], addr: &str, prefix: &str, compress: bool) -> String {
    let (host, port) = host_port(addr);
    let out = Command::new(program)
        .args(args)
        .env("DB_COMPRESS", if compress { "1" } else { "0" })
        .env("DB_HOST", host)
        .env("DB_PORT", port.to_string())
        .env("DB_USER", app_user())
        .env("DB_PASSWORD", app_password())
        .env("DB_NAME", "weiche")
        .env("TEST_TABLE_PREFIX", prefix)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} against {addr} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn same_through_weiche(program: &str, script: &str, prefix: &str) {
    same_through(Weiche::start(), program, script, prefix)
}

/// The same, with Weiche splitting reads to the replicas.
fn same_through_split(program: &str, script: &str, prefix: &str) {
    same_through(Weiche::start_split(), program, script, prefix)
}

fn same_through(w: Weiche, program: &str, script: &str, prefix: &str) {
    same_through_with(w, program, script, prefix, false)
}

/// The same on the compressed protocol.
fn same_compressed(w: Weiche, program: &str, script: &str, prefix: &str) {
    same_through_with(w, program, script, prefix, true)
}

fn same_through_with(w: Weiche, program: &str, script: &str, prefix: &str, compress: bool) {
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let direct = run_client(
        program,
        &[&path],
        &primary(),
        &format!("{prefix}d_"),
        compress,
    );
    let proxied = run_client(
        program,
        &[&path],
        &w.addr(),
        &format!("{prefix}w_"),
        compress,
    );
    if compress {
        assert!(
            direct
                .lines()
                .any(|l| l.starts_with("compression:") && l.ends_with("ON")),
            "{script} did not get a compressed connection directly:\n{direct}"
        );
    }
    assert!(
        direct.lines().count() > 5,
        "the script printed too little:\n{direct}"
    );
    let d: Vec<&str> = direct.lines().collect();
    let p: Vec<&str> = proxied.lines().collect();
    for (i, (a, b)) in d.iter().zip(&p).enumerate() {
        assert_eq!(
            a,
            b,
            "{script}: line {} differs between direct and Weiche",
            i + 1
        );
    }
    assert_eq!(d.len(), p.len(), "{script}: different number of lines");
}

#[test]
fn mariadb_cli() {
    same_through_weiche("bash", "cli.sh", "cli_");
}

#[test]
fn php_mysqli() {
    same_through_weiche("php", "mysqli.php", "mysqli_");
}

#[test]
fn php_pdo() {
    same_through_weiche("php", "pdo.php", "pdo_");
}

#[test]
fn python_pymysql() {
    // Debian's python3 with python3-pymysql (the one on PATH may be another interpreter).
    same_through_weiche("/usr/bin/python3", "pymysql_client.py", "pymysql_");
}

#[test]
fn split_php_mysqli() {
    same_through_split("php", "split_mysqli.php", "smysqli_");
}

#[test]
fn split_php_pdo() {
    same_through_split("php", "split_pdo.php", "spdo_");
}

#[test]
fn split_python_pymysql() {
    same_through_split("/usr/bin/python3", "split_pymysql.py", "spymysql_");
}

#[test]
fn compressed_mariadb_cli() {
    same_compressed(Weiche::start(), "bash", "cli.sh", "ccli_");
}

#[test]
fn compressed_mariadb_cli_to_a_compressed_backend() {
    same_compressed(
        Weiche::start_primary_compressed(""),
        "bash",
        "cli.sh",
        "cclib_",
    );
}

#[test]
fn compressed_php_mysqli_to_a_compressed_backend() {
    same_compressed(
        Weiche::start_primary_compressed(""),
        "php",
        "mysqli.php",
        "cmysqli_",
    );
}

#[test]
fn compressed_php_pdo() {
    // PDO sends SHOW STATUS as a prepared statement: the server answers it for Weiche's
    // connection, so that connection is compressed too here (see docs/compression.md).
    same_compressed(
        Weiche::start_primary_compressed(""),
        "php",
        "pdo.php",
        "cpdo_",
    );
}

#[test]
fn compressed_python_mysqlclient() {
    same_compressed(
        Weiche::start(),
        "/usr/bin/python3",
        "mysqlclient_client.py",
        "cmyc_",
    );
}

#[test]
fn compressed_python_mysqlclient_to_a_compressed_backend() {
    same_compressed(
        Weiche::start_primary_compressed(""),
        "/usr/bin/python3",
        "mysqlclient_client.py",
        "cmycb_",
    );
}

#[test]
fn python_mysqlclient_uncompressed() {
    same_through_weiche("/usr/bin/python3", "mysqlclient_client.py", "myc_");
}
