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
        let stream = TcpStream::connect(addr).await.expect("connect");
        let mut f = Framed::new(stream);
        let g = f.read_packet(1 << 20).await.expect("greeting");
        let greeting = Greeting::decode(&g.payload).expect("decode greeting");
        let capabilities = (BASE_CAPS | extra_caps) & greeting.capabilities;
        let response = if password.is_empty() {
            Vec::new()
        } else {
            auth::native_response(&auth::stage1(password.as_bytes()), &greeting.scramble).to_vec()
        };
        let login = HandshakeResponse {
            capabilities,
            max_packet: 1 << 24,
            charset: 45,
            username: user.as_bytes().to_vec(),
            auth_response: response,
            database: Some(b"weiche".to_vec()),
            auth_plugin: Some(auth::NATIVE_PASSWORD.to_vec()),
            connect_attrs: None,
        };
        let mut buf = BytesMut::new();
        login.encode(&mut buf);
        f.send(1, &buf).await.expect("send login");
        let r = f.read_packet(1 << 20).await.expect("login result");
        assert_eq!(
            r.payload.first(),
            Some(&0u8),
            "login failed: {:?}",
            String::from_utf8_lossy(&r.payload)
        );
        Raw {
            f,
            greeting,
            capabilities,
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

pub fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

pub fn is_err(p: &[u8]) -> bool {
    p.first() == Some(&0xff)
}
