#!/usr/bin/python3
"""Client test with PyMySQL (Debian's python3-pymysql).

Run against MariaDB directly and through the proxy: stdout must be identical in
both cases (nothing printed depends on connection ids, timings or ports).

Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
Usage: tests/clients/pymysql_client.py   (or: python3 tests/clients/pymysql_client.py)

PyMySQL emulates prepared statements on the client (parameters are escaped into
the query text), so everything here goes over the text protocol.
"""

import os
import sys

try:
    import pymysql
    from pymysql.constants import CLIENT
except ImportError:
    # A python3 first on PATH (pyenv, venv) may lack the apt package, which is
    # installed for Debian's /usr/bin/python3 only: re-run with that one.
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists(
        "/usr/bin/python3"
    ):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", os.path.abspath(__file__)] + sys.argv[1:])
    raise

import datetime
import decimal
import hashlib
import shutil
import tempfile
import threading
import time
import traceback

BIG_BLOB_LEN = 20 * 1024 * 1024  # 20 MiB: more than one 16 MiB packet
LOAD_ROWS = 220000  # about 20 MB of text


def env_config():
    def get(name, default=None):
        v = os.environ.get(name, "")
        if v == "":
            if default is None:
                raise RuntimeError(f"environment variable {name} is required")
            return default
        return v

    return {
        "host": get("DB_HOST", "127.0.0.1"),
        "port": int(get("DB_PORT", "3306")),
        "user": get("DB_USER"),
        "password": os.environ.get("DB_PASSWORD", ""),
        "database": get("DB_NAME"),
        "prefix": os.environ.get("TEST_TABLE_PREFIX", ""),
    }


def connect(c):
    return pymysql.connect(
        host=c["host"],
        port=c["port"],
        user=c["user"],
        password=c["password"],
        database=c["database"],
        charset="utf8mb4",
        autocommit=True,  # like the other drivers
        local_infile=True,
        client_flag=CLIENT.MULTI_STATEMENTS,
        max_allowed_packet=64 * 1024 * 1024,
    )


def out(label, text):
    print(f"{label}: {text}", flush=True)


def fmt(v):
    """Canonical text for a fetched value, tagged with its Python type."""
    if v is None:
        return "NULL"
    if isinstance(v, (bytes, bytearray)):
        return f"bytes:len={len(v)},sha1={hashlib.sha1(v).hexdigest()}"
    if isinstance(v, float):
        return f"float:{v!r}"
    if isinstance(v, (int, decimal.Decimal, str, datetime.date, datetime.datetime, datetime.timedelta)):
        return f"{type(v).__name__}:{v}"
    return f"{type(v).__name__}:{v!r}"


def fmt_row(names, row):
    return " ".join(f"{n}={fmt(v)}" for n, v in zip(names, row))


def fmt_description(desc):
    # (name, type_code, display_size, internal_size, precision, scale, null_ok)
    return " ".join(f"{d[0]}/type={d[1]}/size={d[3]}/prec={d[4]}/scale={d[5]}/null={d[6]}" for d in desc)


def all_bytes():
    return bytes(range(256))


