//! sysbench oltp_read_write through a splitting Weiche, with server-side prepared statements and
//! with the text protocol, and on the compressed protocol: it must finish with zero errors. Deadlocks (1213) are the one error
//! the workload itself produces on a direct connection too; sysbench retries them, and any other
//! error ends the run and fails the test.

mod common;

use common::{app_password, app_user, host_port, primary, Weiche};
use std::process::Command;

fn sysbench(addr: &str, ps_mode: &str, command: &str, time: u32) -> String {
    sysbench_with(addr, ps_mode, command, time, "off")
}

fn sysbench_with(addr: &str, ps_mode: &str, command: &str, time: u32, compression: &str) -> String {
    let (host, port) = host_port(addr);
    let out = Command::new("sysbench")
        .args([
            "oltp_read_write",
            "--db-driver=mysql",
            &format!("--mysql-host={host}"),
            &format!("--mysql-port={port}"),
            &format!("--mysql-user={}", app_user()),
            &format!("--mysql-password={}", app_password()),
            "--mysql-db=test",
            "--tables=1",
            "--table-size=10000",
            "--threads=8",
            &format!("--time={time}"),
            &format!("--db-ps-mode={ps_mode}"),
            "--report-interval=0",
            "--mysql-ignore-errors=1213",
            &format!("--mysql-compression={compression}"),
            command,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run sysbench (scripts/test installs it): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "sysbench {command} ({ps_mode}) through {addr} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn counter(report: &str, name: &str) -> u64 {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no '{name}' in the sysbench report:\n{report}"))
}

#[test]
fn oltp_read_write_has_no_errors() {
    // The database for sysbench's table (the app account may create it).
    let direct = primary();
    sysbench(&direct, "disable", "cleanup", 1);
    sysbench(&direct, "disable", "prepare", 1);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let w = Weiche::start_split();
    for (mode, compression) in [("auto", "off"), ("disable", "off"), ("auto", "on")] {
        let report = sysbench_with(&w.addr(), mode, "run", 8, compression);
        let total = counter(&report, "total:");
        assert!(
            total > 1000,
            "{mode} compression={compression}: too few queries:\n{report}"
        );
        assert_eq!(
            counter(&report, "reconnects:"),
            0,
            "{mode} compression={compression}:\n{report}"
        );
    }
    sysbench(&direct, "disable", "cleanup", 1);
}
