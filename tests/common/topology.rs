//! A private sandbox topology (primary, two GTID replicas) for tests that kill, stop, promote
//! or delay servers: started with `scripts/sandbox` under its own directory and ports, so the
//! shared sandbox other tests use is never touched. Stopped and deleted when dropped.

use super::Weiche;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

pub struct Topology {
    pub dir: PathBuf,
    pub base: u16,
}

/// One topology at a time: each brings three servers up on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Hold while a test's topology lives (an async lock: each test has its own runtime).
pub async fn serialize() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

impl Topology {
    /// Start a topology on ports `base` (primary), `base+1`, `base+2` (replicas), `base+3`,
    /// `base+4` (memcached).
    pub fn start(name: &str, base: u16) -> Topology {
        let t = Topology {
            dir: PathBuf::from(format!("/tmp/weiche-topology-{name}")),
            base,
        };
        t.sandbox("start");
        t
    }

    fn sandbox(&self, what: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sandbox");
        let out = Command::new(script)
            .arg(what)
            .env("WEICHE_SANDBOX_DIR", &self.dir)
            .env("WEICHE_SANDBOX_PRIMARY_PORT", self.base.to_string())
            .env("WEICHE_SANDBOX_REPLICA1_PORT", (self.base + 1).to_string())
            .env("WEICHE_SANDBOX_REPLICA2_PORT", (self.base + 2).to_string())
            .env(
                "WEICHE_SANDBOX_MEMCACHED1_PORT",
                (self.base + 3).to_string(),
            )
            .env(
                "WEICHE_SANDBOX_MEMCACHED2_PORT",
                (self.base + 4).to_string(),
            )
            .output()
            .expect("run scripts/sandbox");
        assert!(
            out.status.success() || what == "stop",
            "scripts/sandbox {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start whatever is not running (a killed server comes back with its data).
    pub fn restart_missing(&self) {
        self.sandbox("start");
    }

    /// 0: primary, 1 and 2: replicas.
    pub fn addr(&self, n: u16) -> String {
        format!("127.0.0.1:{}", self.base + n)
    }

    fn role(n: u16) -> &'static str {
        ["primary", "replica1", "replica2"][n as usize]
    }

    pub fn pid(&self, n: u16) -> u32 {
        let role = Self::role(n);
        let f = self.dir.join(role).join(format!("{role}.pid"));
        std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            .trim()
            .parse()
            .expect("pid")
    }

    pub fn signal(&self, n: u16, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.pid(n).to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} {}", Self::role(n));
    }

    /// SIGKILL a server and wait until it is gone.
    pub fn kill(&self, n: u16) {
        let pid = self.pid(n);
        self.signal(n, "KILL");
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while proc.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Root on server `n`.
    pub fn root_opts(&self, n: u16) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.base + n)
            .user(Some("root"))
            .prefer_socket(false)
            .into()
    }

    /// Run statements as root on server `n`.
    pub async fn root(&self, n: u16, sql: &str) {
        use mysql_async::prelude::*;
        let mut c = mysql_async::Conn::new(self.root_opts(n))
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr(n)));
        c.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} on {}: {e}", self.addr(n)));
        c.disconnect().await.ok();
    }

    /// Weiche in front of this topology, with the monitor account and `extra` TOML.
    pub fn weiche(&self, extra: &str) -> Weiche {
        let text = format!(
            "[[backends]]\naddress = \"{}\"\nrole = \"primary\"\n\n\
             [[backends]]\naddress = \"{}\"\nrole = \"replica\"\n\n\
             [[backends]]\naddress = \"{}\"\nrole = \"replica\"\n\n\
             [[users]]\nname = \"{}\"\npassword = \"{}\"\n\n\
             {extra}\n",
            self.addr(0),
            self.addr(1),
            self.addr(2),
            super::app_user(),
            super::app_password()
        );
        let text = if text.contains("[monitor]") {
            text.replace(
                "[monitor]",
                "[monitor]\nuser = \"monitor\"\npassword = \"monitor-secret\"",
            )
        } else {
            format!("{text}\n[monitor]\nuser = \"monitor\"\npassword = \"monitor-secret\"\n")
        };
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "weiche-topology-{}-{}.toml",
            self.base,
            super::table("cfg")
        ));
        std::fs::write(&path, text).expect("write config");
        // Info level: load tests would write hundreds of megabytes of debug lines.
        Weiche::start_with_log(
            &["--config", path.to_str().expect("utf-8 path")],
            "weiche=info",
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A stopped server would not react to the stop's SIGTERM.
        for n in 0..3 {
            let pid = self.pid_or_zero(n);
            if pid != 0 {
                let _ = Command::new("kill")
                    .args(["-CONT".to_string(), pid.to_string()])
                    .status();
            }
        }
        self.sandbox("stop");
    }
}

impl Topology {
    fn pid_or_zero(&self, n: u16) -> u32 {
        let role = Self::role(n);
        std::fs::read_to_string(self.dir.join(role).join(format!("{role}.pid")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}