def big_blob():
    """Deterministic, incompressible 20 MiB: SHA-256 of a 32-bit big-endian counter."""
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(BIG_BLOB_LEN // 32))


def make_load_file(directory):
    """Tab separated id, k, s (k is \\N every 1000th row); same as the PHP/CLI tests."""
    path = os.path.join(directory, "load.tsv")
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        lines = []
        for i in range(1, LOAD_ROWS + 1):
            k = "\\N" if i % 1000 == 0 else str((i * 7919) % 1000003)
            s = ("%08x" % ((i * 2654435761) % 4294967296)) * 10
            lines.append(f"{i}\t{k}\t{s}\n")
        fh.write("".join(lines))
    return path


TYPE_ROWS = [
    # id, i, bu, d, f, s, b, dt, ts, n
    (1, -2147483648, 18446744073709551615, decimal.Decimal("12345678901234.567891"), 3.5,
     "Grüße, 東京 🚂", all_bytes(), datetime.date(2024, 2, 29),
     datetime.datetime(2024, 2, 29, 23, 59, 58, 123456), None),
    (2, 2147483647, 0, decimal.Decimal("-0.000001"), -1.25e-10,
     "", b"", datetime.date(1000, 1, 1), datetime.datetime(9999, 12, 31, 23, 59, 59, 999999), 42),
    (3, None, None, None, None, None, None, None, None, None),
]


def scalar(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


def main():
    c = env_config()
    p = c["prefix"]
    conn = connect(c)
    cur = conn.cursor()
    out("connect", f"ok database={scalar(conn, 'SELECT DATABASE()')} charset={scalar(conn, 'SELECT @@character_set_client')}")

    # --- schema -----------------------------------------------------------
    cur.execute(f"DROP TABLE IF EXISTS `{p}types`, `{p}load`, `{p}big`")
    cur.execute(
        f"CREATE TABLE `{p}types` (id INT PRIMARY KEY, i INT, bu BIGINT UNSIGNED,"
        " d DECIMAL(20,6), f DOUBLE, s VARCHAR(100) CHARACTER SET utf8mb4, b BLOB,"
        " dt DATE, ts DATETIME(6), n INT NULL) ENGINE=InnoDB"
    )
    cur.execute(f"CREATE TABLE `{p}load` (id INT PRIMARY KEY, k INT NULL, s VARCHAR(100)) ENGINE=InnoDB")
    cur.execute(f"CREATE TABLE `{p}big` (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB")
    out("create", "ok")

    # --- parameterised insert of every type (escaped client-side) ---------
    affected = 0
    for row in TYPE_ROWS:
        affected += cur.execute(
            f"INSERT INTO `{p}types` (id, i, bu, d, f, s, b, dt, ts, n)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            row,
        )
    out("insert", f"parameterised rows={affected}")

    # --- read back ----------------------------------------------------------
    cur.execute(f"SELECT id, i, bu, d, f, s, b, dt, ts, n FROM `{p}types` WHERE id >= %s ORDER BY id", (1,))
    out("select_fields", fmt_description(cur.description))
    names = [d[0] for d in cur.description]
    for row in cur.fetchall():
        out("select", fmt_row(names, row))
    cur.execute(f"SELECT LENGTH(b), SHA1(b), HEX(s) FROM `{p}types` WHERE id = 1")
    out("select_blob_sql", " ".join(fmt(v) for v in cur.fetchone()))

    # --- transaction with rollback -------------------------------------------
    count = f"SELECT COUNT(*) FROM `{p}types`"
    before = scalar(conn, count)
    conn.begin()
    cur.execute(f"INSERT INTO `{p}types` (id, s) VALUES (10, 'rolled back')")
    during = scalar(conn, count)
    conn.rollback()
    after = scalar(conn, count)
    out("transaction", f"before={before} during={during} after_rollback={after}")

    # --- multi-statement query (CLIENT.MULTI_STATEMENTS) -----------------------
    cur.execute(
        f"INSERT INTO `{p}types` (id, i) VALUES (20, 7);"
        f" SELECT COUNT(*) AS c FROM `{p}types`;"
        f" SELECT id, i, s FROM `{p}types` WHERE id IN (1, 20) ORDER BY id"
    )
    n = 0
    while True:
        n += 1
        if cur.description is None:
            out("multi", f"result{n} affected={cur.rowcount}")
        else:
            names = [d[0] for d in cur.description]
            rows = " ".join("[" + fmt_row(names, r) + "]" for r in cur.fetchall())
            out("multi", f"result{n} rows={rows}")
        if not cur.nextset():
            break
    out("multi", f"results={n} after={scalar(conn, 'SELECT 1')}")

    # --- LOAD DATA LOCAL INFILE of a generated ~20 MB file --------------------
    tmp = tempfile.mkdtemp(prefix="weiche-client-")
    try:
        path = make_load_file(tmp)
        affected = cur.execute(
            f"LOAD DATA LOCAL INFILE %s INTO TABLE `{p}load`"
            " FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' (id, k, s)",
            (path,),
        )
        out("load_data", f"bytes={os.path.getsize(path)} affected={affected}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cur.execute(
        f"SELECT COUNT(*) AS n, COUNT(k) AS nk, SUM(k) AS sk, SUM(CRC32(s)) AS cs,"
        f" BIT_XOR(CRC32(CONCAT_WS(',', id, k, s))) AS x FROM `{p}load`"
    )
    out("load_data_check", fmt_row([d[0] for d in cur.description], cur.fetchone()))

    # --- 20 MiB blob round trip (more than one 16 MiB packet each way) --------
    big = big_blob()
    out("big_blob", f"generated {fmt(big)}")
    cur.execute(f"INSERT INTO `{p}big` (id, b) VALUES (%s, %s)", (1, big))
    cur.execute(f"SELECT id, b FROM `{p}big` WHERE id = %s", (1,))
    row = cur.fetchone()
    out("big_blob_select", fmt_row(["id", "b"], row) + " same=" + ("yes" if row[1] == big else "no"))
    cur.execute(f"SELECT id, LENGTH(b) AS len, SHA1(b) AS sha1 FROM `{p}big` ORDER BY id")
    out("big_blob_sql", fmt_row([d[0] for d in cur.description], cur.fetchone()))
    del big, row

    # --- KILL QUERY from a second connection ---------------------------------
    # thread_id() is the id from the handshake (what a proxy hands out), not
    # CONNECTION_ID(). KILL is repeated until the sleep ends, in case the first
    # one arrives before the query runs.
    victim = connect(c)
    killer = connect(c)
    tid = victim.thread_id()
    result = {}

    def sleeper():
        try:
            with victim.cursor() as vc:
                vc.execute("SELECT SLEEP(30)")
                result["value"] = vc.fetchone()[0]
        except pymysql.err.OperationalError as e:
            result["error"] = e.args[0]
        except Exception as e:  # reported below
            result["exception"] = e

    t0 = time.monotonic()
    th = threading.Thread(target=sleeper, daemon=True)
    th.start()
    time.sleep(0.3)
    with killer.cursor() as kc:
        while th.is_alive():
            kc.execute(f"KILL QUERY {tid}")
            th.join(1.0)
            if time.monotonic() - t0 > 40:
                raise RuntimeError("SELECT SLEEP(30) did not finish")
    elapsed = time.monotonic() - t0
    if "exception" in result:
        raise result["exception"]
    interrupted = result.get("value") == 1 or result.get("error") == 1317
    how = "interrupted" if interrupted else f"not interrupted ({result})"
    out("kill", f"sleep {how} under_10s={'yes' if elapsed < 10 else 'no'} victim_alive={scalar(victim, 'SELECT 1')}")
    if not interrupted or elapsed >= 10:
        raise RuntimeError(f"KILL QUERY failed: {how} after {elapsed:.1f} s")
    victim.close()
    killer.close()

    # --- cleanup ----------------------------------------------------------------
    cur.execute(f"DROP TABLE `{p}types`, `{p}load`, `{p}big`")
    out("drop", "ok")
    cur.close()
    conn.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        sys.stdout.flush()
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
