//! One Lua state per worker thread. The script is compiled once per state and recompiled when
//! its file changes (a version that fails to compile keeps the old one). Each client connection
//! gets its own environment (`setmetatable({}, {__index = _G})`) in which the script's top-level
//! chunk runs once: its globals and top-level locals are per-connection state. Sessions hold a
//! `ScriptHandle` (plain data, so sessions stay `Send`); the Lua side lives here.

use super::{constants, global, modules};
use crate::config::Scripting;
use mlua::{Function, HookTriggers, Lua, Table, Value, VmState};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

/// How often the instruction budget is checked (instructions).
const BUDGET_STEP: u32 = 1000;

/// The worker's Lua state and its compiled script.
pub(super) struct Engine {
    pub lua: Lua,
    config: Scripting,
    /// The compiled script, and the file's (mtime, size) it was compiled from.
    chunk: Option<Function>,
    stamp: Option<(SystemTime, u64)>,
    /// Instructions left for the running hook.
    budget: Rc<Cell<i64>>,
    pub sessions: HashMap<u64, Conn>,
    next: u64,
    /// The `proxy` table, and the connection whose objects it shows now.
    proxy: Table,
    bound: u64,
}

/// One client connection's Lua side.
pub(super) struct Conn {
    pub env: Table,
    pub queries: mlua::AnyUserData,
    pub list: super::inject::Queue,
    pub connection: Table,
    pub cells: Rc<super::Cells>,
    pub shown: super::Shown,
    /// Hooks looked up once per connection (a script defines them in its chunk); a few
    /// entries, searched by name.
    hooks: Vec<(&'static str, Option<Function>)>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

type Stamp = Option<(SystemTime, u64)>;

/// The last version of the script that compiled, on any worker: a worker that finds the file
/// broken falls back to it, so all workers run the same version.
static LAST_GOOD: std::sync::Mutex<Option<(Stamp, Vec<u8>)>> = std::sync::Mutex::new(None);

/// Why a hook could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("{0}")]
    Lua(#[from] mlua::Error),
    #[error("the Lua script failed to load: {0}")]
    Load(String),
}

/// Run `f` with this worker's engine, creating it for `config` first.
pub(super) fn with<R>(
    config: &Scripting,
    f: impl FnOnce(&mut Engine) -> R,
) -> Result<R, ScriptError> {
    ENGINE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|e| &e.config != config) {
            *slot = Some(Engine::new(config.clone())?);
        }
        match slot.as_mut() {
            Some(e) => Ok(f(e)),
            None => Err(ScriptError::Load("no Lua state".into())),
        }
    })
}

/// Run `f` with this worker's engine if there is one.
pub(super) fn with_existing<R>(f: impl FnOnce(&mut Engine) -> R) -> Option<R> {
    ENGINE.with(|cell| cell.try_borrow_mut().ok()?.as_mut().map(f))
}

/// Memory one worker's Lua state may hold; past it an allocation fails and the hook errors.
const LUA_MEMORY_LIMIT: usize = 512 << 20;

