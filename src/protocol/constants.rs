//! Numbers of the MySQL wire protocol: capability flags, status flags, command bytes.

/// Capability flags (the lower 32 bits MySQL and MariaDB share).
pub mod cap {
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const RESERVED: u32 = 1 << 14;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    /// MySQL 8.0.18+: the compressed protocol with zstd; the login packet ends with the level.
    pub const ZSTD_COMPRESSION_ALGORITHM: u32 = 1 << 26;

    /// What Weiche offers clients, besides SSL when a certificate is configured and COMPRESS
    /// and ZSTD_COMPRESSION_ALGORITHM as `[proxy] compression` says (the compressed protocol
    /// is Weiche's own with each side, never the client's with the server).
    pub const WEICHE_SERVER: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF;

    /// Flags that change the shape or meaning of responses: a server connection must be opened
    /// with exactly the client's choice of these, because its responses are relayed unchanged.
    pub const RESPONSE_SHAPING: u32 = FOUND_ROWS
        | LONG_FLAG
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | INTERACTIVE
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | SESSION_TRACK
        | DEPRECATE_EOF;
}

/// MariaDB's extended capabilities (the upper 32 bits of its 64-bit capability set), exchanged
/// in bytes the MySQL protocol reserves, and only when neither side sets `cap::LONG_PASSWORD`
/// (which MariaDB calls CLIENT_MYSQL: "I am MySQL, no extended capabilities").
pub mod mariadb_cap {
    pub const PROGRESS: u32 = 1;
    pub const COM_MULTI: u32 = 1 << 1;
    /// COM_STMT_BULK_EXECUTE: many rows of parameters in one command, with indicators.
    pub const STMT_BULK_OPERATIONS: u32 = 1 << 2;
    /// Column definitions carry the extended type (json, uuid, inet6, geometry kinds).
    pub const EXTENDED_METADATA: u32 = 1 << 3;
    pub const CACHE_METADATA: u32 = 1 << 4;
    pub const BULK_UNIT_RESULTS: u32 = 1 << 5;

    /// What Weiche relays. Not PROGRESS (progress packets are not relayed), COM_MULTI (gone
    /// from servers), CACHE_METADATA (a statement's metadata would have to be remembered per
    /// server connection, and a client statement moves between them), BULK_UNIT_RESULTS.
    pub const WEICHE: u32 = STMT_BULK_OPERATIONS | EXTENDED_METADATA;
}

/// Server status flags, as found in OK and EOF packets.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const NO_GOOD_INDEX_USED: u16 = 0x0010;
    pub const NO_INDEX_USED: u16 = 0x0020;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

/// Command bytes (`COM_*`), the first byte of every client command.
pub mod com {
    pub const SLEEP: u8 = 0;
    pub const QUIT: u8 = 1;
    pub const INIT_DB: u8 = 2;
    pub const QUERY: u8 = 3;
    pub const FIELD_LIST: u8 = 4;
    pub const CREATE_DB: u8 = 5;
    pub const DROP_DB: u8 = 6;
    pub const REFRESH: u8 = 7;
    pub const SHUTDOWN: u8 = 8;
    pub const STATISTICS: u8 = 9;
    pub const PROCESS_INFO: u8 = 10;
    pub const CONNECT: u8 = 11;
    pub const PROCESS_KILL: u8 = 12;
    pub const DEBUG: u8 = 13;
    pub const PING: u8 = 14;
    pub const TIME: u8 = 15;
    pub const DELAYED_INSERT: u8 = 16;
    pub const CHANGE_USER: u8 = 17;
    pub const BINLOG_DUMP: u8 = 18;
    pub const TABLE_DUMP: u8 = 19;
    pub const CONNECT_OUT: u8 = 20;
    pub const REGISTER_SLAVE: u8 = 21;
    pub const STMT_PREPARE: u8 = 22;
    pub const STMT_EXECUTE: u8 = 23;
    pub const STMT_SEND_LONG_DATA: u8 = 24;
    pub const STMT_CLOSE: u8 = 25;
    pub const STMT_RESET: u8 = 26;
    pub const SET_OPTION: u8 = 27;
    pub const STMT_FETCH: u8 = 28;
    pub const DAEMON: u8 = 29;
    pub const BINLOG_DUMP_GTID: u8 = 30;
    pub const RESET_CONNECTION: u8 = 31;
    /// MariaDB's COM_STMT_BULK_EXECUTE (with `mariadb_cap::STMT_BULK_OPERATIONS`).
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// Error codes Weiche sends itself, with MariaDB's numbers so that clients react as usual.
pub mod errcode {
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    pub const ER_HOST_IS_BLOCKED: u16 = 1129;
    pub const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
    pub const ER_MAX_PREPARED_STMT_COUNT_REACHED: u16 = 1461;
    pub const ER_WRONG_ARGUMENTS: u16 = 1210;
    pub const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
    pub const ER_ACCESS_DENIED: u16 = 1045;
    pub const ER_UNKNOWN_COM: u16 = 1047;
    pub const ER_NO_SUCH_THREAD: u16 = 1094;
    pub const ER_KILL_DENIED: u16 = 1095;
    pub const ER_QUERY_INTERRUPTED: u16 = 1317;
    pub const ER_CONNECTION_KILLED: u16 = 1927;
    pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
    pub const ER_UNKNOWN_ERROR: u16 = 1105;
    pub const ER_NOT_SUPPORTED_YET: u16 = 1235;
    pub const ER_HANDSHAKE_ERROR: u16 = 1043;
    pub const ER_UNKNOWN_STMT_HANDLER: u16 = 1243;
    pub const ER_STMT_HAS_NO_OPEN_CURSOR: u16 = 1421;
    pub const ER_MALFORMED_PACKET: u16 = 1835;
    /// A backend could not be reached (ER_CONNECT_TO_FOREIGN_DATA_SOURCE). Never the client
    /// library's own CR_CONN_HOST_ERROR (2003) or CR_SERVER_LOST (2013): MariaDB's client
    /// library takes an ERR packet with a code from 2000-2999 for a malformed packet.
    pub const ER_BACKEND_UNREACHABLE: u16 = 1429;
    /// The backend's connection broke in the middle of a command (ER_NET_READ_ERROR).
    pub const ER_BACKEND_LOST: u16 = 1158;
}

/// Largest payload of one physical packet; a payload this long continues in the next packet.
pub const MAX_CHUNK: usize = 0xFF_FFFF;
