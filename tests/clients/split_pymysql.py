#!/usr/bin/python3
"""Application patterns a read/write-splitting proxy must not break, with PyMySQL
(Debian's python3-pymysql): session state (SET NAMES, time_zone, sql_mode, USE /
COM_INIT_DB, user variables, temporary tables, named locks), LAST_INSERT_ID /
FOUND_ROWS / ROW_COUNT, transactions, parameterised statements, reads right after
writes and SHOW WARNINGS. Run against MariaDB directly and through the proxy:
stdout must be identical in both cases.

Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
Usage: tests/clients/split_pymysql.py   (or: python3 tests/clients/split_pymysql.py)

PyMySQL emulates prepared statements on the client, so everything here goes over
the text protocol. The account also needs the database `test` (created if missing).
"""

import hashlib
import os
import sys
import traceback

try:
    import pymysql
except ImportError:
    # A python3 first on PATH (pyenv, venv) may lack the apt package, which is
    # installed for Debian's /usr/bin/python3 only: re-run with that one.
    py = "/usr/bin/python3"
    if os.path.exists(py) and os.path.realpath(sys.executable) != os.path.realpath(py):
        os.execv(py, [py, os.path.abspath(__file__)] + sys.argv[1:])
    raise

OTHER_DB = "test"


def env_config():
    env = os.environ.get
    for name in ("DB_USER", "DB_NAME"):
        if not env(name):
            raise RuntimeError(f"environment variable {name} is required")
    return {"host": env("DB_HOST") or "127.0.0.1", "port": int(env("DB_PORT") or "3306"), "user": env("DB_USER"),
            "password": env("DB_PASSWORD", ""), "database": env("DB_NAME"), "prefix": env("TEST_TABLE_PREFIX", "")}


def connect(c):
    return pymysql.connect(host=c["host"], port=c["port"], user=c["user"], password=c["password"],
                           database=c["database"], charset="utf8mb4", autocommit=True)


def out(label, text):
    print(f"{label}: {text}", flush=True)


def fmt(v):
    """Text for a fetched value, tagged with its Python type (no bytes or floats here)."""
    return "NULL" if v is None else f"{type(v).__name__}:{v}"


def vals(cur, sql, params=None):
    """The first row of a query, values formatted and separated by spaces."""
    cur.execute(sql, params)
    return " ".join(fmt(v) for v in cur.fetchall()[0])


def show(cur, label, select, *first):
    """Run the statements in first, then print the first row of select."""
    for sql in first:
        cur.execute(sql)
    out(label, vals(cur, select))


def error_code(cur, sql):
    """Error code of a statement that must fail."""
    try:
        cur.execute(sql)
    except pymysql.MySQLError as e:
        return f"error={e.args[0]}"
    return "no error"


def warnings(conn):
    """'Level Code' of each SHOW WARNINGS row."""
    return "show_warnings=[" + ", ".join(f"{w[0]} {w[1]}" for w in conn.show_warnings()) + "]"


def ids(cur, first):
    """Insert ids relative to the first one: driver, LAST_INSERT_ID(), @@IDENTITY."""
    driver = cur.lastrowid
    cur.execute("SELECT LAST_INSERT_ID(), @@IDENTITY")
    lii, identity = cur.fetchone()
    equal = "yes" if lii == driver and identity == driver else "no"
    return f"driver=+{driver - first} last_insert_id=+{lii - first} identity=+{identity - first} equal={equal}"


