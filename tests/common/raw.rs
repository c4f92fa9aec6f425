//! A minimal client on Weiche's own protocol module, for commands that drivers do not expose
//! (COM_FIELD_LIST, cursors, unknown command bytes) and for raw byte comparisons.
#![allow(dead_code)]

use bytes::BytesMut;
use tokio::net::TcpStream;
use weiche::protocol::auth;
use weiche::protocol::constants::cap;
use weiche::protocol::handshake::{Greeting, HandshakeResponse};
use weiche::protocol::{Chunk, Framed};

pub struct Raw {
    pub f: Framed<TcpStream>,
    pub greeting: Greeting,
    pub capabilities: u32,
    /// MariaDB's extended capabilities agreed on.
    pub mariadb_caps: u32,
}

pub const BASE_CAPS: u32 = cap::LONG_PASSWORD
    | cap::PROTOCOL_41
    | cap::SECURE_CONNECTION
    | cap::PLUGIN_AUTH
    | cap::TRANSACTIONS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::CONNECT_WITH_DB;

impl Raw {
    /// Log in with mysql_native_password; panics with the server's message on failure.
    pub async fn login(addr: &str, user: &str, password: &str, extra_caps: u32) -> Raw {
        Self::login_mariadb(addr, user, password, extra_caps, 0).await
    }

    /// Log in asking for MariaDB's extended capabilities too (as a MariaDB client does: without
    /// CLIENT_MYSQL).
    pub async fn login_mariadb(
        addr: &str,
        user: &str,
        password: &str,
        extra_caps: u32,
        mariadb_caps: u32,
    ) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        match Self::try_login_on(
            stream,
            user,
            password,
            extra_caps,
            mariadb_caps,
            Some("weiche"),
        )
        .await
        {
            Ok(r) => r,
            Err(p) => panic!("login failed: {:?}", String::from_utf8_lossy(&p)),
        }
    }

    /// Log in from `source` (an address of this host, e.g. 127.0.0.2) without a database; the
    /// first packet Weiche sent instead of an OK when it refused.
    pub async fn try_login_from(
        source: &str,
        addr: &str,
        user: &str,
        password: &str,
    ) -> Result<Raw, Vec<u8>> {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{source}:0").parse().expect("source address"))
            .expect("bind the source address");
        let stream = socket
            .connect(addr.parse().expect("address"))
            .await
            .expect("connect");
        Self::try_login_on(stream, user, password, 0, 0, None).await
    }

    async fn try_login_on(
        stream: TcpStream,
        user: &str,
        password: &str,
        extra_caps: u32,
        mariadb_caps: u32,
        db: Option<&str>,
    ) -> Result<Raw, Vec<u8>> {
        let mut f = Framed::new(stream);
        let g = f.read_packet(1 << 20).await.expect("greeting");
        if g.payload.first() == Some(&0xff) {
            return Err(g.payload.to_vec());
        }
        let greeting = Greeting::decode(&g.payload).expect("decode greeting");
        let mut capabilities = (BASE_CAPS | extra_caps) & greeting.capabilities;
        let mariadb_caps = mariadb_caps & greeting.mariadb_caps;
        if mariadb_caps != 0 {
            capabilities &= !cap::LONG_PASSWORD;
        }
        let response = native(password, &greeting.scramble);
        let login = HandshakeResponse {
            capabilities,
            mariadb_caps,
            max_packet: 1 << 24,
            charset: 45,
            username: user.as_bytes().to_vec(),
            auth_response: response,
            database: db.map(|d| d.as_bytes().to_vec()),
            auth_plugin: Some(auth::NATIVE_PASSWORD.to_vec()),
            connect_attrs: None,
            zstd_level: None,
        };
        let mut buf = BytesMut::new();
        login.encode(&mut buf);
        f.send(1, &buf).await.expect("send login");
        let r = f.read_packet(1 << 20).await.expect("login result");
        if r.payload.first() != Some(&0u8) {
            return Err(r.payload.to_vec());
        }
        Ok(Raw {
            f,
            greeting,
            capabilities,
            mariadb_caps,
        })
    }

    /// COM_CHANGE_USER to `user` with `password` (answering an auth switch if one comes); the
    /// last packet Weiche sent: OK, ERR, or EOF when it closed the connection.
    pub async fn change_user(&mut self, user: &str, password: &str) -> Vec<u8> {
        let mut p = vec![0x11u8];
        p.extend_from_slice(user.as_bytes());
        p.push(0);
        let answer = native(password, &self.greeting.scramble);
        p.push(answer.len() as u8);
        p.extend_from_slice(&answer);
        p.extend_from_slice(b"weiche\0");
        p.extend_from_slice(&45u16.to_le_bytes());
        p.extend_from_slice(auth::NATIVE_PASSWORD);
        p.push(0);
        self.send(&p).await;
        loop {
            let r = match self.f.read_packet(1 << 20).await {
                Ok(r) => r,
                Err(_) => return Vec::new(),
            };
            if r.payload.first() != Some(&0xfe) || r.payload.len() < 9 {
                return r.payload.to_vec();
            }
            // An auth switch: answer its challenge.
            let at = r.payload.iter().position(|&b| b == 0).unwrap_or(0) + 1;
            let data = r.payload[at..]
                .strip_suffix(&[0])
                .unwrap_or(&r.payload[at..]);
            let answer = native(password, data);
            self.f
                .send(r.seq.wrapping_add(1), &answer)
                .await
                .expect("answer the auth switch");
        }
    }

    /// Send a command (sequence id 0).
    pub async fn send(&mut self, payload: &[u8]) {
        self.f.send(0, payload).await.expect("send command");
    }

    pub async fn read(&mut self) -> Chunk {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            self.f.read_packet(1 << 26),
        )
        .await
        .expect("response within 10 s")
        .expect("read packet")
    }

    /// Read packets until one satisfies `last` (inclusive).
    pub async fn read_until(&mut self, last: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let p = self.read().await;
            let end = last(&p.payload);
            out.push(p.payload.to_vec());
            if end {
                return out;
            }
        }
    }

    pub async fn query(&mut self, sql: &str) -> Vec<Vec<u8>> {
        let mut p = vec![3u8];
        p.extend_from_slice(sql.as_bytes());
        self.send(&p).await;
        // Simple result sets only: OK/ERR, or columns + EOF + rows + EOF (no DEPRECATE_EOF).
        let first = self.read().await;
        let mut out = vec![first.payload.to_vec()];
        if matches!(first.payload.first(), Some(0x00) | Some(0xff)) {
            return out;
        }
        let mut eofs = 0;
        while eofs < 2 {
            let p = self.read().await;
            if p.payload.first() == Some(&0xfe) && p.payload.len() < 9 {
                eofs += 1;
            }
            if p.payload.first() == Some(&0xff) {
                eofs = 2;
            }
            out.push(p.payload.to_vec());
        }
        out
    }
}

