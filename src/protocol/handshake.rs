//! The connection phase: the server greeting (HandshakeV10), the client's login packet
//! (HandshakeResponse41, or the short SSL request), auth switch requests, and COM_CHANGE_USER.

use super::basic::{put_lenenc_bytes, Reader};
use super::constants::cap;
use super::ProtocolError;
use bytes::{BufMut, BytesMut};

/// The server's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub server_version: Vec<u8>,
    pub connection_id: u32,
    /// The auth plugin's challenge (20 bytes for mysql_native_password and client_ed25519... 32).
    pub scramble: Vec<u8>,
    pub capabilities: u32,
    /// MariaDB's extended capabilities (`mariadb_cap`); 0 from MySQL servers.
    pub mariadb_caps: u32,
    pub charset: u8,
    pub status: u16,
    pub auth_plugin: Vec<u8>,
}

impl Greeting {
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        let proto = r.u8("greeting protocol version")?;
        if proto != 10 {
            return Err(ProtocolError::Malformed(
                "greeting: protocol version is not 10",
            ));
        }
        let server_version = r.null_str().to_vec();
        let connection_id = r.u32("greeting connection id")?;
        let mut scramble = r.bytes(8, "greeting scramble")?.to_vec();
        r.u8("greeting filler")?;
        let mut capabilities = r.u16("greeting capabilities")? as u32;
        let mut charset = 0;
        let mut status = 0;
        let mut auth_plugin = Vec::new();
        let mut mariadb_caps = 0;
        if !r.is_empty() {
            charset = r.u8("greeting charset")?;
            status = r.u16("greeting status")?;
            capabilities |= (r.u16("greeting capabilities")? as u32) << 16;
            let data_len = r.u8("greeting auth data length")? as usize;
            let reserved = r.bytes(10, "greeting reserved")?;
            if capabilities & cap::LONG_PASSWORD == 0 {
                mariadb_caps =
                    u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]]);
            }
            if capabilities & cap::SECURE_CONNECTION != 0 {
                let n = data_len.saturating_sub(8).max(13);
                let part2 = r.bytes(n.min(r.remaining()), "greeting scramble")?;
                // The second part is NUL-terminated inside its length.
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                scramble.extend_from_slice(part2);
            }
            if capabilities & cap::PLUGIN_AUTH != 0 {
                auth_plugin = r.null_str().to_vec();
            }
        }
        Ok(Greeting {
            server_version,
            connection_id,
            scramble,
            capabilities,
            mariadb_caps,
            charset,
            status,
            auth_plugin,
        })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(10);
        out.put_slice(&self.server_version);
        out.put_u8(0);
        out.put_u32_le(self.connection_id);
        let (p1, p2) = self.scramble.split_at(self.scramble.len().min(8));
        out.put_slice(p1);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.charset);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8((self.scramble.len() + 1) as u8);
        out.put_slice(&[0; 6]);
        out.put_u32_le(self.mariadb_caps);
        out.put_slice(p2);
        out.put_u8(0);
        out.put_slice(&self.auth_plugin);
        out.put_u8(0);
    }
}

/// The client's login packet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    /// MariaDB's extended capabilities, sent when `capabilities` lacks CLIENT_MYSQL.
    pub mariadb_caps: u32,
    pub max_packet: u32,
    pub charset: u8,
    pub username: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub auth_plugin: Option<Vec<u8>>,
    /// The connection attributes exactly as sent (the key/value pairs without the total length).
    pub connect_attrs: Option<Vec<u8>>,
    /// The zstd level asked for, with ZSTD_COMPRESSION_ALGORITHM.
    pub zstd_level: Option<u8>,
}

/// Length of an SSL request: the fixed part of the login packet, without a user name.
pub const SSL_REQUEST_LEN: usize = 32;

impl HandshakeResponse {
    /// True if this payload is an SSL request (the client wants to start TLS first).
    pub fn is_ssl_request(payload: &[u8]) -> bool {
        payload.len() == SSL_REQUEST_LEN
            && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & cap::SSL != 0
    }

