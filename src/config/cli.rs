//! The command line, spelled as mysql-proxy 0.8 spelled it, plus Weiche's own flags.

use super::*;
use clap::Parser;

/// Weiche: a MySQL/MariaDB proxy (mysql-proxy 0.8 compatible flags).
#[derive(Debug, Default, Clone, Parser)]
#[command(name = "weiche", version, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    /// TOML configuration file (see weiche.example.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// mysql-proxy style INI file; options of its [mysql-proxy] section, flags override them.
    #[arg(long = "defaults-file", value_name = "FILE")]
    pub defaults_file: Option<PathBuf>,

    /// Address clients connect to [default: 0.0.0.0:4040].
    #[arg(short = 'P', long = "proxy-address", value_name = "HOST:PORT")]
    pub proxy_address: Option<String>,
    /// Primary (read-write) backend; repeatable or comma-separated. Replaces the file's backends.
    #[arg(
        short = 'b',
        long = "proxy-backend-addresses",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub backends: Vec<String>,
    /// Replica (read-only) backend; repeatable or comma-separated.
    #[arg(
        short = 'r',
        long = "proxy-read-only-backend-addresses",
        value_name = "HOST:PORT",
        value_delimiter = ','
    )]
    pub replicas: Vec<String>,
    /// Lua script (mysql-proxy 0.8 API; see docs/lua.md). Reloaded when the file changes.
    #[arg(short = 's', long = "proxy-lua-script", value_name = "FILE")]
    pub lua_script: Option<PathBuf>,
    /// Seconds to wait for a backend connection [default: 5].
    #[arg(long = "proxy-connect-timeout", value_name = "SECONDS")]
    pub connect_timeout: Option<f64>,
    /// Accepted for mysql-proxy compatibility; not enforced yet.
    #[arg(long = "proxy-read-timeout", value_name = "SECONDS")]
    pub read_timeout: Option<f64>,
    /// Accepted for mysql-proxy compatibility; not enforced yet.
    #[arg(long = "proxy-write-timeout", value_name = "SECONDS")]
    pub write_timeout: Option<f64>,
    /// Do not start the proxy (mysql-proxy's admin-only mode); refused: Weiche is a proxy.
    #[arg(long = "no-proxy")]
    pub no_proxy: bool,
    /// Accepted, no effect: session state is always preserved.
    #[arg(long = "proxy-pool-no-change-user")]
    pub pool_no_change_user: bool,
    /// Accepted, no effect.
    #[arg(long = "proxy-skip-profiling")]
    pub skip_profiling: bool,
    /// Accepted, no effect.
    #[arg(long = "proxy-fix-bug-25371")]
    pub fix_bug_25371: bool,
    /// mysql-proxy plugins to load: proxy, admin.
    #[arg(long, value_delimiter = ',', value_name = "NAME")]
    pub plugins: Vec<String>,

    /// Address of the admin interface (MySQL protocol).
    #[arg(long = "admin-address", value_name = "HOST:PORT")]
    pub admin_address: Option<String>,
    /// User name for the admin interface.
    #[arg(long = "admin-username", value_name = "NAME")]
    pub admin_username: Option<String>,
    /// Password for the admin interface.
    #[arg(long = "admin-password", value_name = "PASSWORD")]
    pub admin_password: Option<String>,
    /// Address of the HTTP listener for /metrics (Prometheus) and /health.
    #[arg(long = "http-address", value_name = "HOST:PORT")]
    pub http_address: Option<String>,
    /// Lua script for the admin interface (its read_query answers admin queries).
    #[arg(long = "admin-lua-script", value_name = "FILE")]
    pub admin_lua_script: Option<PathBuf>,

    /// An account clients log in with (and Weiche uses on the backends); repeatable.
    /// `--user root:` is root with an empty password.
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Vec<String>,
    /// The account for Weiche's own health checks.
    #[arg(long = "monitor-user", value_name = "NAME:PASSWORD")]
    pub monitor_user: Option<String>,

    /// Run in the background (detached from the terminal).
    #[arg(long)]
    pub daemon: bool,
    /// Take the listening sockets over from the running Weiche (through proxy.upgrade_socket),
    /// then tell it to finish its sessions and exit: a restart or upgrade without a refused
    /// connect.
    #[arg(long)]
    pub upgrade: bool,
    /// Write the process id to this file.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Accepted for mysql-proxy compatibility (files are found relative to the working directory).
    #[arg(long, value_name = "DIR")]
    pub basedir: Option<PathBuf>,
    /// error, warning, info, message, debug (mysql-proxy names) or trace [default: info].
    #[arg(long = "log-level", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log to this file instead of standard error.
    #[arg(long = "log-file", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Accepted; logs go to standard error or --log-file.
    #[arg(long = "log-use-syslog")]
    pub log_use_syslog: bool,
    /// Accepted, no effect.
    #[arg(long = "log-backtrace-on-crash")]
    pub log_backtrace_on_crash: bool,
    /// Accepted, no effect (run Weiche under a supervisor such as systemd instead).
    #[arg(long)]
    pub keepalive: bool,
    /// Accepted, no effect (raise the limit with ulimit or systemd's LimitNOFILE).
    #[arg(long = "max-open-files", value_name = "N")]
    pub max_open_files: Option<u64>,
    /// Worker threads [default: the number of CPUs].
    #[arg(long = "event-threads", value_name = "N")]
    pub event_threads: Option<usize>,
    /// More Lua module paths (package.path entries, ';'-separated).
    #[arg(long = "lua-path", value_name = "PATH")]
    pub lua_path: Option<String>,
    /// More Lua C module paths (package.cpath entries).
    #[arg(long = "lua-cpath", value_name = "PATH")]
    pub lua_cpath: Option<String>,
    /// Same as --help.
    #[arg(long = "help-all")]
    pub help_all: bool,
    /// Load and validate the configuration (flags and files), print "configuration OK" or the
    /// problem, and exit (0 or 2) without starting.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

