//! Test support: the sandbox's addresses and accounts (from `scripts/sandbox env`, with the
//! sandbox's defaults), and a Weiche process started from the freshly built binary.
#![allow(dead_code)]

pub mod binlog;
pub mod memcached;
pub mod raw;
pub mod topology;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

pub fn primary() -> String {
    env_or("WEICHE_SANDBOX_PRIMARY", "127.0.0.1:13306")
}

pub fn replicas() -> Vec<String> {
    env_or("WEICHE_SANDBOX_REPLICAS", "127.0.0.1:13307,127.0.0.1:13308")
        .split(',')
        .map(str::to_string)
        .collect()
}

pub fn app_user() -> String {
    env_or("WEICHE_APP_USER", "app")
}

pub fn app_password() -> String {
    env_or("WEICHE_APP_PASSWORD", "app-secret")
}

pub fn host_port(addr: &str) -> (String, u16) {
    let (h, p) = addr.rsplit_once(':').expect("address host:port");
    (h.to_string(), p.parse().expect("port"))
}

/// The admin port of a Weiche started with an admin address of port 0.
pub fn admin_port(w: &Weiche) -> u16 {
    listening_port(w, "admin interface listening")
}

/// The port in the log line that says `what` is listening.
pub fn listening_port(w: &Weiche, what: &str) -> u16 {
    let log = w.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(what))
        .expect("listening line");
    line.split("address=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("admin port")
}

/// The admin account on the admin port.
pub fn admin_opts(port: u16, password: &str) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(port)
        .user(Some("admin"))
        .pass(Some(password))
        .prefer_socket(false)
        .max_allowed_packet(Some(16 << 20))
        .wait_timeout(Some(28800))
        .into()
}

/// GET a path from the HTTP listener: (status code, body).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A Weiche process; killed when dropped.
pub struct Weiche {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Weiche {
    /// Start Weiche in front of the sandbox primary with the app and root accounts.
    pub fn start() -> Weiche {
        let user = format!("{}:{}", app_user(), app_password());
        Self::start_with(&["-b", &primary(), "--user", &user, "--user", "root:"])
    }

    /// Start Weiche with the sandbox primary and both replicas (read/write splitting).
    pub fn start_split() -> Weiche {
        let user = format!("{}:{}", app_user(), app_password());
        let replicas = replicas().join(",");
        Self::start_with(&[
            "-b",
            &primary(),
            "-r",
            &replicas,
            "--user",
            &user,
            "--user",
            "root:",
            "--monitor-user",
            "monitor:monitor-secret",
        ])
    }

    /// Start Weiche with replicas and a Lua script (`-s`), plus `extra` flags.
    pub fn start_script(script: &str, extra: &[&str]) -> Weiche {
        Self::start_script_or_flags(Some(script), extra)
    }

    /// Start Weiche with replicas, the monitor, an optional Lua script and `extra` flags.
    pub fn start_script_or_flags(script: Option<&str>, extra: &[&str]) -> Weiche {
        let user = format!("{}:{}", app_user(), app_password());
        let replicas = replicas().join(",");
        let primary = primary();
        let mut args = vec![
            "-b",
            primary.as_str(),
            "-r",
            replicas.as_str(),
            "--user",
            user.as_str(),
            "--user",
            "root:",
            "--monitor-user",
            "monitor:monitor-secret",
        ];
        if let Some(s) = script {
            args.extend(["-s", s]);
        }
        args.extend_from_slice(extra);
        Self::start_with(&args)
    }

    /// Start Weiche with a config file: `[[backends]]` for the sandbox are added, the app and
    /// root users too; `extra` is more TOML.
    pub fn start_config(extra: &str) -> Weiche {
        let path = Self::config_file(extra);
        Self::start_with(&["--config", path.to_str().expect("utf-8 path")])
    }

    /// The same with the sandbox primary as the only backend.
    pub fn start_primary_config(extra: &str) -> Weiche {
        let backends = format!(
            "[[backends]]\naddress = \"{}\"\nrole = \"primary\"\n\n",
            primary()
        );
        Self::start_backends_config(&backends, extra)
    }

    /// The sandbox primary as the only backend, its connections on the compressed protocol.
    pub fn start_primary_compressed(extra: &str) -> Weiche {
        let backends = format!(
            "[[backends]]\naddress = \"{}\"\nrole = \"primary\"\ncompress = true\n\n",
            primary()
        );
        Self::start_backends_config(&backends, extra)
    }

    fn start_backends_config(backends: &str, extra: &str) -> Weiche {
        let path = Self::write_config(backends, extra);
        Self::start_with(&["--config", path.to_str().expect("utf-8 path")])
    }

    /// The config file start_config would use (the sandbox's backends, app and root), to start
    /// more than one process from it.
    pub fn config_file(extra: &str) -> PathBuf {
        let r = replicas();
        let backends = format!(
            "[[backends]]\naddress = \"{}\"\nrole = \"primary\"\n\n\
             [[backends]]\naddress = \"{}\"\nrole = \"replica\"\nweight = 2\n\n\
             [[backends]]\naddress = \"{}\"\nrole = \"replica\"\n\n",
            primary(),
            r[0],
            r[1],
        );
        Self::write_config(&backends, extra)
    }

    fn write_config(backends: &str, extra: &str) -> PathBuf {
        let text = format!(
            "{backends}\
             [[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
             [[users]]\nname = \"root\"\npassword = \"\"\n\n{extra}\n{monitor}",
            app_user(),
            app_password(),
            monitor = if extra.contains("[monitor]") {
                ""
            } else {
                "[monitor]\nuser = \"monitor\"\npassword = \"monitor-secret\"\n"
            }
        );
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "weiche-{}-{}.toml",
            std::process::id(),
            table("cfg")
        ));
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn start_with(args: &[&str]) -> Weiche {
        Self::start_with_log(args, "weiche=debug")
    }

