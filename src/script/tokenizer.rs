//! `mysql.tokenizer`: Weiche's own lexer with mysql-proxy's token names (`TK_SQL_SELECT`,
//! `TK_LITERAL`, `TK_FUNCTION`, `TK_STRING`, ...), for scripts that take queries apart.

use crate::sql::lexer::{tokenize as lex, Kind, Token};
use mlua::{Lua, Table};

/// MySQL keywords: a word in this list is `TK_SQL_<WORD>`; other words are `TK_LITERAL`
/// (mysql-proxy treats BEGIN and START as literals too).
const KEYWORDS: &[&str] = &[
    "ACCESSIBLE",
    "ADD",
    "ALL",
    "ALTER",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "ASENSITIVE",
    "BEFORE",
    "BETWEEN",
    "BIGINT",
    "BINARY",
    "BLOB",
    "BOTH",
    "BY",
    "CALL",
    "CASCADE",
    "CASE",
    "CHANGE",
    "CHAR",
    "CHARACTER",
    "CHECK",
    "COLLATE",
    "COLUMN",
    "CONDITION",
    "CONSTRAINT",
    "CONTINUE",
    "CONVERT",
    "CREATE",
    "CROSS",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "CURSOR",
    "DATABASE",
    "DATABASES",
    "DAY_HOUR",
    "DAY_MICROSECOND",
    "DAY_MINUTE",
    "DAY_SECOND",
    "DEC",
    "DECIMAL",
    "DECLARE",
    "DEFAULT",
    "DELAYED",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DETERMINISTIC",
    "DISTINCT",
    "DISTINCTROW",
    "DIV",
    "DOUBLE",
    "DROP",
    "DUAL",
    "EACH",
    "ELSE",
    "ELSEIF",
    "ENCLOSED",
    "ESCAPED",
    "EXISTS",
    "EXIT",
    "EXPLAIN",
    "FALSE",
    "FETCH",
    "FLOAT",
    "FLOAT4",
    "FLOAT8",
    "FOR",
    "FORCE",
    "FOREIGN",
    "FROM",
    "FULLTEXT",
    "GRANT",
    "GROUP",
    "HAVING",
    "HIGH_PRIORITY",
    "HOUR_MICROSECOND",
    "HOUR_MINUTE",
    "HOUR_SECOND",
    "IF",
    "IGNORE",
    "IN",
    "INDEX",
    "INFILE",
    "INNER",
    "INOUT",
    "INSENSITIVE",
    "INSERT",
    "INT",
    "INT1",
    "INT2",
    "INT3",
    "INT4",
    "INT8",
    "INTEGER",
    "INTERVAL",
    "INTO",
    "IS",
    "ITERATE",
    "JOIN",
    "KEY",
    "KEYS",
    "KILL",
    "LEADING",
    "LEAVE",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LINEAR",
    "LINES",
    "LOAD",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "LOCK",
    "LONG",
    "LONGBLOB",
    "LONGTEXT",
    "LOOP",
    "LOW_PRIORITY",
    "MATCH",
    "MEDIUMBLOB",
    "MEDIUMINT",
    "MEDIUMTEXT",
    "MIDDLEINT",
    "MINUTE_MICROSECOND",
    "MINUTE_SECOND",
    "MOD",
    "MODIFIES",
    "NATURAL",
    "NOT",
    "NO_WRITE_TO_BINLOG",
    "NULL",
    "NUMERIC",
    "ON",
    "OPTIMIZE",
    "OPTION",
    "OPTIONALLY",
    "OR",
    "ORDER",
    "OUT",
    "OUTER",
    "OUTFILE",
    "PRECISION",
    "PRIMARY",
    "PROCEDURE",
    "PURGE",
    "RANGE",
    "READ",
    "READS",
    "READ_WRITE",
    "REAL",
    "REFERENCES",
    "REGEXP",
    "RELEASE",
    "RENAME",
    "REPEAT",
    "REPLACE",
    "REQUIRE",
    "RESTRICT",
    "RETURN",
    "REVOKE",
    "RIGHT",
    "RLIKE",
    "ROLLBACK",
    "SCHEMA",
    "SCHEMAS",
    "SECOND_MICROSECOND",
    "SELECT",
    "SENSITIVE",
    "SEPARATOR",
    "SET",
    "SHOW",
    "SMALLINT",
    "SPATIAL",
    "SPECIFIC",
    "SQL",
    "SQLEXCEPTION",
    "SQLSTATE",
    "SQLWARNING",
    "SQL_BIG_RESULT",
    "SQL_CALC_FOUND_ROWS",
    "SQL_SMALL_RESULT",
    "SSL",
    "STARTING",
    "STRAIGHT_JOIN",
    "TABLE",
    "TERMINATED",
    "THEN",
    "TINYBLOB",
    "TINYINT",
    "TINYTEXT",
    "TO",
    "TRAILING",
    "TRIGGER",
    "TRUE",
    "TRUNCATE",
    "UNDO",
    "UNION",
    "UNIQUE",
    "UNLOCK",
    "UNSIGNED",
    "UPDATE",
    "USAGE",
    "USE",
    "USING",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "VALUES",
    "VARBINARY",
    "VARCHAR",
    "VARCHARACTER",
    "VARYING",
    "WHEN",
    "WHERE",
    "WHILE",
    "WITH",
    "WRITE",
    "X509",
    "XOR",
    "YEAR_MONTH",
    "ZEROFILL",
    "COMMIT",
    "AUTOCOMMIT",
    "SESSION",
    "GLOBAL",
    "NAMES",
    "TRANSACTION",
    "ISOLATION",
    "LEVEL",
    "HANDLER",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DO",
    "SAVEPOINT",
    "CHARSET",
];

