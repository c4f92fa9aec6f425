//! Logging setup: tracing to standard error or a file, as text or one JSON object per line,
//! with a level a reload can change. Sessions log inside a span with their id, client address
//! and user.

use crate::config::LogFormat;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use tracing_subscriber::EnvFilter;

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the running filter (set once by `init`).
static RELOAD: OnceLock<SetFilter> = OnceLock::new();

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("weiche={level},warn")))
}

/// Start logging at `level` (a tracing level; `RUST_LOG` refines it when set).
pub fn init(level: &str, file: Option<&Path>, format: LogFormat) -> Result<(), String> {
    let writer: Box<dyn Fn() -> Box<dyn std::io::Write> + Send + Sync> = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            let f = std::sync::Arc::new(Mutex::new(f));
            Box::new(move || Box::new(Shared(f.clone())) as Box<dyn std::io::Write>)
        }
        None => Box::new(|| Box::new(std::io::stderr()) as Box<dyn std::io::Write>),
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => {
            let b = builder.with_ansi(ansi).with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().map_err(|e| e.to_string())?;
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
        }
        LogFormat::Json => {
            let b = builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = b.reload_handle();
            b.try_init().map_err(|e| e.to_string())?;
            let _ = RELOAD.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
        }
    }
    Ok(())
}

/// Change the level of a running process (config reload).
pub fn set_level(level: &str) -> Result<(), String> {
    match RELOAD.get() {
        Some(set) => set(filter(level)),
        None => Err("logging is not set up".into()),
    }
}

/// A log file shared by every thread's writer.
struct Shared(std::sync::Arc<Mutex<std::fs::File>>);

impl std::io::Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.0.lock() {
            Ok(mut f) => f.write(buf),
            Err(p) => p.into_inner().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A statement log (query log, slow-query log): one line per statement, appended to a file.
pub struct StatementLog {
    file: Mutex<std::io::LineWriter<std::fs::File>>,
}

static QUERY_LOG: OnceLock<StatementLog> = OnceLock::new();
static SLOW_LOG: OnceLock<StatementLog> = OnceLock::new();

fn open_log(path: &Path) -> Result<StatementLog, String> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open statement log {}: {e}", path.display()))?;
    Ok(StatementLog {
        file: Mutex::new(std::io::LineWriter::new(f)),
    })
}

/// Open the query log and the slow-query log (at start).
pub fn open_statement_logs(query: Option<&Path>, slow: Option<&Path>) -> Result<(), String> {
    if let Some(p) = query {
        let _ = QUERY_LOG.set(open_log(p)?);
    }
    if let Some(p) = slow {
        let _ = SLOW_LOG.set(open_log(p)?);
    }
    Ok(())
}

pub fn query_log() -> Option<&'static StatementLog> {
    QUERY_LOG.get()
}

pub fn slow_log() -> Option<&'static StatementLog> {
    SLOW_LOG.get()
}

/// One statement's line.
pub struct Entry<'a> {
    pub session: u32,
    pub user: &'a str,
    pub client: &'a str,
    pub route: &'a str,
    pub micros: u64,
    pub rows: u64,
    pub error: bool,
    pub sql: &'a [u8],
}

impl StatementLog {
    pub fn write(&self, e: &Entry<'_>) {
        use std::io::Write;
        let sql = statement_text(e.sql);
        let line = format!(
            "{} session={} user={} client={} route={} ms={:.3} rows={} error={} {}\n",
            rfc3339_now(),
            e.session,
            e.user,
            e.client,
            e.route,
            e.micros as f64 / 1000.0,
            e.rows,
            e.error,
            sql
        );
        if let Ok(mut f) = self.file.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// A statement as logged: one line, at most 4 KiB; one that may carry a password
/// (IDENTIFIED BY, PASSWORD(...), SET PASSWORD) is logged as its digest, literals hidden.
pub fn statement_text(sql: &[u8]) -> String {
    let secret = ["IDENTIFIED", "PASSWORD"].iter().any(|w| {
        sql.windows(w.len())
            .any(|x| x.eq_ignore_ascii_case(w.as_bytes()))
    });
    let text = if secret {
        crate::sql::digest::digest(sql)
    } else {
        String::from_utf8_lossy(&sql[..sql.len().min(4096)]).into_owned()
    };
    text.replace(['\n', '\r'], " ")
}

/// Now as `2026-11-26T10:05:01.123Z`.
fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_logged() {
        let t = super::statement_text(b"CREATE USER x IDENTIFIED BY 'hunter2'");
        assert!(!t.contains("hunter2"), "{t}");
        let t = super::statement_text(b"SELECT 1,\n 'a'");
        assert_eq!(t, "SELECT 1,  'a'");
        let now = super::rfc3339_now();
        assert_eq!(now.len(), 24, "{now}");
        assert!(now.starts_with("20"), "{now}");
    }
}
