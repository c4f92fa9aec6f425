//! Logging setup: tracing to standard error or a file.

use std::path::Path;
use tracing_subscriber::EnvFilter;

/// Start logging at `level` (a tracing level; `RUST_LOG` refines it when set).
pub fn init(level: &str, file: Option<&Path>) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("weiche={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .try_init()
                .map_err(|e| e.to_string())
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init()
            .map_err(|e| e.to_string()),
    }
}