const AFTER_HELP: &str = "\
Examples:
  weiche --proxy-backend-addresses 127.0.0.1:3306 --user app:secret
  weiche --config /etc/weiche/weiche.toml --log-level debug
Flags override the config file; --defaults-file options sit below both flags and file.";

impl Cli {
    /// Fill what this command line leaves unset from `other` (a --defaults-file).
    fn or(self, other: Cli) -> Cli {
        fn v<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() {
                b
            } else {
                a
            }
        }
        Cli {
            config: self.config.or(other.config),
            defaults_file: self.defaults_file,
            proxy_address: self.proxy_address.or(other.proxy_address),
            backends: v(self.backends, other.backends),
            replicas: v(self.replicas, other.replicas),
            lua_script: self.lua_script.or(other.lua_script),
            connect_timeout: self.connect_timeout.or(other.connect_timeout),
            read_timeout: self.read_timeout.or(other.read_timeout),
            write_timeout: self.write_timeout.or(other.write_timeout),
            no_proxy: self.no_proxy || other.no_proxy,
            pool_no_change_user: self.pool_no_change_user || other.pool_no_change_user,
            skip_profiling: self.skip_profiling || other.skip_profiling,
            fix_bug_25371: self.fix_bug_25371 || other.fix_bug_25371,
            plugins: v(self.plugins, other.plugins),
            admin_address: self.admin_address.or(other.admin_address),
            admin_username: self.admin_username.or(other.admin_username),
            admin_password: self.admin_password.or(other.admin_password),
            admin_lua_script: self.admin_lua_script.or(other.admin_lua_script),
            http_address: self.http_address.or(other.http_address),
            user: v(self.user, other.user),
            monitor_user: self.monitor_user.or(other.monitor_user),
            daemon: self.daemon || other.daemon,
            upgrade: self.upgrade || other.upgrade,
            pid_file: self.pid_file.or(other.pid_file),
            basedir: self.basedir.or(other.basedir),
            log_level: self.log_level.or(other.log_level),
            log_file: self.log_file.or(other.log_file),
            log_use_syslog: self.log_use_syslog || other.log_use_syslog,
            log_backtrace_on_crash: self.log_backtrace_on_crash || other.log_backtrace_on_crash,
            keepalive: self.keepalive || other.keepalive,
            max_open_files: self.max_open_files.or(other.max_open_files),
            event_threads: self.event_threads.or(other.event_threads),
            lua_path: self.lua_path.or(other.lua_path),
            lua_cpath: self.lua_cpath.or(other.lua_cpath),
            help_all: self.help_all || other.help_all,
            check_config: self.check_config || other.check_config,
        }
    }
}