    /// The SSL request: the login packet's fixed part, sent before the TLS handshake.
    pub fn encode_ssl_request(
        capabilities: u32,
        mariadb_caps: u32,
        max_packet: u32,
        charset: u8,
        out: &mut BytesMut,
    ) {
        out.put_u32_le(capabilities | cap::SSL);
        out.put_u32_le(max_packet);
        out.put_u8(charset);
        out.put_slice(&[0; 19]);
        out.put_u32_le(mariadb_caps);
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        let capabilities = r.u32("login capabilities")?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(ProtocolError::Unsupported(
                "clients older than MySQL 4.1 (no PROTOCOL_41)",
            ));
        }
        let max_packet = r.u32("login max packet")?;
        let charset = r.u8("login charset")?;
        let reserved = r.bytes(23, "login reserved")?;
        let mariadb_caps = if capabilities & cap::LONG_PASSWORD == 0 {
            u32::from_le_bytes([reserved[19], reserved[20], reserved[21], reserved[22]])
        } else {
            0
        };
        let username = r.null_str().to_vec();
        let auth_response = if capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("login auth response")?.to_vec()
        } else if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("login auth length")? as usize;
            r.bytes(n, "login auth response")?.to_vec()
        } else {
            r.null_str().to_vec()
        };
        let mut resp = HandshakeResponse {
            capabilities,
            mariadb_caps,
            max_packet,
            charset,
            username,
            auth_response,
            ..Default::default()
        };
        if capabilities & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            let db = r.null_str();
            if !db.is_empty() {
                resp.database = Some(db.to_vec());
            }
        }
        if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            resp.auth_plugin = Some(r.null_str().to_vec());
        }
        if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            resp.connect_attrs = Some(r.lenenc_bytes("login connect attributes")?.to_vec());
        }
        if capabilities & cap::ZSTD_COMPRESSION_ALGORITHM != 0 {
            resp.zstd_level = Some(if r.is_empty() {
                0
            } else {
                r.u8("login zstd level")?
            });
        }
        Ok(resp)
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_packet);
        out.put_u8(self.charset);
        out.put_slice(&[0; 19]);
        out.put_u32_le(self.mariadb_caps);
        out.put_slice(&self.username);
        out.put_u8(0);
        // The same three forms decode() reads (a fuzzer found the third missing).
        if self.capabilities & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else if self.capabilities & cap::SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.put_u8(n as u8);
            out.put_slice(&self.auth_response[..n]);
        } else {
            let end = self
                .auth_response
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.auth_response.len());
            out.put_slice(&self.auth_response[..end]);
            out.put_u8(0);
        }
        if self.capabilities & cap::CONNECT_WITH_DB != 0 {
            out.put_slice(self.database.as_deref().unwrap_or_default());
            out.put_u8(0);
        }
        if self.capabilities & cap::PLUGIN_AUTH != 0 {
            out.put_slice(self.auth_plugin.as_deref().unwrap_or_default());
            out.put_u8(0);
        }
        if self.capabilities & cap::CONNECT_ATTRS != 0 {
            put_lenenc_bytes(out, self.connect_attrs.as_deref().unwrap_or_default());
        }
        if self.capabilities & cap::ZSTD_COMPRESSION_ALGORITHM != 0 {
            out.put_u8(self.zstd_level.unwrap_or(0));
        }
    }
}

/// An auth switch request (0xFE, plugin name, challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch {
    pub plugin: Vec<u8>,
    pub data: Vec<u8>,
}

impl AuthSwitch {
    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        if r.u8("auth switch header")? != 0xfe {
            return Err(ProtocolError::Malformed("auth switch header"));
        }
        let plugin = r.null_str().to_vec();
        let data = r.rest();
        let data = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
        Ok(AuthSwitch { plugin, data })
    }

    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(0xfe);
        out.put_slice(&self.plugin);
        out.put_u8(0);
        out.put_slice(&self.data);
        out.put_u8(0);
    }
}

/// COM_CHANGE_USER's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeUser {
    pub username: Vec<u8>,
    pub auth_response: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub charset: Option<u16>,
    pub auth_plugin: Option<Vec<u8>>,
    pub connect_attrs: Option<Vec<u8>>,
}

impl ChangeUser {
    /// Decode with the capabilities the client negotiated at login.
    pub fn decode(payload: &[u8], capabilities: u32) -> Result<Self, ProtocolError> {
        let mut r = Reader::new(payload);
        r.u8("change user command")?;
        let username = r.null_str().to_vec();
        let auth_response = if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("change user auth length")? as usize;
            r.bytes(n, "change user auth response")?.to_vec()
        } else {
            r.null_str().to_vec()
        };
        let db = r.null_str();
        let mut cu = ChangeUser {
            username,
            auth_response,
            database: (!db.is_empty()).then(|| db.to_vec()),
            ..Default::default()
        };
        if r.remaining() >= 2 {
            cu.charset = Some(r.u16("change user charset")?);
        }
        if capabilities & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            cu.auth_plugin = Some(r.null_str().to_vec());
        }
        if capabilities & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            cu.connect_attrs = Some(r.lenenc_bytes("change user connect attributes")?.to_vec());
        }
        Ok(cu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip() {
        let g = Greeting {
            server_version: b"5.5.5-10.11.6-MariaDB".to_vec(),
            connection_id: 42,
            scramble: (1..=20).collect(),
            capabilities: cap::WEICHE_SERVER & !cap::LONG_PASSWORD,
            mariadb_caps: super::super::constants::mariadb_cap::WEICHE,
            charset: 45,
            status: 2,
            auth_plugin: b"mysql_native_password".to_vec(),
        };
        let mut b = BytesMut::new();
        g.encode(&mut b);
        assert_eq!(Greeting::decode(&b).unwrap(), g);
    }

    #[test]
    fn login_round_trip_with_every_optional_part() {
        let l = HandshakeResponse {
            capabilities: cap::PROTOCOL_41
                | cap::SECURE_CONNECTION
                | cap::PLUGIN_AUTH
                | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | cap::CONNECT_WITH_DB
                | cap::CONNECT_ATTRS
                | cap::ZSTD_COMPRESSION_ALGORITHM,
            mariadb_caps: super::super::constants::mariadb_cap::EXTENDED_METADATA,
            max_packet: 1 << 24,
            charset: 45,
            username: b"app".to_vec(),
            auth_response: vec![7; 20],
            database: Some(b"weiche".to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            connect_attrs: Some(b"\x04_pid\x0212".to_vec()),
            zstd_level: Some(7),
        };
        let mut b = BytesMut::new();
        l.encode(&mut b);
        assert_eq!(HandshakeResponse::decode(&b).unwrap(), l);
        assert!(!HandshakeResponse::is_ssl_request(&b));
    }

    #[test]
    fn truncated_login_is_an_error() {
        assert!(HandshakeResponse::decode(&[0x00, 0x02, 0, 0, 0]).is_err());
        let mut b = BytesMut::new();
        b.put_u32_le(cap::PROTOCOL_41 | cap::SECURE_CONNECTION);
        b.put_slice(&[0; 28]);
        b.put_slice(b"u\0");
        b.put_u8(20); // says 20 bytes follow, none do
        assert!(HandshakeResponse::decode(&b).is_err());
    }
}
