//! The `proxy` table's constants, with mysql-proxy 0.8's exact values (and the additions the
//! contract names).

use super::backends;
use mlua::{Lua, Table};

const COMMANDS: &[(&str, i64)] = &[
    ("SLEEP", 0),
    ("QUIT", 1),
    ("INIT_DB", 2),
    ("QUERY", 3),
    ("FIELD_LIST", 4),
    ("CREATE_DB", 5),
    ("DROP_DB", 6),
    ("REFRESH", 7),
    ("SHUTDOWN", 8),
    ("STATISTICS", 9),
    ("PROCESS_INFO", 10),
    ("CONNECT", 11),
    ("PROCESS_KILL", 12),
    ("DEBUG", 13),
    ("PING", 14),
    ("TIME", 15),
    ("DELAYED_INSERT", 16),
    ("CHANGE_USER", 17),
    ("BINLOG_DUMP", 18),
    ("TABLE_DUMP", 19),
    ("CONNECT_OUT", 20),
    ("REGISTER_SLAVE", 21),
    ("STMT_PREPARE", 22),
    ("STMT_EXECUTE", 23),
    ("STMT_SEND_LONG_DATA", 24),
    ("STMT_CLOSE", 25),
    ("STMT_RESET", 26),
    ("SET_OPTION", 27),
    ("STMT_FETCH", 28),
    ("DAEMON", 29),
    ("BINLOG_DUMP_GTID", 30),
    ("RESET_CONNECTION", 31),
];

const TYPES: &[(&str, i64)] = &[
    ("DECIMAL", 0),
    ("TINY", 1),
    ("SHORT", 2),
    ("LONG", 3),
    ("FLOAT", 4),
    ("DOUBLE", 5),
    ("NULL", 6),
    ("TIMESTAMP", 7),
    ("LONGLONG", 8),
    ("INT24", 9),
    ("DATE", 10),
    ("TIME", 11),
    ("DATETIME", 12),
    ("YEAR", 13),
    ("NEWDATE", 14),
    ("VARCHAR", 15),
    ("BIT", 16),
    ("JSON", 245),
    ("NEWDECIMAL", 246),
    ("ENUM", 247),
    ("SET", 248),
    ("TINY_BLOB", 249),
    ("MEDIUM_BLOB", 250),
    ("LONG_BLOB", 251),
    ("BLOB", 252),
    ("VAR_STRING", 253),
    ("STRING", 254),
    ("GEOMETRY", 255),
];

pub const PROXY_SEND_QUERY: i64 = 1;
pub const PROXY_SEND_RESULT: i64 = 2;
pub const PROXY_IGNORE_RESULT: i64 = 4;
pub const MYSQLD_PACKET_OK: i64 = 0;
pub const MYSQLD_PACKET_RAW: i64 = 250;
pub const MYSQLD_PACKET_EOF: i64 = 254;
pub const MYSQLD_PACKET_ERR: i64 = 255;

/// The `proxy` table with every constant.
pub fn proxy_table(lua: &Lua) -> mlua::Result<Table> {
    let p = lua.create_table()?;
    for (k, v) in [
        ("PROXY_SEND_QUERY", PROXY_SEND_QUERY),
        ("PROXY_SEND_RESULT", PROXY_SEND_RESULT),
        ("PROXY_IGNORE_RESULT", PROXY_IGNORE_RESULT),
        ("MYSQLD_PACKET_OK", MYSQLD_PACKET_OK),
        ("MYSQLD_PACKET_ERR", MYSQLD_PACKET_ERR),
        ("MYSQLD_PACKET_RAW", MYSQLD_PACKET_RAW),
        ("MYSQLD_PACKET_EOF", MYSQLD_PACKET_EOF),
        ("BACKEND_STATE_UNKNOWN", backends::STATE_UNKNOWN),
        ("BACKEND_STATE_UP", backends::STATE_UP),
        ("BACKEND_STATE_DOWN", backends::STATE_DOWN),
        ("BACKEND_STATE_OFFLINE", backends::STATE_OFFLINE),
        ("BACKEND_STATE_LAGGING", backends::STATE_LAGGING),
        ("BACKEND_TYPE_UNKNOWN", 0),
        ("BACKEND_TYPE_RW", backends::TYPE_RW),
        ("BACKEND_TYPE_RO", backends::TYPE_RO),
        // 0.8.5, so that version checks in old scripts pass.
        ("PROXY_VERSION", 0x00805),
    ] {
        p.set(k, v)?;
    }
    for (k, v) in COMMANDS {
        p.set(format!("COM_{k}"), *v)?;
    }
    for (k, v) in TYPES {
        p.set(format!("MYSQL_TYPE_{k}"), *v)?;
    }
    p.set("WEICHE_VERSION", env!("CARGO_PKG_VERSION"))?;
    p.set("response", lua.create_table()?)?;
    // 0.7's name, removed in 0.8: the same error as 0.8.5.
    let mt = lua.create_table()?;
    mt.set(
        "__index",
        lua.create_function(
            |_, (_, key): (mlua::Value, String)| -> mlua::Result<mlua::Value> {
                if key == "backends" {
                    return Err(mlua::Error::runtime(
                        "proxy.backends is deprecated, use proxy.global.backends instead",
                    ));
                }
                Ok(mlua::Value::Nil)
            },
        )?,
    )?;
    p.set_metatable(Some(mt));
    Ok(p)
}
