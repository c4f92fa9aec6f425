//! Compression settings: which algorithms of the compressed protocol clients are offered
//! (`[proxy] compression`, `compression_level`), and whether a backend's connections use it
//! (`[[backends]] compress`).

use super::{invalid, ConfigError};
use crate::protocol::compress::Algorithm;

/// What clients are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCompression {
    pub zlib: bool,
    pub zstd: bool,
    /// The zlib level of what Weiche sends (zstd uses the level the client asks for).
    pub zlib_level: u32,
}

impl Default for ClientCompression {
    fn default() -> Self {
        ClientCompression {
            zlib: true,
            zstd: true,
            zlib_level: DEFAULT_ZLIB_LEVEL,
        }
    }
}

/// zlib's own default, which MariaDB uses.
pub const DEFAULT_ZLIB_LEVEL: u32 = 6;
/// What MySQL clients assume when they send no level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl ClientCompression {
    /// The algorithm a client gets that asked with these capabilities (zlib when it asked for
    /// both, as MySQL does), and its zstd level.
    pub fn negotiate(&self, zlib: bool, zstd: Option<u8>) -> Option<Algorithm> {
        if zlib && self.zlib {
            return Some(Algorithm::Zlib {
                level: self.zlib_level,
            });
        }
        match zstd {
            Some(level) if self.zstd => Some(Algorithm::Zstd {
                level: if (1..=22).contains(&level) {
                    i32::from(level)
                } else {
                    DEFAULT_ZSTD_LEVEL
                },
            }),
            _ => None,
        }
    }
}

/// `[proxy] compression` (a list of "zlib", "zstd"; empty: none) and `compression_level`.
pub fn client_compression(
    algorithms: Option<&[String]>,
    level: Option<u32>,
) -> Result<ClientCompression, ConfigError> {
    let mut c = ClientCompression {
        zlib_level: level.unwrap_or(DEFAULT_ZLIB_LEVEL),
        ..Default::default()
    };
    if !(1..=9).contains(&c.zlib_level) {
        return Err(invalid(
            "proxy.compression_level must be 1 to 9 (zlib's levels)",
        ));
    }
    if let Some(list) = algorithms {
        c.zlib = false;
        c.zstd = false;
        for a in list {
            match a.to_ascii_lowercase().as_str() {
                "zlib" => c.zlib = true,
                "zstd" => c.zstd = true,
                other => {
                    return Err(invalid(format!(
                        "proxy.compression: unknown algorithm '{other}' (zlib, zstd)"
                    )))
                }
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_prefers_zlib_and_bounds_the_zstd_level() {
        let all = ClientCompression::default();
        assert_eq!(
            all.negotiate(true, Some(7)),
            Some(Algorithm::Zlib { level: 6 })
        );
        assert_eq!(
            all.negotiate(false, Some(7)),
            Some(Algorithm::Zstd { level: 7 })
        );
        assert_eq!(
            all.negotiate(false, Some(0)),
            Some(Algorithm::Zstd { level: 3 })
        );
        assert_eq!(all.negotiate(false, None), None);
        let none = client_compression(Some(&[]), None).unwrap();
        assert_eq!(none.negotiate(true, Some(3)), None);
        let zstd = client_compression(Some(&["ZSTD".into()]), Some(1)).unwrap();
        assert_eq!(zstd.negotiate(true, None), None);
        assert!(client_compression(Some(&["lz4".into()]), None).is_err());
        assert!(client_compression(None, Some(10)).is_err());
    }
}