/// Token names in id order (token_id = position).
const NAMES: &[&str] = &[
    "TK_UNKNOWN",
    "TK_LE",
    "TK_GE",
    "TK_LT",
    "TK_GT",
    "TK_EQ",
    "TK_NE",
    "TK_STRING",
    "TK_COMMENT",
    "TK_LITERAL",
    "TK_FUNCTION",
    "TK_INTEGER",
    "TK_FLOAT",
    "TK_DOT",
    "TK_COMMA",
    "TK_ASSIGN",
    "TK_OBRACE",
    "TK_CBRACE",
    "TK_SEMICOLON",
    "TK_STAR",
    "TK_PLUS",
    "TK_MINUS",
    "TK_DIV",
    "TK_BITWISE_AND",
    "TK_BITWISE_OR",
    "TK_BITWISE_XOR",
    "TK_LOGICAL_AND",
    "TK_LOGICAL_OR",
    "TK_COMMENT_MYSQL",
];

/// One token as scripts see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyToken {
    pub name: String,
    pub text: Vec<u8>,
    pub id: usize,
}

fn id_of(name: &str) -> usize {
    NAMES.iter().position(|n| *n == name).unwrap_or_else(|| {
        KEYWORDS
            .iter()
            .position(|k| name.strip_prefix("TK_SQL_") == Some(k))
            .map_or(0, |k| NAMES.len() + k)
    })
}

fn op_name(text: &[u8]) -> &'static str {
    match text {
        b"<=" => "TK_LE",
        b">=" => "TK_GE",
        b"<" => "TK_LT",
        b">" => "TK_GT",
        b"=" => "TK_EQ",
        b"!=" | b"<>" => "TK_NE",
        b"*" => "TK_STAR",
        b"+" => "TK_PLUS",
        b"-" => "TK_MINUS",
        b"/" => "TK_DIV",
        b"&" => "TK_BITWISE_AND",
        b"|" => "TK_BITWISE_OR",
        b"^" => "TK_BITWISE_XOR",
        b"&&" => "TK_LOGICAL_AND",
        b"||" => "TK_LOGICAL_OR",
        _ => "TK_UNKNOWN",
    }
}

fn unquote(t: &[u8]) -> Vec<u8> {
    if t.len() >= 2 {
        t[1..t.len() - 1].to_vec()
    } else {
        t.to_vec()
    }
}