impl Engine {
    fn new(config: Scripting) -> Result<Engine, ScriptError> {
        let lua = Lua::new();
        // A script that keeps what clients send (proxy.global) must not take the process down.
        if let Err(e) = lua.set_memory_limit(LUA_MEMORY_LIMIT) {
            tracing::debug!("no memory limit for Lua on this build: {e}");
        }
        let budget = Rc::new(Cell::new(i64::MAX));
        let b = budget.clone();
        let limit = config.instruction_limit;
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(BUDGET_STEP),
            move |_, _| {
                let left = b.get() - i64::from(BUDGET_STEP);
                b.set(left);
                if left < 0 {
                    return Err(mlua::Error::runtime(format!(
                        "the hook ran more than {limit} Lua instructions (proxy.script_instruction_limit)"
                    )));
                }
                Ok(VmState::Continue)
            },
        );
        let g = lua.globals();
        let tostring: Function = g.get("tostring")?;
        g.set(
            "print",
            lua.create_function(move |_, args: mlua::Variadic<Value>| {
                let mut text = Vec::with_capacity(args.len());
                for v in args.iter() {
                    let s: mlua::String = tostring.call(v.clone())?;
                    text.push(s.to_string_lossy().to_string());
                }
                tracing::info!(target: "weiche::lua", "{}", text.join("\t"));
                Ok(())
            })?,
        )?;
        let proxy = constants::proxy_table(&lua)?;
        let proxy_ref = proxy.clone();
        proxy.set("global", lua.create_userdata(global::GlobalRef::root())?)?;
        // Lua 5.1 has no __pairs: `pairs(proxy.global_pairs(t))` walks a shared table.
        proxy.set("global_pairs", lua.create_function(global::pairs_of)?)?;
        g.set("proxy", proxy)?;
        modules::install(&lua, &config)?;
        let mut e = Engine {
            lua,
            config,
            chunk: None,
            stamp: None,
            budget,
            sessions: HashMap::new(),
            next: 1,
            proxy: proxy_ref,
            bound: 0,
        };
        e.reload();
        Ok(e)
    }

    /// Recompile when the file changed. A version that does not compile leaves the old one.
    pub fn reload(&mut self) {
        let path = &self.config.path;
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp.is_some() && stamp == self.stamp {
            return;
        }
        let source = match std::fs::read(path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("cannot read Lua script {}: {e}", path.display());
                return;
            }
        };
        let name = format!("@{}", path.display());
        match self
            .lua
            .load(&source[..])
            .set_name(name.clone())
            .into_function()
        {
            Ok(f) => {
                if self.chunk.is_some() {
                    tracing::info!("reloaded Lua script {}", path.display());
                }
                self.chunk = Some(f);
                self.stamp = stamp;
                *LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner()) = Some((stamp, source));
            }
            Err(e) => {
                let good = LAST_GOOD.lock().unwrap_or_else(|p| p.into_inner()).clone();
                tracing::error!(
                    "Lua script {} does not compile{}: {e}",
                    path.display(),
                    if good.is_some() {
                        "; the previous version stays"
                    } else {
                        ""
                    }
                );
                // Do not try this version again until the file changes.
                self.stamp = stamp;
                if let Some((_, source)) = good {
                    if let Ok(f) = self.lua.load(&source[..]).set_name(name).into_function() {
                        self.chunk = Some(f);
                    }
                }
            }
        }
    }

    /// A new connection: its environment, with the script's top-level chunk run in it.
    pub fn open(
        &mut self,
        connection: Table,
        cells: Rc<super::Cells>,
        shown: super::Shown,
    ) -> Result<u64, ScriptError> {
        self.reload();
        let Some(chunk) = self.chunk.clone() else {
            return Err(ScriptError::Load("the script did not compile".into()));
        };
        let env = self.lua.create_table()?;
        let mt = self.lua.create_table()?;
        mt.set("__index", self.lua.globals())?;
        env.set_metatable(Some(mt));
        let list = super::inject::Queue::default();
        let queries = self
            .lua
            .create_userdata(super::inject::Queries(list.clone()))?;
        self.bind(0, &queries, &connection)?;
        chunk.set_environment(env.clone())?;
        self.budget.set(self.config.instruction_limit as i64);
        chunk
            .call::<()>(())
            .map_err(|e| ScriptError::Load(e.to_string()))?;
        let id = self.next;
        self.next += 1;
        self.sessions.insert(
            id,
            Conn {
                env,
                queries,
                list,
                connection,
                cells,
                shown,
                hooks: Vec::with_capacity(4),
            },
        );
        Ok(id)
    }

    /// Point `proxy.queries` and `proxy.connection` at one connection's objects (`id` 0: a
    /// connection being opened).
    fn bind(
        &mut self,
        id: u64,
        queries: &mlua::AnyUserData,
        connection: &Table,
    ) -> mlua::Result<()> {
        if id == 0 || self.bound != id {
            self.proxy.raw_set("queries", queries.clone())?;
            self.proxy.raw_set("connection", connection.clone())?;
            self.bound = id;
        }
        Ok(())
    }

    /// A fresh `proxy.response` (after one was used).
    pub fn fresh_response(&self) -> mlua::Result<()> {
        self.proxy.raw_set("response", self.lua.create_table()?)
    }

    /// The connection's hook `name`, if the script defines it.
    pub fn hook(&mut self, id: u64, name: &'static str) -> Result<Option<Function>, ScriptError> {
        let Some(conn) = self.sessions.get_mut(&id) else {
            return Ok(None);
        };
        if let Some((_, h)) = conn.hooks.iter().find(|(n, _)| *n == name) {
            return Ok(h.clone());
        }
        let h = match conn.env.get::<Value>(name)? {
            Value::Function(f) => Some(f),
            _ => None,
        };
        conn.hooks.push((name, h.clone()));
        Ok(h)
    }

    /// Call hook `name` of connection `id` with `args`; None when the script has no such hook.
    pub fn call(
        &mut self,
        id: u64,
        name: &'static str,
        args: impl mlua::IntoLuaMulti,
    ) -> Result<Option<Value>, ScriptError> {
        let Some(hook) = self.hook(id, name)? else {
            return Ok(None);
        };
        let Some(conn) = self.sessions.get(&id) else {
            return Ok(None);
        };
        let (queries, connection) = (conn.queries.clone(), conn.connection.clone());
        self.bind(id, &queries, &connection)?;
        self.budget.set(self.config.instruction_limit as i64);
        let started = Instant::now();
        let r = hook.call::<Value>(args);
        if started.elapsed().as_millis() > 100 {
            tracing::warn!("Lua hook {name} took {:?}", started.elapsed());
        }
        Ok(Some(r?))
    }
}
