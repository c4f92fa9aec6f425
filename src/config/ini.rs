//! mysql-proxy's `--defaults-file`: an INI file whose `[mysql-proxy]` section holds long option
//! names without dashes (`proxy-backend-addresses = a:3306,b:3306`, `daemon = true`). It is
//! turned into command-line arguments so that one parser reads both.

use super::ConfigError;
use std::path::Path;

/// Flags that take no value; in the file they read `true`/`false` (or 1/0).
/// (mysql-proxy 0.8.5 mis-read these; Weiche reads them as written.)
const BOOLEAN_FLAGS: &[&str] = &[
    "daemon",
    "keepalive",
    "no-proxy",
    "proxy-pool-no-change-user",
    "proxy-skip-profiling",
    "proxy-fix-bug-25371",
    "log-use-syslog",
    "log-backtrace-on-crash",
];

pub fn args_from_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    args_from_str(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

pub fn args_from_str(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut in_section = false;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            in_section = section.trim_end_matches(']').trim() == "mysql-proxy";
            continue;
        }
        if !in_section {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (line, "true"),
        };
        let key = key.replace('_', "-");
        let value = value.trim_matches('"');
        if BOOLEAN_FLAGS.contains(&key.as_str()) {
            match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => args.push(format!("--{key}")),
                "false" | "0" | "no" | "off" => {}
                _ => {
                    return Err(format!(
                        "line {}: {key} must be true or false, not '{value}'",
                        n + 1
                    ))
                }
            }
        } else {
            args.push(format!("--{key}={value}"));
        }
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mysql_proxy_section_only() {
        let args = args_from_str(
            "[client]\nuser=x\n[mysql-proxy]\n# comment\nproxy-backend-addresses = a:1,b:2\ndaemon = false\nkeepalive=true\nproxy_connect_timeout = 2.5\n",
        )
        .unwrap();
        assert_eq!(
            args,
            vec![
                "--proxy-backend-addresses=a:1,b:2",
                "--keepalive",
                "--proxy-connect-timeout=2.5"
            ]
        );
        assert!(args_from_str("[mysql-proxy]\ndaemon = maybe\n").is_err());
    }
}
