//! `mysql.password`: mysql_native_password's hashing for scripts (`hash`, `scramble`,
//! `unscramble`, `check`), on the same functions Weiche's own login uses.

use crate::protocol::auth;
use mlua::{Lua, Table};

fn array20(b: &[u8], what: &str) -> mlua::Result<[u8; 20]> {
    b.try_into()
        .map_err(|_| mlua::Error::runtime(format!("mysql.password: {what} must be 20 bytes")))
}

pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    // hash(password) = SHA1(password)
    m.set(
        "hash",
        lua.create_function(|lua, pw: mlua::String| {
            lua.create_string(auth::stage1(&pw.as_bytes()))
        })?,
    )?;
    // scramble(challenge, SHA1(password)) = the client's answer
    m.set(
        "scramble",
        lua.create_function(|lua, (challenge, hashed): (mlua::String, mlua::String)| {
            let s1 = array20(&hashed.as_bytes(), "the hashed password")?;
            lua.create_string(auth::native_response(&s1, &challenge.as_bytes()))
        })?,
    )?;
    // unscramble(challenge, response, SHA1(SHA1(password))) = SHA1(password)
    m.set(
        "unscramble",
        lua.create_function(
            |lua, (challenge, response, double): (mlua::String, mlua::String, mlua::String)| {
                let s2 = array20(&double.as_bytes(), "the double-hashed password")?;
                let r = array20(&response.as_bytes(), "the response")?;
                let c = challenge.as_bytes();
                // response XOR SHA1(challenge + stage2) = stage1
                let mut h = <sha1::Sha1 as sha1::Digest>::new();
                sha1::Digest::update(&mut h, &c[..]);
                sha1::Digest::update(&mut h, s2);
                let k = sha1::Digest::finalize(h);
                let s1: Vec<u8> = r.iter().zip(k.iter()).map(|(a, b)| a ^ b).collect();
                lua.create_string(s1)
            },
        )?,
    )?;
    // check(challenge, response, SHA1(SHA1(password)))
    m.set(
        "check",
        lua.create_function(
            |_, (challenge, response, double): (mlua::String, mlua::String, mlua::String)| {
                let s2 = array20(&double.as_bytes(), "the double-hashed password")?;
                Ok(auth::native_verify(&challenge.as_bytes(), &response.as_bytes(), &s2).is_some())
            },
        )?,
    )?;
    Ok(m)
}
