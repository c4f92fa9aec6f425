//! The modules `require` finds without an install step: Lua sources built into the binary
//! (proxy.tokenizer, proxy.commands, proxy.balance, proxy.auto-config, proxy.test) and native
//! ones (mysql.tokenizer, mysql.password, mysql.proto, chassis). `package.path` also gets
//! `--lua-path` and the script's own directory.

use super::{password, proto, tokenizer};
use crate::config::Scripting;
use mlua::{Lua, Table};

/// Bundled Lua modules: (name, source).
const LUA_MODULES: &[(&str, &str)] = &[
    ("proxy.tokenizer", include_str!("lua/proxy/tokenizer.lua")),
    ("proxy.commands", include_str!("lua/proxy/commands.lua")),
    ("proxy.balance", include_str!("lua/proxy/balance.lua")),
    (
        "proxy.auto-config",
        include_str!("lua/proxy/auto-config.lua"),
    ),
    ("proxy.test", include_str!("lua/proxy/test.lua")),
];

pub fn install(lua: &Lua, config: &Scripting) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let dir = config
        .path
        .parent()
        .map(|d| d.display().to_string())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| ".".into());
    let mut path = String::new();
    for extra in [config.lua_path.clone(), std::env::var("LUA_PATH").ok()]
        .into_iter()
        .flatten()
    {
        path.push_str(&extra);
        path.push(';');
    }
    path.push_str(&format!("{dir}/?.lua;"));
    path.push_str(&package.get::<String>("path").unwrap_or_default());
    package.set("path", path)?;
    if let Some(c) = config
        .lua_cpath
        .clone()
        .or_else(|| std::env::var("LUA_CPATH").ok())
    {
        let old = package.get::<String>("cpath").unwrap_or_default();
        package.set("cpath", format!("{c};{old}"))?;
    }
    let preload: Table = package.get("preload")?;
    for (name, source) in LUA_MODULES {
        let loader = lua
            .load(*source)
            .set_name(format!("=weiche:{name}"))
            .into_function()?;
        preload.set(*name, loader)?;
    }
    preload.set(
        "mysql.tokenizer",
        lua.create_function(|lua, ()| tokenizer::module(lua))?,
    )?;
    preload.set(
        "mysql.password",
        lua.create_function(|lua, ()| password::module(lua))?,
    )?;
    preload.set(
        "mysql.proto",
        lua.create_function(|lua, ()| proto::module(lua))?,
    )?;
    preload.set("chassis", lua.create_function(|lua, ()| chassis(lua))?)?;
    Ok(())
}

/// `chassis`: logging from scripts.
fn chassis(lua: &Lua) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set(
        "log",
        lua.create_function(|_, (level, msg): (String, String)| {
            log(&level, &msg);
            Ok(())
        })?,
    )?;
    for level in ["critical", "error", "warning", "message", "info", "debug"] {
        t.set(
            level,
            lua.create_function(move |_, msg: String| {
                log(level, &msg);
                Ok(())
            })?,
        )?;
    }
    Ok(t)
}

fn log(level: &str, msg: &str) {
    match level {
        "critical" | "error" => tracing::error!(target: "weiche::lua", "{msg}"),
        "warning" => tracing::warn!(target: "weiche::lua", "{msg}"),
        "debug" => tracing::debug!(target: "weiche::lua", "{msg}"),
        _ => tracing::info!(target: "weiche::lua", "{msg}"),
    }
}
