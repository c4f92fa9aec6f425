//! The `weiche` binary: parse flags and config, set up logging, start the workers, serve until
//! SIGINT/SIGTERM.

use clap::Parser;
use std::process::ExitCode;
use weiche::config::{Cli, LoadedConfig};
use weiche::server;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.help_all {
        use clap::CommandFactory;
        let _ = Cli::command().print_long_help();
        return ExitCode::SUCCESS;
    }
    let check = cli.check_config;
    let loaded = match LoadedConfig::load(cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weiche: {e}");
            return ExitCode::from(2);
        }
    };
    if check {
        for w in &loaded.warnings {
            eprintln!("weiche: warning: {w}");
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    if loaded.daemon && std::env::var_os("WEICHE_DAEMONIZED").is_none() {
        return daemonize();
    }
    let config = loaded.config;
    if let Err(e) = weiche::logging::init(
        &config.log_level,
        config.log_file.as_deref(),
        config.log_format,
    ) {
        eprintln!("weiche: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = weiche::logging::open_statement_logs(
        config.query_log.as_deref(),
        config.slow_log.as_deref(),
    ) {
        eprintln!("weiche: {e}");
        return ExitCode::from(2);
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let pid_file = config.pid_file.clone();
    if let Some(p) = &pid_file {
        if let Err(e) = std::fs::write(p, format!("{}\n", std::process::id())) {
            tracing::error!("cannot write pid file {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    let listeners = if loaded.upgrade {
        match weiche::upgrade::take_over(config.upgrade_socket.as_deref()) {
            Ok(l) => Ok(l),
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("weiche: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        server::Listeners::bind(&config)
    };
    let shared = weiche::shared::Shared::new(config);
    let result = listeners.and_then(|listeners| server::run(shared, listeners, server::signals()));
    // After an upgrade the file names the new process: only our own is removed.
    if let Some(p) = &pid_file {
        let ours =
            std::fs::read_to_string(p).is_ok_and(|s| s.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(p);
        }
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("weiche: {e}");
            ExitCode::from(1)
        }
    }
}

/// --daemon: start a detached copy of ourselves and return.
fn daemonize() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("weiche: --daemon: cannot find my own executable");
        return ExitCode::from(2);
    };
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("WEICHE_DAEMONIZED", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    match child {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weiche: --daemon: {e}");
            ExitCode::from(2)
        }
    }
}
