//! The Debian package: built with cargo-deb from this build, installed on this machine with
//! dpkg, Weiche started from it as the package's `weiche` account with the installed
//! configuration (the example, which points at the sandbox), a query through it, then purged.

mod common;

use common::opts;
use mysql_async::prelude::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "weiche"]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_and_runs() {
    let deb = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weiche-test.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // The binary the tests run (dev profile): no second build.
    run(Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--no-build", "--profile", "dev", "--no-strip", "-o"])
        .arg(&deb));
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));

    let version = run(Command::new("/usr/bin/weiche").arg("--version"));
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    let unit = std::fs::read_to_string("/usr/lib/systemd/system/weiche.service")
        .or_else(|_| std::fs::read_to_string("/lib/systemd/system/weiche.service"))
        .expect("the systemd unit is installed");
    for line in [
        "ExecStart=/usr/bin/weiche --config /etc/weiche/weiche.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "User=weiche",
    ] {
        assert!(unit.contains(line), "{line} missing from the unit");
    }
    let mode = run(Command::new("stat").args(["-c", "%a %U %G", "/etc/weiche/weiche.toml"]));
    assert_eq!(mode.trim(), "640 root weiche", "the config holds passwords");
    assert!(
        std::path::Path::new("/usr/share/weiche/lua/proxy/tokenizer.lua").exists(),
        "the bundled Lua modules"
    );
    run(Command::new("/usr/bin/weiche").args([
        "--config",
        "/etc/weiche/weiche.toml",
        "--check-config",
    ]));

    // Start it as the service would: the weiche account, the installed configuration.
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("package-weiche.log");
    let logfile = std::fs::File::create(&log).unwrap();
    // setpriv execs weiche itself (runuser would stay in between and take the signals).
    let mut child = Command::new("setpriv")
        .args(["--reuid=weiche", "--regid=weiche", "--init-groups"])
        .args(["/usr/bin/weiche", "--config", "/etc/weiche/weiche.toml"])
        .args(["--proxy-address", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(logfile)
        .spawn()
        .expect("start the installed weiche");
    let deadline = Instant::now() + Duration::from_secs(15);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let port = text
            .lines()
            .find(|l| l.contains(" listening") && l.contains("weiche "))
            .and_then(|l| l.split("address=127.0.0.1:").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(p) = port {
            break p;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the installed weiche did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut c = mysql_async::Conn::new(opts(&format!("127.0.0.1:{port}")))
        .await
        .expect("connect through the installed weiche");
    let one: Option<u32> = c.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    c.disconnect().await.ok();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends it cleanly: {status:?}");
    drop(_installed);
    assert!(!std::path::Path::new("/usr/bin/weiche").exists(), "purged");
}
