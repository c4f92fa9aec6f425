//! `proxy.global`: one table shared by every connection on every worker thread (each worker has
//! its own Lua state), so it lives in Rust. Scripts see it through a userdata that reads and
//! writes plain data: nil, booleans, numbers, strings and tables of those. Nested tables are
//! reached through further userdata that remember their path.

use super::backends::Backends;
use mlua::{AnyUserData, Lua, MetaMethod, UserData, UserDataMethods, Value};
use std::collections::BTreeMap;
use std::sync::{LazyLock, RwLock};

/// A key of a shared table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Int(i64),
    Str(Vec<u8>),
}

/// A shared value.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(Vec<u8>),
    Table(BTreeMap<Key, Val>),
}

static STORE: LazyLock<RwLock<BTreeMap<Key, Val>>> = LazyLock::new(|| {
    let mut root = BTreeMap::new();
    root.insert(Key::Str(b"config".to_vec()), Val::Table(BTreeMap::new()));
    RwLock::new(root)
});

/// A table inside proxy.global (the empty path is proxy.global itself).
#[derive(Debug, Clone)]
pub struct GlobalRef {
    path: Vec<Key>,
}

impl GlobalRef {
    pub fn root() -> GlobalRef {
        GlobalRef { path: Vec::new() }
    }
}

fn key_of(v: &Value) -> mlua::Result<Key> {
    match v {
        Value::Integer(i) => Ok(Key::Int(*i)),
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9e15 => Ok(Key::Int(*n as i64)),
        Value::String(s) => Ok(Key::Str(s.as_bytes().to_vec())),
        other => Err(mlua::Error::runtime(format!(
            "proxy.global: a key must be a string or an integer, not a {}",
            other.type_name()
        ))),
    }
}

/// A Lua value as shared data (tables are copied deeply).
fn to_val(v: &Value, depth: usize) -> mlua::Result<Option<Val>> {
    if depth > 32 {
        return Err(mlua::Error::runtime("proxy.global: tables nested too deep"));
    }
    Ok(Some(match v {
        Value::Nil => return Ok(None),
        Value::Boolean(b) => Val::Bool(*b),
        Value::Integer(i) => Val::Int(*i),
        Value::Number(n) => Val::Num(*n),
        Value::String(s) => Val::Str(s.as_bytes().to_vec()),
        Value::Table(t) => {
            let mut m = BTreeMap::new();
            for pair in t.clone().pairs::<Value, Value>() {
                let (k, v) = pair?;
                if let Some(v) = to_val(&v, depth + 1)? {
                    m.insert(key_of(&k)?, v);
                }
            }
            Val::Table(m)
        }
        Value::UserData(u) if u.is::<GlobalRef>() => {
            let r = u.borrow::<GlobalRef>()?;
            match read(&r.path) {
                Some(v) => v,
                None => return Ok(None),
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
            "proxy.global holds plain data only (nil, boolean, number, string, table), not a {}",
            other.type_name()
        )))
        }
    }))
}

fn lookup<'a>(root: &'a BTreeMap<Key, Val>, path: &[Key]) -> Option<&'a BTreeMap<Key, Val>> {
    let mut t = root;
    for k in path {
        match t.get(k)? {
            Val::Table(inner) => t = inner,
            _ => return None,
        }
    }
    Some(t)
}

fn read(path: &[Key]) -> Option<Val> {
    let store = STORE.read().unwrap_or_else(|p| p.into_inner());
    let (last, parent) = path.split_last()?;
    lookup(&store, parent)?.get(last).cloned()
}

fn to_lua(lua: &Lua, v: &Val, path: Vec<Key>) -> mlua::Result<Value> {
    Ok(match v {
        Val::Bool(b) => Value::Boolean(*b),
        Val::Int(i) => Value::Integer(*i as mlua::Integer),
        Val::Num(n) => Value::Number(*n),
        Val::Str(s) => Value::String(lua.create_string(s)?),
        Val::Table(_) => Value::UserData(lua.create_userdata(GlobalRef { path })?),
    })
}

impl UserData for GlobalRef {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: Value| {
            let key = key_of(&key)?;
            if this.path.is_empty() && key == Key::Str(b"backends".to_vec()) {
                return Ok(Value::UserData(lua.create_userdata(Backends)?));
            }
            let store = STORE.read().unwrap_or_else(|p| p.into_inner());
            let Some(v) = lookup(&store, &this.path).and_then(|t| t.get(&key)) else {
                return Ok(Value::Nil);
            };
            let v = v.clone();
            drop(store);
            let mut path = this.path.clone();
            path.push(key);
            to_lua(lua, &v, path)
        });
        m.add_meta_method(
            MetaMethod::NewIndex,
            |_, this, (key, value): (Value, Value)| {
                let key = key_of(&key)?;
                if this.path.is_empty() && key == Key::Str(b"backends".to_vec()) {
                    return Err(mlua::Error::runtime(
                        "proxy.global.backends is Weiche's backend list and cannot be replaced",
                    ));
                }
                let val = to_val(&value, 0)?;
                let mut store = STORE.write().unwrap_or_else(|p| p.into_inner());
                let mut t = &mut *store;
                for k in &this.path {
                    match t.get_mut(k) {
                        Some(Val::Table(inner)) => t = inner,
                        _ => return Err(mlua::Error::runtime("proxy.global: the table is gone")),
                    }
                }
                match val {
                    Some(v) => t.insert(key, v),
                    None => t.remove(&key),
                };
                Ok(())
            },
        );
        m.add_meta_method(MetaMethod::Len, |_, this, ()| {
            let store = STORE.read().unwrap_or_else(|p| p.into_inner());
            let Some(t) = lookup(&store, &this.path) else {
                return Ok(0);
            };
            let mut n = 0;
            while t.contains_key(&Key::Int(n + 1)) {
                n += 1;
            }
            Ok(n)
        });
    }
}

/// `pairs` for shared tables (Lua 5.1 has no __pairs): `proxy.global_pairs(t)`.
pub fn pairs_of(lua: &Lua, r: AnyUserData) -> mlua::Result<mlua::Table> {
    let r = r.borrow::<GlobalRef>()?;
    let out = lua.create_table()?;
    let store = STORE.read().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = lookup(&store, &r.path) {
        for (k, v) in t {
            let mut path = r.path.clone();
            path.push(k.clone());
            let key = match k {
                Key::Int(i) => Value::Integer(*i as mlua::Integer),
                Key::Str(s) => Value::String(lua.create_string(s)?),
            };
            out.set(key, to_lua(lua, v, path)?)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_tables_hold_plain_data() {
        let lua = Lua::new();
        lua.globals()
            .set("g", lua.create_userdata(GlobalRef::root()).unwrap())
            .unwrap();
        lua.load(
            r#"
            g.config.rw = { min = 4, name = "x", on = true, list = { 1, 2, 3 } }
            assert(g.config.rw.min == 4 and g.config.rw.name == "x" and g.config.rw.on)
            assert(#g.config.rw.list == 3)
            g.config.rw.min = nil
            assert(g.config.rw.min == nil)
            g.counter = (g.counter or 0) + 1
            assert(g.counter == 1)
            assert(not pcall(function() g.f = print end))
            "#,
        )
        .exec()
        .unwrap();
        assert_eq!(read(&[Key::Str(b"counter".to_vec())]), Some(Val::Int(1)));
    }
}
