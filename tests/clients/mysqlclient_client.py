"""Client test with Python mysqlclient (MySQLdb, over libmariadb), on the compressed protocol
when DB_COMPRESS=1. Run against MariaDB directly and through the proxy: stdout must be
identical in both cases.

Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX DB_COMPRESS
Covers: types, multi-statements, LOAD DATA LOCAL INFILE of about 6 MB, a 20 MB blob (more
than one 16 MiB packet each way), a 100,000-row result and KILL QUERY-free error handling.
"""

import hashlib
import os
import sys
import tempfile

import MySQLdb
from MySQLdb.constants import CLIENT

P = os.environ.get("TEST_TABLE_PREFIX", "")
COMPRESS = os.environ.get("DB_COMPRESS") == "1"


def connect():
    return MySQLdb.connect(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        user=os.environ["DB_USER"],
        passwd=os.environ.get("DB_PASSWORD", ""),
        db=os.environ["DB_NAME"],
        charset="utf8mb4",
        compress=COMPRESS,
        local_infile=True,
        client_flag=CLIENT.MULTI_STATEMENTS | CLIENT.MULTI_RESULTS,
        autocommit=True,
    )


def out(what, value):
    print(f"{what}: {value}")


def main():
    c = connect()
    cur = c.cursor()
    cur.execute("SHOW STATUS LIKE 'Compression'")
    out("compression", cur.fetchone()[1])
    cur.execute(f"DROP TABLE IF EXISTS `{P}t`, `{P}load`, `{P}big`")
    cur.execute(f"CREATE TABLE `{P}t` (id INT PRIMARY KEY, i BIGINT, d DECIMAL(20,6), "
                "s VARCHAR(100) CHARACTER SET utf8mb4, b BLOB, dt DATETIME(6))")
    rows = [(1, -2**63, "12345678901234.567891", "Grüße, 東京 🚂", bytes(range(256)),
             "2024-02-29 23:59:58.123456"),
            (2, 2**63 - 1, "-0.000001", "", b"", "1000-01-01 00:00:00"),
            (3, None, None, None, None, None)]
    cur.executemany(f"INSERT INTO `{P}t` VALUES (%s, %s, %s, %s, %s, %s)", rows)
    out("insert", cur.rowcount)
    cur.execute(f"SELECT * FROM `{P}t` ORDER BY id")
    for r in cur.fetchall():
        out("select", " | ".join(hashlib.sha1(v).hexdigest() if isinstance(v, bytes)
                                 else repr(v) for v in r))
    out("select_meta", " ".join(f"{d[0]}/{d[1]}" for d in cur.description))

    # Multi-statements: every result in order.
    cur.execute(f"UPDATE `{P}t` SET i = 7 WHERE id = 3; SELECT COUNT(*) FROM `{P}t`; "
                f"SELECT id, s FROM `{P}t` WHERE id < 3 ORDER BY id")
    n = 0
    while True:
        n += 1
        out(f"multi_{n}", cur.fetchall() if cur.description else f"affected={cur.rowcount}")
        if not cur.nextset():
            break

    # An error, and the session goes on.
    try:
        cur.execute("SELECT * FROM no_such_table_here")
    except MySQLdb.Error as e:
        out("error", e.args[0])
    cur.execute("SELECT 1")
    out("after_error", cur.fetchone()[0])

    # LOAD DATA LOCAL INFILE.
    cur.execute(f"CREATE TABLE `{P}load` (k INT PRIMARY KEY, s VARCHAR(40))")
    with tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False) as f:
        for k in range(200_000):
            f.write(f"{k}\tline {k} {'x' * (k % 17)}\n")
        path = f.name
    try:
        cur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE `{P}load`")
        out("load_data", cur.rowcount)
    finally:
        os.unlink(path)
    cur.execute(f"SELECT COUNT(*), SUM(k), SUM(CRC32(s)) FROM `{P}load`")
    out("load_check", cur.fetchone())

    # A 100,000-row result, streamed through.
    cur.execute(f"SELECT k, s FROM `{P}load` WHERE k < 100000 ORDER BY k")
    h = hashlib.sha1()
    count = 0
    for k, s in cur.fetchall():
        h.update(f"{k}:{s};".encode())
        count += 1
    out("rows", f"{count} sha1={h.hexdigest()}")

    # A 20 MB blob each way (more than one 16 MiB packet).
    blob = hashlib.sha256(b"weiche").digest() * (20 * 1024 * 1024 // 32)
    cur.execute("SET @@session.net_read_timeout = 120")
    cur.execute(f"CREATE TABLE `{P}big` (id INT PRIMARY KEY, b LONGBLOB)")
    cur.execute(f"INSERT INTO `{P}big` VALUES (1, %s)", (blob,))
    cur.execute(f"SELECT b FROM `{P}big` WHERE id = 1")
    got = cur.fetchone()[0]
    out("big_blob", f"len={len(got)} same={got == blob}")

    cur.execute(f"DROP TABLE `{P}t`, `{P}load`, `{P}big`")
    out("drop", "ok")
    c.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the harness shows stderr
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