    /// Start with this RUST_LOG (load tests keep the log small with "weiche=info").
    pub fn start_with_log(args: &[&str], rust_log: &str) -> Weiche {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let log = dir.join(format!("weiche-{}-{n}.log", std::process::id()));
        let logfile = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_weiche"))
            .args(["--proxy-address", "127.0.0.1:0", "--event-threads", "2"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("start weiche");
        let mut w = Weiche {
            child,
            port: 0,
            log,
        };
        w.port = w.wait_ready();
        w
    }

    /// Wait for the "listening" log line and take the port from it (Weiche binds port 0, so
    /// parallel tests never race for a port).
    fn wait_ready(&mut self) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let log = self.log_text();
            let proxy_line =
                |l: &&str| l.contains(concat!("weiche ", env!("CARGO_PKG_VERSION"), " listening"));
            if let Some(line) = log.lines().find(proxy_line) {
                // Text logs say address=127.0.0.1:N, JSON logs "address":"127.0.0.1:N".
                let port = ["address=127.0.0.1:", "\"address\":\"127.0.0.1:"]
                    .iter()
                    .find_map(|m| line.split(m).nth(1))
                    .map(|r| {
                        r.chars()
                            .take_while(char::is_ascii_digit)
                            .collect::<String>()
                    });
                if let Some(port) = port {
                    return port.parse().expect("port in the listening line");
                }
            }
            if !self.alive() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "weiche did not start listening within 10 s; log:\n{}",
            self.log_text()
        );
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Wait until the log has a line containing `needle`; when it appeared (None: not in time).
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> Option<Instant> {
        self.wait_log_after(0, needle, timeout).await
    }

    /// How much log there is now (for `wait_log_after`).
    pub fn log_mark(&self) -> usize {
        self.log_text().len()
    }

    /// Like `wait_log`, for lines written after `mark`.
    pub async fn wait_log_after(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .log_text()
                .get(mark..)
                .is_some_and(|t| t.contains(needle))
            {
                return Some(Instant::now());
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// When the first line containing `needle` after `mark` was logged (its own timestamp).
    pub fn log_time(&self, mark: usize, needle: &str) -> Option<std::time::SystemTime> {
        let text = self.log_text();
        let line = text.get(mark..)?.lines().find(|l| l.contains(needle))?;
        parse_log_time(line.split_whitespace().next()?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True if the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status once the process has ended.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Weiche {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// mysql_async options for `addr` as the app user on database `weiche`.
pub fn opts(addr: &str) -> mysql_async::Opts {
    let (host, port) = host_port(addr);
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host)
        .tcp_port(port)
        .user(Some(app_user()))
        .pass(Some(app_password()))
        .db_name(Some("weiche"))
        .prefer_socket(false)
        .max_allowed_packet(Some(64 << 20))
        .into()
}

/// A table name unique to this test run.
pub fn table(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// An account of the test's own on the sandbox (`<prefix>_<pid>_<n>`, with the app's rights
/// on its database), so that a test can count what that account holds on a backend while
/// other Weiches and test runs use the machine. Dropped from the primary on `Drop`.
pub struct PrivateUser {
    pub name: String,
    pub password: String,
}

impl PrivateUser {
    pub fn new(prefix: &str) -> PrivateUser {
        let name = table(prefix);
        let password = format!("{name}-secret");
        let db = "weiche";
        let sql = format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'; \
             CREATE USER '{name}'@'127.0.0.1' IDENTIFIED BY '{password}'; \
             GRANT ALL PRIVILEGES ON `{db}`.* TO '{name}'@'%', '{name}'@'127.0.0.1'"
        );
        let out = mariadb_cli(&primary(), "root", "", &[], &sql);
        assert!(
            out.status.success(),
            "create user: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Accounts replicate: wait until every replica knows it.
        for r in replicas() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let q = format!("SELECT COUNT(*) FROM mysql.user WHERE User = '{name}'");
                let out = mariadb_cli(&r, "root", "", &["-N"], &q);
                if String::from_utf8_lossy(&out.stdout).trim() == "2" {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} did not reach replica {r}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        PrivateUser { name, password }
    }
}

impl Drop for PrivateUser {
    fn drop(&mut self) {
        let name = &self.name;
        let sql = format!("DROP USER IF EXISTS '{name}'@'%', '{name}'@'127.0.0.1'");
        let _ = mariadb_cli(&primary(), "root", "", &[], &sql);
    }
}

/// `2026-11-26T07:17:59.889117Z` as a SystemTime.
pub fn parse_log_time(s: &str) -> Option<std::time::SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<u64>().ok()?,
        t.next()?.parse::<u64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(sec))
}

/// The mariadb CLI over TCP to `addr` as `user`, without option files: `args`, then `-e sql`.
pub fn mariadb_cli(
    addr: &str,
    user: &str,
    password: &str,
    args: &[&str],
    sql: &str,
) -> std::process::Output {
    let (host, port) = host_port(addr);
    Command::new("mariadb")
        .args(["--no-defaults", "--protocol=tcp", "-h", &host])
        .args([
            "-P",
            &port.to_string(),
            "-u",
            user,
            &format!("-p{password}"),
        ])
        .args(args)
        .args(["-e", sql])
        .output()
        .expect("run mariadb (scripts/test installs it)")
}

/// A self-signed certificate for 127.0.0.1 with its key (`cert.pem`, `key.pem`), made in `dir`
/// with openssl.
pub fn self_signed_cert(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("certificate directory");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&made.stderr)
    );
}