def main():
    c = env_config()
    p = c["prefix"]
    o = f"`{OTHER_DB}`"
    conn = connect(c)
    cur = conn.cursor()
    tables = f"`{p}chars`, `{p}ai`, `{p}seq`, `{p}items`, `{p}tx`, `{p}log`, `{p}warn`"
    show(cur, "setup", "SELECT DATABASE()",
         f"DROP TABLE IF EXISTS {tables}",
         f"CREATE DATABASE IF NOT EXISTS {o}",
         f"DROP TABLE IF EXISTS {o}.`{p}other`",
         f"CREATE TABLE `{p}chars` (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET utf8mb4)",
         f"CREATE TABLE `{p}ai` (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))",
         f"CREATE TABLE `{p}items` (id INT PRIMARY KEY, grp INT, name VARCHAR(20), qty INT NOT NULL DEFAULT 0)",
         f"CREATE TABLE `{p}seq` (n INT NOT NULL)", f"CREATE TABLE `{p}tx` (id INT PRIMARY KEY)",
         f"CREATE TABLE `{p}log` (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, note VARCHAR(30))",
         f"CREATE TABLE `{p}warn` (id INT PRIMARY KEY, v TINYINT)")

    # --- 1. character set -----------------------------------------------------
    names = "SELECT @@character_set_client, @@character_set_results, @@collation_connection"
    show(cur, "names_latin1", names, "SET NAMES latin1")
    show(cur, "names_utf8mb4", names, "SET NAMES utf8mb4")
    emoji = "Grüße 🚂😀"
    cur.execute(f"INSERT INTO `{p}chars` (id, s) VALUES (%s, %s)", (1, emoji))
    cur.execute(f"SELECT s, HEX(s), CHAR_LENGTH(s), LENGTH(s) FROM `{p}chars` WHERE id = 1")
    row = cur.fetchone()
    out("emoji", " ".join(fmt(v) for v in row) + " same=" + ("yes" if row[0] == emoji else "no"))

    # --- 2. time zone and sql_mode ----------------------------------------------
    show(cur, "time_zone", "SELECT @@time_zone, FROM_UNIXTIME(0), CONVERT_TZ('2024-01-01 00:00:00',"
         " '+00:00', @@time_zone), UNIX_TIMESTAMP('1970-01-01 06:30:00')", "SET time_zone = '+05:30'")
    show(cur, "time_zone_default", "SELECT @@time_zone = @@global.time_zone", "SET time_zone = DEFAULT")
    show(cur, "ansi_quotes", 'SELECT @@sql_mode, "a column" + 1 AS "x" FROM (SELECT 41 AS "a column") AS "t"',
         "SET @saved_mode = @@sql_mode", "SET sql_mode = 'ANSI_QUOTES'")
    show(cur, "ansi_quotes_table", f'SELECT "s" FROM "{p}chars" WHERE "id" = 1')
    show(cur, "sql_mode_restored", "SELECT @@sql_mode = @saved_mode, \"dq\" = 'dq'", "SET sql_mode = @saved_mode")

    # --- 3. other schema ----------------------------------------------------------
    show(cur, "use_other", "SELECT DATABASE()", f"USE {o}")
    show(cur, "other_select", f"SELECT id, s FROM `{p}other`",
         f"CREATE TABLE `{p}other` (id INT PRIMARY KEY, s VARCHAR(10))",
         f"INSERT INTO `{p}other` VALUES (1, 'other')")
    show(cur, "use_back", f"SELECT DATABASE(), (SELECT COUNT(*) FROM `{p}chars`),"
         f" (SELECT COUNT(*) FROM {o}.`{p}other`)", f"USE `{c['database']}`")
    conn.select_db(OTHER_DB)  # COM_INIT_DB instead of USE
    show(cur, "init_db_other", f"SELECT DATABASE(), (SELECT COUNT(*) FROM `{p}other`)")
    conn.select_db(c["database"])
    show(cur, "init_db_back", f"SELECT DATABASE(), (SELECT COUNT(*) FROM `{p}chars`)")
    cur.execute(f"DROP TABLE {o}.`{p}other`")

    # --- 4. user variables ------------------------------------------------------------
    show(cur, "uservar_plus_1", "SELECT @a + 1", "SET @a = 41")
    show(cur, "uservar_assign", "SELECT @a := @a + 10")
    show(cur, "uservar_a", "SELECT @a")
    show(cur, "uservar_concat", "SELECT CONCAT(@s, '!')", "SET @s = 'text'")
    show(cur, "uservar_into", "SELECT @v, @n", f"SELECT HEX(s), CHAR_LENGTH(s) INTO @v, @n FROM `{p}chars` WHERE id = 1")

    # --- 5. temporary table -------------------------------------------------------
    cur.execute(f"CREATE TEMPORARY TABLE `{p}tmp` (id INT PRIMARY KEY)")
    cur.execute(f"INSERT INTO `{p}tmp` VALUES (1), (2), (3)")
    for i in range(1, 4):
        show(cur, f"temp_count{i}", f"SELECT COUNT(*) FROM `{p}tmp`")
    out("temp_param", vals(cur, f"SELECT COUNT(*) FROM `{p}tmp` WHERE id >= %s", (2,)))
    cur.execute(f"DROP TEMPORARY TABLE `{p}tmp`")
    out("temp_after_drop", error_code(cur, f"SELECT COUNT(*) FROM `{p}tmp`"))

    # --- 6. insert ids ------------------------------------------------------------------
    cur.execute(f"INSERT INTO `{p}ai` (name) VALUES ('one')")
    first, conn_id = cur.lastrowid, conn.insert_id()
    out("insert_id_first", ids(cur, first) + f" absolute={first} connection_insert_id=+{conn_id - first}")
    cur.execute(f"INSERT INTO `{p}ai` (name) VALUES (%s)", ("two",))
    out("insert_id_second", ids(cur, first))
    # executemany() turns this into one multi-row INSERT
    n = cur.executemany(f"INSERT INTO `{p}ai` (name) VALUES (%s)", [("m1",), ("m2",), ("m3",)])
    out("insert_id_multi", ids(cur, first) + f" rows={n}")
    show(cur, "insert_id_read", f"SELECT COUNT(*), MAX(id) - MIN(id), GROUP_CONCAT(name ORDER BY id) FROM `{p}ai`")
    out("insert_id_after_select", vals(cur, "SELECT LAST_INSERT_ID() - %s", (first,)))
    cur.execute(f"INSERT INTO `{p}seq` VALUES (100)")
    cur.execute(f"UPDATE `{p}seq` SET n = LAST_INSERT_ID(n + 1)")  # the sequence idiom
    out("sequence", f"driver={cur.lastrowid} " + vals(cur, f"SELECT LAST_INSERT_ID(), n FROM `{p}seq`"))

    # --- 7. FOUND_ROWS, ROW_COUNT -------------------------------------------------------
    n = cur.execute(f"INSERT INTO `{p}items` (id, grp, name)"
                    " SELECT seq, seq % 10, CONCAT('item-', LPAD(seq, 3, '0')) FROM seq_1_to_100")
    out("items", f"affected={n} " + vals(cur, f"SELECT COUNT(*), SUM(id) FROM `{p}items`"))
    cur.execute(f"SELECT SQL_CALC_FOUND_ROWS id, name FROM `{p}items` WHERE grp = %s ORDER BY id LIMIT 2", (3,))
    rows = " ".join(f"{r[0]}={r[1]}" for r in cur.fetchall())
    out("calc_found_rows", rows + " " + vals(cur, "SELECT FOUND_ROWS()"))
    n = cur.execute(f"UPDATE `{p}items` SET qty = qty + 1 WHERE grp = 3")
    out("update", f"affected={n} row_count=" + vals(cur, "SELECT ROW_COUNT()"))
    out("update_read", vals(cur, f"SELECT SUM(qty) FROM `{p}items` WHERE grp = %s", (3,)))
    n = cur.execute(f"UPDATE `{p}items` SET qty = qty WHERE grp = 3")
    out("update_unchanged", f"affected={n} row_count=" + vals(cur, "SELECT ROW_COUNT()"))

    # --- 8. named locks (a second connection must see the lock as taken) ----------------
    other = connect(c)
    ocur = other.cursor()
    lock = f"weiche-split-{p}lock"
    out("get_lock", vals(cur, "SELECT GET_LOCK(%s, 1)", (lock,)))
    out("is_used_lock", vals(cur, "SELECT IS_USED_LOCK(%s) IS NOT NULL", (lock,)))
    out("is_free_lock", vals(cur, "SELECT IS_FREE_LOCK(%s)", (lock,)))
    out("other_get_lock", vals(ocur, "SELECT GET_LOCK(%s, 0), IS_FREE_LOCK(%s)", (lock, lock)))
    out("release_lock", vals(cur, "SELECT RELEASE_LOCK(%s)", (lock,)))
    out("is_free_lock_after", vals(cur, "SELECT IS_FREE_LOCK(%s)", (lock,)))
    out("other_after", vals(ocur, "SELECT IS_FREE_LOCK(%s)", (lock,)))
    other.close()

    # --- 9. transactions: rows, @@autocommit, @@in_transaction after each step ------------
    # (COUNT(*) in a subquery: MariaDB 10.11 returns @@autocommit as 0 in
    # `SELECT COUNT(*), @@autocommit FROM t`)
    state = f"SELECT (SELECT COUNT(*) FROM `{p}tx`), @@autocommit, @@in_transaction"
    ins = f"INSERT INTO `{p}tx` VALUES (%d)"
    show(cur, "tx_start", state)
    show(cur, "tx_begin_insert", state, "BEGIN", ins % 1)
    show(cur, "tx_rollback", state, "ROLLBACK")
    show(cur, "tx_start_insert", state, "START TRANSACTION", ins % 2)
    show(cur, "tx_commit", state, "COMMIT")
    conn.begin()  # driver API
    show(cur, "tx_savepoint_insert", state, ins % 3, "SAVEPOINT s1", ins % 4)
    show(cur, "tx_rollback_to_savepoint", state, "ROLLBACK TO SAVEPOINT s1")
    conn.commit()
    show(cur, "tx_savepoint_commit", state)
    show(cur, "autocommit0", state, "SET autocommit = 0")
    show(cur, "autocommit0_insert", state, ins % 5)
    show(cur, "autocommit0_rollback", state, "ROLLBACK")
    show(cur, "autocommit1", state, "SET autocommit = 1")
    conn.autocommit(False)  # driver API
    cur.execute(ins % 6)
    conn.commit()
    conn.autocommit(True)
    show(cur, "driver_autocommit_commit", state)
    show(cur, "tx_rows", f"SELECT GROUP_CONCAT(id ORDER BY id) FROM `{p}tx`")

    # --- 10. parameterised statements (client-side "prepared") ----------------------------
    hits = total = 0
    names = []
    for i in range(1000):
        cur.execute(f"SELECT id, name FROM `{p}items` WHERE id = %s", ((i * 37) % 110 + 1,))  # 101..110 missing
        for rid, rname in cur.fetchall():
            total += rid
            names.append(rname + ",")
            hits += 1
    md5 = hashlib.md5("".join(names).encode()).hexdigest()
    out("prepared_select", f"executions=1000 rows={hits} sum_id={total} md5_names={md5}")
    affected, inserted = 0, []
    for i in range(1, 51):
        affected += cur.execute(f"INSERT INTO `{p}log` (item_id, note) VALUES (%s, %s)", (i * 3, f"note-{i}"))
        inserted.append(cur.lastrowid)
    consecutive = "yes" if inserted == list(range(inserted[0], inserted[0] + 50)) else "no"
    out("prepared_insert", f"executions=50 affected={affected} insert_ids_consecutive={consecutive}")
    show(cur, "prepared_insert_read", f"SELECT COUNT(*), SUM(item_id), MD5(GROUP_CONCAT(note ORDER BY id)) FROM `{p}log`")
    count = f"SELECT COUNT(*) FROM `{p}log` WHERE item_id > %s"
    before = vals(cur, count, (0,))
    conn.begin()
    cur.execute(f"INSERT INTO `{p}log` (item_id, note) VALUES (1000, 'in tx')")
    during = vals(cur, count, (0,))
    conn.rollback()
    out("prepared_in_tx", f"before={before} during={during} after_rollback={vals(cur, count, (0,))}")

    # --- 11. reads right after writes ----------------------------------------------
    stale = 0
    for i in range(1, 21):
        cur.execute(f"UPDATE `{p}items` SET qty = %s WHERE id = 1", (i,))
        stale += vals(cur, f"SELECT qty FROM `{p}items` WHERE id = 1") != fmt(i)
        cur.execute(f"INSERT INTO `{p}items` (id, grp, name) VALUES (%s, 99, 'new')", (1000 + i,))
        stale += vals(cur, f"SELECT COUNT(*) FROM `{p}items` WHERE id = %s", (1000 + i,)) != fmt(1)
        cur.execute(f"DELETE FROM `{p}items` WHERE id = %s", (1000 + i,))
        stale += vals(cur, f"SELECT COUNT(*) FROM `{p}items` WHERE grp = 99") != fmt(0)
    out("read_after_write", f"iterations=20 stale={stale}")

    # --- 12. warnings ------------------------------------------------------------------
    cur.execute("SET sql_mode = ''")
    cur.execute(f"INSERT INTO `{p}warn` (id, v) VALUES (1, 300)")
    out("warning_insert", warnings(conn))
    show(cur, "warning_value", f"SELECT v FROM `{p}warn` WHERE id = 1")
    show(cur, "warning_sql_mode_restored", "SELECT @@sql_mode = @saved_mode", "SET sql_mode = @saved_mode")
    v = vals(cur, "SELECT CAST('12abc' AS SIGNED)")  # a warning from a read
    out("warning_select", f"{v} {warnings(conn)}")

    # --- 13. cleanup ---------------------------------------------------------------
    cur.execute(f"DROP TABLE IF EXISTS {tables}")
    out("drop", "ok")
    cur.close()
    conn.close()
    print("done", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        sys.stdout.flush()
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