impl Raw {
    /// COM_STMT_PREPARE; the statement id and its parameter count (panics on an error).
    pub async fn prepare(&mut self, sql: &str) -> (u32, u16) {
        let mut p = vec![0x16u8];
        p.extend_from_slice(sql.as_bytes());
        self.send(&p).await;
        let ok = self.read().await.payload;
        assert_eq!(
            ok.first(),
            Some(&0),
            "prepare failed: {:?}",
            String::from_utf8_lossy(&ok)
        );
        let id = u32::from_le_bytes([ok[1], ok[2], ok[3], ok[4]]);
        let columns = u16::from_le_bytes([ok[5], ok[6]]);
        let params = u16::from_le_bytes([ok[7], ok[8]]);
        for n in [params, columns] {
            if n > 0 {
                self.read_until(is_eof).await;
            }
        }
        (id, params)
    }

    /// COM_STMT_EXECUTE of statement `id` with LONGLONG parameters; the types are sent only
    /// when `send_types` (as libmariadb and mysqlnd do after the first execute). The packets
    /// of the response: one ERR or OK, or the whole binary result set.
    pub async fn execute(&mut self, id: u32, values: &[i64], send_types: bool) -> Vec<Vec<u8>> {
        let mut p = vec![0x17u8];
        p.extend_from_slice(&id.to_le_bytes());
        p.push(0); // no cursor
        p.extend_from_slice(&1u32.to_le_bytes());
        if !values.is_empty() {
            p.extend(std::iter::repeat_n(0u8, values.len().div_ceil(8)));
            p.push(u8::from(send_types));
            if send_types {
                for _ in values {
                    p.extend_from_slice(&[8, 0]);
                }
            }
            for v in values {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        self.send(&p).await;
        let first = self.read().await.payload.to_vec();
        if matches!(first.first(), Some(0x00) | Some(0xff)) {
            return vec![first];
        }
        let mut out = vec![first];
        let mut eofs = 0;
        while eofs < 2 {
            let p = self.read().await.payload.to_vec();
            if is_eof(&p) {
                eofs += 1;
            }
            if is_err(&p) {
                eofs = 2;
            }
            out.push(p);
        }
        out
    }
}

/// A mysql_native_password answer to `scramble` (empty for an empty password).
fn native(password: &str, scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        Vec::new()
    } else {
        auth::native_response(&auth::stage1(password.as_bytes()), scramble).to_vec()
    }
}

pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

pub fn is_err(p: &[u8]) -> bool {
    p.first() == Some(&0xff)
}