/// Whether every local account may read the file (its passwords with it).
fn world_readable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// The result of loading: the config, plus warnings to log once logging is up.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: Config,
    pub warnings: Vec<String>,
    pub daemon: bool,
    /// --upgrade: take the sockets over from the running instance.
    pub upgrade: bool,
}

fn split_account(flag: &str, s: &str) -> Result<(String, String), ConfigError> {
    match s.split_once(':') {
        Some((name, pw)) if !name.is_empty() => Ok((name.to_string(), pw.to_string())),
        _ => Err(invalid(format!(
            "{flag} '{s}': expected NAME:PASSWORD (mysql-proxy's --user=OSUSER is not supported: start Weiche as that OS user)"
        ))),
    }
}

fn secs(what: &str, s: f64) -> Result<Duration, ConfigError> {
    if !(s.is_finite() && s > 0.0 && s < 86_400.0) {
        return Err(invalid(format!(
            "{what} must be a number of seconds above 0, not {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// mysql-proxy level names to tracing's.
fn log_level(s: &str) -> Result<String, ConfigError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "error" | "critical" => "error",
        "warning" | "warn" => "warn",
        "info" | "message" => "info",
        "debug" => "debug",
        "trace" => "trace",
        other => {
            return Err(invalid(format!(
                "log level '{other}' is not one of error, warning, info, message, debug, trace"
            )))
        }
    }
    .to_string())
}

impl LoadedConfig {
    /// Build the configuration from a parsed command line.
    pub fn load(cli: Cli) -> Result<LoadedConfig, ConfigError> {
        let cli = match &cli.defaults_file {
            Some(path) => {
                let mut args = vec!["weiche".to_string()];
                args.extend(ini::args_from_file(path)?);
                let from_file = Cli::try_parse_from(&args).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or("invalid option")
                        .to_string(),
                })?;
                cli.or(from_file)
            }
            None => cli,
        };
        let mut secrets_readable = None;
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                secrets_readable = world_readable(path).then(|| path.clone());
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                })?
            }
            None => FileConfig::default(),
        };
        let mut loaded = Self::build(cli, file)?;
        if let Some(path) = secrets_readable {
            loaded.warnings.push(format!(
                "config file {} holds passwords and every local user can read it; \
                 chmod 640 (owner root, group of Weiche's account)",
                path.display()
            ));
        }
        Ok(loaded)
    }

    fn build(cli: Cli, file: FileConfig) -> Result<LoadedConfig, ConfigError> {
        let warnings = Vec::new();
        let admin_script = cli.admin_lua_script.clone().or(file.admin.script.clone());
        let script = match cli.lua_script.clone().or(file.proxy.script.clone()) {
            Some(path) => {
                if !path.is_file() {
                    return Err(invalid(format!(
                        "Lua script {} does not exist or is not a file",
                        path.display()
                    )));
                }
                let instruction_limit = file.proxy.script_instruction_limit.unwrap_or(10_000_000);
                if instruction_limit < 1000 {
                    return Err(invalid(
                        "proxy.script_instruction_limit must be at least 1000",
                    ));
                }
                Some(super::Scripting {
                    path,
                    lua_path: cli.lua_path.clone(),
                    lua_cpath: cli.lua_cpath.clone(),
                    instruction_limit,
                })
            }
            None => None,
        };
        if cli.no_proxy {
            return Err(invalid("--no-proxy: Weiche always runs the proxy"));
        }
        for p in &cli.plugins {
            if p != "proxy" && p != "admin" {
                return Err(invalid(format!(
                    "--plugins: unknown plugin '{p}' (known: proxy, admin)"
                )));
            }
        }
        let address = cli
            .proxy_address
            .or(file.proxy.address)
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        let listen = parse_socket_addr("proxy address", &address)?;

        let mut backends = Vec::new();
        if cli.backends.is_empty() && cli.replicas.is_empty() {
            for b in file.backends {
                if b.weight == Some(0) {
                    return Err(invalid(format!(
                        "backend {}: weight must be at least 1",
                        b.address
                    )));
                }
                backends.push(Backend {
                    address: normalize_backend_addr(&b.address)?,
                    role: b.role,
                    weight: b.weight.unwrap_or(1),
                    compress: b.compress.unwrap_or(false),
                });
            }
        } else {
            for a in cli.backends.iter().filter(|a| !a.trim().is_empty()) {
                backends.push(Backend {
                    address: normalize_backend_addr(a)?,
                    role: Role::Primary,
                    weight: 1,
                    compress: false,
                });
            }
            for a in cli.replicas.iter().filter(|a| !a.trim().is_empty()) {
                backends.push(Backend {
                    address: normalize_backend_addr(a)?,
                    role: Role::Replica,
                    weight: 1,
                    compress: false,
                });
            }
        }
        if backends.is_empty() {
            return Err(invalid(
                "no backends: give --proxy-backend-addresses or [[backends]] in the config file",
            ));
        }
        if !backends.iter().any(|b| b.role == Role::Primary) {
            return Err(invalid(
                "no primary backend: give one with --proxy-backend-addresses or role = \"primary\"",
            ));
        }
        for (i, b) in backends.iter().enumerate() {
            if backends[..i].iter().any(|o| o.address == b.address) {
                return Err(invalid(format!("backend {} is listed twice", b.address)));
            }
        }

        let mut users: Vec<User> = Vec::new();
        for u in &file.users {
            let mut user = make_user(&u.name, u.password.as_deref(), u.password_hash.as_deref())?;
            user.pool_mode = u.pool_mode;
            user.require_tls = u.require_tls.unwrap_or(false);
            user.max_connections = u.max_connections;
            users.push(user);
        }
        for spec in &cli.user {
            let (name, pw) = split_account("--user", spec)?;
            users.retain(|u| u.name != name);
            users.push(make_user(&name, Some(&pw), None)?);
        }
        for (i, u) in users.iter().enumerate() {
            if users[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(format!("user '{}' is listed twice", u.name)));
            }
        }
        if users.is_empty() && file.monitor.load_users != Some(true) {
            return Err(invalid(
                "no users: give --user NAME:PASSWORD, [[users]] in the config file, or \
                 monitor.load_users = true",
            ));
        }

        let monitor_flag = match cli.monitor_user {
            Some(spec) => {
                let (user, password) = split_account("--monitor-user", &spec)?;
                Some(Credentials { user, password })
            }
            None => None,
        };
        let (monitor, monitoring) = super::monitor::monitoring(&file.monitor, monitor_flag)?;

        let admin_address = cli.admin_address.or(file.admin.address);
        let admin_user = cli.admin_username.or(file.admin.username);
        let admin_password = cli.admin_password.or(file.admin.password);
        // The admin port is on when an address or credentials are given; on 127.0.0.1:4041 (as
        // mysql-proxy) unless an address says otherwise.
        let wanted = admin_address.is_some() || admin_user.is_some() || admin_password.is_some();
        let admin_address = admin_address.or_else(|| wanted.then(|| "127.0.0.1:4041".to_string()));
        let (admin_address, admin) = match admin_address {
            Some(a) => {
                let addr = parse_socket_addr("admin address", &a)?;
                let (Some(user), Some(password)) = (admin_user, admin_password) else {
                    return Err(invalid(
                        "an admin address needs --admin-username and --admin-password",
                    ));
                };
                if user.is_empty() || password.is_empty() {
                    return Err(invalid(
                        "the admin user name and password must not be empty",
                    ));
                }
                (Some(addr), Some(Credentials { user, password }))
            }
            None => (None, None),
        };

        let http_address = match cli.http_address.clone().or(file.http.address.clone()) {
            Some(a) => Some(parse_socket_addr("http address", &a)?),
            None => None,
        };
        if let Some(p) = &admin_script {
            if admin.is_none() {
                return Err(invalid(
                    "--admin-lua-script needs the admin interface (--admin-username and --admin-password)",
                ));
            }
            if !p.is_file() {
                return Err(invalid(format!(
                    "admin Lua script {} does not exist or is not a file",
                    p.display()
                )));
            }
        }

        let connect_timeout = secs(
            "proxy connect timeout",
            cli.connect_timeout
                .or(file.proxy.connect_timeout)
                .unwrap_or(5.0),
        )?;
        if let Some(t) = cli.read_timeout {
            secs("proxy read timeout", t)?;
        }
        if let Some(t) = cli.write_timeout {
            secs("proxy write timeout", t)?;
        }
        let max_packet_size = file.proxy.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET);
        if max_packet_size < 1024 {
            return Err(invalid("proxy.max_packet_size must be at least 1024 bytes"));
        }
        let event_threads = match cli.event_threads.or(file.proxy.event_threads) {
            Some(0) | None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            Some(n) if n <= 1024 => n,
            Some(n) => return Err(invalid(format!("event threads: {n} is too many"))),
        };
        let log_level = log_level(
            cli.log_level
                .as_deref()
                .or(file.log.level.as_deref())
                .unwrap_or("info"),
        )?;

        let addresses: Vec<String> = backends.iter().map(|b| b.address.clone()).collect();
        let rules = super::routing::rules(&file.rules, &addresses)?;
        let routing = super::routing::routing(&file.routing)?;
        let pool = super::routing::pooling(&file.pool)?;
        let cache = super::cache::caching(&file.cache)?;
        if cache
            .binlog
            .as_ref()
            .is_some_and(|b| b.account.is_none() && monitor.is_none())
        {
            return Err(invalid(
                "cache.binlog needs cache.binlog.user (an account with REPLICATION SLAVE) or a \
                 monitor account",
            ));
        }
        if routing.shared_read_your_writes
            && !(cache.enabled && matches!(cache.store, super::CacheStore::Memcached { .. }))
        {
            return Err(invalid(
                "routing.shared_read_your_writes needs a memcached cluster ([cache] servers): \
                 that is where the instances publish their writes",
            ));
        }
        let tls = super::tls::tls(&file.tls, &file.backend_tls)?;
        let limits = super::limits::limits(&file.limits)?;
        if users.iter().any(|u| u.require_tls) && tls.acceptor.is_none() {
            return Err(invalid(
                "a user with require_tls needs tls.cert and tls.key",
            ));
        }

        Ok(LoadedConfig {
            config: Config {
                listen,
                event_threads,
                backends,
                users,
                monitor,
                monitoring,
                admin_address,
                admin,
                http_address,
                connect_timeout,
                max_packet_size,
                compression: super::compression::client_compression(
                    file.proxy.compression.as_deref(),
                    file.proxy.compression_level,
                )?,
                log_level,
                log_file: cli.log_file.or(file.log.file),
                log_format: file.log.format.unwrap_or_default(),
                query_log: file.log.query_log,
                slow_log: file.log.slow_log,
                slow_query_time: match file.log.slow_query_time {
                    Some(s) => super::routing::secs("log.slow_query_time", s, true)?,
                    None => std::time::Duration::from_secs(1),
                },
                pid_file: cli.pid_file.or(file.proxy.pid_file),
                upgrade_socket: file.proxy.upgrade_socket,
                routing,
                pool,
                rules,
                script,
                admin_script,
                cache,
                max_digests: file.admin.max_digests.unwrap_or(1000).min(1_000_000),
                tls,
                limits,
            },
            warnings,
            daemon: cli.daemon,
            upgrade: cli.upgrade,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<LoadedConfig, ConfigError> {
        let mut v = vec!["weiche"];
        v.extend_from_slice(args);
        LoadedConfig::load(Cli::try_parse_from(v).unwrap())
    }

    #[test]
    fn mysql_proxy_flags() {
        let c = parse(&[
            "-P",
            "127.0.0.1:4041",
            "-b",
            "127.0.0.1:3306",
            "-r",
            "a:1,b:2",
            "--user",
            "root:",
        ])
        .unwrap()
        .config;
        assert_eq!(c.listen.port(), 4041);
        assert_eq!(c.backends.len(), 3);
        assert_eq!(c.primary().unwrap().address, "127.0.0.1:3306");
        assert_eq!(c.user(b"root").unwrap().password.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn refuses_with_one_clear_line() {
        let e = parse(&["-b", "127.0.0.1:3306"]).unwrap_err().to_string();
        assert!(e.contains("no users"), "{e}");
        let e = parse(&["--user", "a:b"]).unwrap_err().to_string();
        assert!(e.contains("no backends"), "{e}");
        let e = parse(&["-b", "x:99999", "--user", "a:b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("host:port"), "{e}");
        let e = parse(&["-b", "h:1", "--user", "mysql"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("NAME:PASSWORD"), "{e}");
        let e = parse(&[
            "-b",
            "h:1",
            "--user",
            "a:b",
            "--admin-address",
            "127.0.0.1:4041",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("admin"), "{e}");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let e = toml::from_str::<FileConfig>("[proxy]\nadress = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("adress"), "{e}");
    }
}
