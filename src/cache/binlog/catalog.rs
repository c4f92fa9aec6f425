//! What the binlog does not name: rows a foreign key's ON DELETE/UPDATE CASCADE or SET NULL
//! changes (InnoDB does it inside the engine; the row binlog has only the parent's rows), and
//! views, whose cached results are filed under the view's name while writes change its base
//! tables. The catalog maps each table to the tables and views that change with it, read from
//! the primary (`INNODB_SYS_FOREIGN`, which needs PROCESS, and `information_schema.VIEWS`,
//! which shows the views the account may SHOW VIEW), and `Cache::bump` adds them to every bump:
//! from the binlog and from writes through Weiche alike.

use super::{cell_at, login, Setup};
use crate::backend::gtid::GtidPos;
use crate::backend::BackendTable;
use crate::cache::{Cache, Scope};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the catalog is read when no DDL asks for it.
const REFRESH: Duration = Duration::from_secs(10);

/// ON DELETE CASCADE, ON DELETE SET NULL, ON UPDATE CASCADE, ON UPDATE SET NULL.
const CHANGES_CHILD: u64 = 1 | 2 | 4 | 8;

/// "db/table" as InnoDB names it; None for names it had to encode (@xxxx): those are bumped
/// through the whole cache instead.
fn innodb_name(s: &str) -> Option<Scope> {
    let (db, t) = s.split_once('/')?;
    if s.contains('@') {
        return None;
    }
    Some(Scope::Table(
        db.to_ascii_lowercase().into_bytes(),
        t.to_ascii_lowercase().into_bytes(),
    ))
}

/// The edges' transitive closure: every scope each table's change reaches.
fn closure(edges: &HashMap<Scope, Vec<Scope>>) -> HashMap<Scope, Vec<Scope>> {
    let mut out = HashMap::new();
    for from in edges.keys() {
        let mut seen: HashSet<&Scope> = HashSet::new();
        let mut todo: Vec<&Scope> = edges[from].iter().collect();
        while let Some(s) = todo.pop() {
            if s != from && seen.insert(s) {
                todo.extend(edges.get(s).into_iter().flatten());
            }
        }
        let mut v: Vec<Scope> = seen.into_iter().cloned().collect();
        v.sort();
        out.insert(from.clone(), v);
    }
    out
}

/// Read the foreign keys and views from the primary.
async fn read(address: &str, setup: &Setup) -> Result<HashMap<Scope, Vec<Scope>>, String> {
    let mut conn = login(address, setup).await.map_err(|e| e.to_string())?;
    let mut edges: HashMap<Scope, Vec<Scope>> = HashMap::new();
    let fks = conn
        .rows(b"SELECT REF_NAME, FOR_NAME, TYPE FROM information_schema.INNODB_SYS_FOREIGN")
        .await
        .map_err(|e| format!("foreign keys: {e}"))?;
    for row in 0..fks.rows.len() {
        let kind: u64 = cell_at(&fks, row, 2).parse().unwrap_or(CHANGES_CHILD);
        if kind & CHANGES_CHILD == 0 {
            continue;
        }
        let child = innodb_name(&cell_at(&fks, row, 1)).unwrap_or(Scope::All);
        if let Some(parent) = innodb_name(&cell_at(&fks, row, 0)) {
            edges.entry(parent).or_default().push(child);
        }
    }
    let views = conn
        .rows(b"SELECT TABLE_SCHEMA, TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS")
        .await
        .map_err(|e| format!("views: {e}"))?;
    for row in 0..views.rows.len() {
        let db = cell_at(&views, row, 0).to_ascii_lowercase();
        let view = Scope::Table(
            db.clone().into_bytes(),
            cell_at(&views, row, 1).to_ascii_lowercase().into_bytes(),
        );
        if db == "sys" {
            // Never cached (performance_schema and information_schema underneath).
            continue;
        }
        let definition = cell_at(&views, row, 2);
        let tokens = crate::sql::lexer::tokenize(definition.as_bytes());
        let tables = match definition.is_empty() {
            true => Err("no definition"),
            false => crate::sql::tables::read_tables(definition.as_bytes(), &tokens),
        };
        match tables {
            Ok(tables) => {
                for t in tables {
                    let schema = t
                        .schema
                        .map(|s| s.to_ascii_lowercase())
                        .unwrap_or_else(|| db.clone().into_bytes());
                    edges
                        .entry(Scope::Table(schema, t.name.to_ascii_lowercase()))
                        .or_default()
                        .push(view.clone());
                }
            }
            // A definition it cannot read (the account lacks SHOW VIEW and SELECT on it, which
            // shows an empty one): any write in its schema may change it.
            Err(_) => edges
                .entry(Scope::Schema(db.into_bytes()))
                .or_default()
                .push(view),
        }
    }
    Ok(closure(&edges))
}

/// Keep the cache's catalog current: now, every REFRESH, and when the follower saw DDL (at
/// the position `ddl` holds).
pub async fn keep(
    cache: Arc<Cache>,
    backends: Arc<BackendTable>,
    setup: Setup,
    mut ddl: watch::Receiver<GtidPos>,
) {
    let mut failing: Option<String> = None;
    loop {
        let after = ddl.borrow_and_update().clone();
        if let Some(address) = super::primary_address(&backends) {
            match read(&address, &setup).await {
                Ok(map) => {
                    if failing.take().is_some() {
                        tracing::info!("binlog: foreign keys and views read again");
                    }
                    cache.set_dependents(map);
                    if let Some(t) = &cache.tail {
                        t.catalog_read(after.to_string());
                    }
                }
                Err(e) => {
                    if failing.as_deref() != Some(e.as_str()) {
                        tracing::warn!(
                            "binlog: cannot read foreign keys and views from {address} ({e}); \
                             cascades and views are invalidated as last read"
                        );
                    }
                    failing = Some(e);
                }
            }
        }
        let _ = tokio::time::timeout(REFRESH, ddl.changed()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Scope {
        Scope::Table(b"s".to_vec(), name.as_bytes().to_vec())
    }

    #[test]
    fn changes_reach_cascades_and_views_transitively() {
        let mut e = HashMap::new();
        e.insert(t("parent"), vec![t("child")]);
        e.insert(t("child"), vec![t("grandchild"), t("child_view")]);
        e.insert(t("grandchild"), vec![t("parent")]); // a cycle ends
        let c = closure(&e);
        assert_eq!(
            c[&t("parent")],
            vec![t("child"), t("child_view"), t("grandchild")]
        );
        assert_eq!(innodb_name("Shop/Items"), Some(t_in("shop", "items")));
        assert_eq!(innodb_name("shop/it@0024ems"), None);
    }

    fn t_in(db: &str, name: &str) -> Scope {
        Scope::Table(db.as_bytes().to_vec(), name.as_bytes().to_vec())
    }
}
