//! memcached nodes of a test's own (Debian's memcached binary on free ports), so that a test
//! may kill, stop or restart them without touching the sandbox's nodes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Memcached {
    child: Option<Child>,
    pub port: u16,
}

impl Memcached {
    pub fn start() -> Memcached {
        let mut m = Memcached {
            child: None,
            port: super::free_port(),
        };
        m.restart();
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and wait until it answers.
    pub fn restart(&mut self) {
        let bin = ["/usr/bin/memcached", "/usr/local/bin/memcached"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("memcached is installed (scripts/sandbox installs it)");
        let child = Command::new(bin)
            .args(["-l", "127.0.0.1", "-p", &self.port.to_string(), "-U", "0"])
            .args(["-m", "64", "-u", "root"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start memcached");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(Instant::now() < deadline, "memcached did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "kill -{sig} memcached");
        }
    }
}

impl Drop for Memcached {
    fn drop(&mut self) {
        self.signal("CONT");
        self.kill();
    }
}