/// Tokenize as mysql-proxy's tokenizer did.
pub fn tokenize(sql: &[u8]) -> Vec<ProxyToken> {
    let tokens: Vec<Token> = lex(sql);
    let mut out = Vec::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let text = t.text(sql);
        let (name, text): (String, Vec<u8>) = match t.kind {
            Kind::Word => {
                let next_is_paren = tokens
                    .get(i + 1)
                    .is_some_and(|n| n.kind == Kind::LParen && n.start == t.end);
                let upper = String::from_utf8_lossy(text).to_ascii_uppercase();
                if next_is_paren {
                    ("TK_FUNCTION".into(), text.to_vec())
                } else if KEYWORDS.contains(&upper.as_str()) {
                    (format!("TK_SQL_{upper}"), text.to_vec())
                } else {
                    ("TK_LITERAL".into(), text.to_vec())
                }
            }
            Kind::QuotedIdent => ("TK_LITERAL".into(), unquote(text)),
            Kind::Str => ("TK_STRING".into(), unquote(text)),
            Kind::Number if text.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) => {
                ("TK_FLOAT".into(), text.to_vec())
            }
            Kind::Number | Kind::HexOrBit => ("TK_INTEGER".into(), text.to_vec()),
            Kind::UserVar | Kind::SysVar => ("TK_LITERAL".into(), text.to_vec()),
            Kind::Comment => ("TK_COMMENT".into(), text.to_vec()),
            Kind::Semicolon => ("TK_SEMICOLON".into(), text.to_vec()),
            Kind::LParen => ("TK_OBRACE".into(), text.to_vec()),
            Kind::RParen => ("TK_CBRACE".into(), text.to_vec()),
            Kind::Comma => ("TK_COMMA".into(), text.to_vec()),
            Kind::Dot => ("TK_DOT".into(), text.to_vec()),
            Kind::Assign => ("TK_ASSIGN".into(), text.to_vec()),
            Kind::Op => (op_name(text).into(), text.to_vec()),
            Kind::Unterminated => ("TK_UNKNOWN".into(), text.to_vec()),
        };
        let id = id_of(&name);
        out.push(ProxyToken { name, text, id });
    }
    out
}

/// The module table: `tokenize(sql)`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "tokenize",
        lua.create_function(|lua, sql: mlua::String| {
            let out = lua.create_table()?;
            for (i, t) in tokenize(&sql.as_bytes()).into_iter().enumerate() {
                let tok = lua.create_table()?;
                tok.set("token_name", t.name)?;
                tok.set("text", lua.create_string(&t.text)?)?;
                tok.set("token_id", t.id)?;
                out.set(i + 1, tok)?;
            }
            Ok(out)
        })?,
    )?;
    let names = lua.create_table()?;
    for n in NAMES {
        names.set(*n, id_of(n))?;
    }
    for k in KEYWORDS {
        let n = format!("TK_SQL_{k}");
        names.set(n.clone(), id_of(&n))?;
    }
    m.set("tokens", names)?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        tokenize(sql.as_bytes())
            .into_iter()
            .map(|t| t.name)
            .collect()
    }

    #[test]
    fn mysql_proxy_token_names() {
        assert_eq!(
            names("SELECT SQL_CALC_FOUND_ROWS a, LAST_INSERT_ID() FROM `t` WHERE x >= 1.5 AND s = 'q' /* c */"),
            [
                "TK_SQL_SELECT", "TK_SQL_SQL_CALC_FOUND_ROWS", "TK_LITERAL", "TK_COMMA",
                "TK_FUNCTION", "TK_OBRACE", "TK_CBRACE", "TK_SQL_FROM", "TK_LITERAL",
                "TK_SQL_WHERE", "TK_LITERAL", "TK_GE", "TK_FLOAT", "TK_SQL_AND", "TK_LITERAL",
                "TK_EQ", "TK_STRING", "TK_COMMENT"
            ]
        );
        assert_eq!(names("BEGIN; START TRANSACTION")[0], "TK_LITERAL");
        let t = tokenize(b"SELECT 'it' FROM `db`");
        assert_eq!(t[1].text, b"it");
        assert_eq!(t[3].text, b"db");
        assert_ne!(t[0].id, t[1].id);
    }
}
