#!/usr/bin/python3
"""The driver of scripts/chaos (which sets up the topology and Weiche and passes CHAOS_* and
WEICHE_SANDBOX_* in the environment).

Clients write to a ledger table through Weiche (single inserts and two-insert transactions),
read it back (read-your-writes), read a table through the cache, and read a large table. A
write counts as acknowledged when its OK (or its COMMIT's OK) arrived. Faults are injected one
after another; for each one the report gives the client errors seen from the fault's start to
the end of a recovery window after it, the time from the fault's end to the last error, and,
once all faults are over, the acknowledged writes missing from the primary (lost) or present
more than once (duplicated). Exit status 1 when any write was lost or duplicated.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import pymysql

QUICK = os.environ.get("CHAOS_QUICK") == "1"
CLIENTS = 20 if QUICK else 100
FAULT = 4 if QUICK else 10  # seconds a lasting fault lasts
RECOVERY = 5 if QUICK else 15  # seconds watched after a fault ends
HOST, PORT = os.environ["CHAOS_WEICHE"].split(":")
PRIMARY = os.environ["WEICHE_SANDBOX_PRIMARY"].split(":")
BASE = os.environ["WEICHE_SANDBOX_DIR"]
USER = os.environ["WEICHE_APP_USER"]
PASSWORD = os.environ["WEICHE_APP_PASSWORD"]
WEICHE_PID = int(os.environ["CHAOS_WEICHE_PID"])
SANDBOX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox")

lock = threading.Lock()
events = []  # (time, ok, what, message)
acked = {}  # write id -> time acknowledged
stale = []  # read-your-writes violations
stop = threading.Event()


def connect(host=HOST, port=PORT):
    return pymysql.connect(host=host, port=int(port), user=USER, password=PASSWORD,
                           database="weiche", autocommit=True, connect_timeout=5,
                           read_timeout=20, write_timeout=20)


def record(ok, what, message=""):
    with lock:
        events.append((time.time(), ok, what, message))


def client(n):
    conn = None
    seq = 0
    rng = random.Random(n)
    while not stop.is_set():
        try:
            if conn is None:
                conn = connect()
            cur = conn.cursor()
            r = rng.random()
            if r < 0.35:
                seq += 1
                wid = f"c{n}-{seq}"
                cur.execute("INSERT INTO chaos_ledger (wid, client) VALUES (%s, %s)", (wid, n))
                with lock:
                    acked[wid] = time.time()
                # Read-your-writes: the session sees its own write at once.
                cur.execute("SELECT COUNT(*) FROM chaos_ledger WHERE wid = %s", (wid,))
                if cur.fetchone()[0] != 1:
                    with lock:
                        stale.append(wid)
                record(True, "write")
            elif r < 0.45:
                seq += 1
                a, b = f"c{n}-{seq}a", f"c{n}-{seq}b"
                cur.execute("BEGIN")
                cur.execute("INSERT INTO chaos_ledger (wid, client) VALUES (%s, %s)", (a, n))
                cur.execute("INSERT INTO chaos_ledger (wid, client) VALUES (%s, %s)", (b, n))
                cur.execute("COMMIT")
                now = time.time()
                with lock:
                    acked[a] = now
                    acked[b] = now
                record(True, "transaction")
            elif r < 0.80:
                cur.execute("/* weiche:cache ttl=2 */ SELECT v FROM chaos_static WHERE id = %s",
                            (rng.randint(1, 1000),))
                cur.fetchall()
                record(True, "cached read")
            elif r < 0.97:
                cur.execute("SELECT COUNT(*) FROM chaos_ledger WHERE client = %s", (n,))
                cur.fetchall()
                record(True, "read")
            else:
                cur.execute("SELECT id, pad FROM chaos_big")
                if len(cur.fetchall()) != 2000:
                    raise RuntimeError("a large result came back short")
                record(True, "large read")
        except Exception as e:  # every failure is counted, then the client reconnects
            record(False, "op", f"{type(e).__name__}: {e}"[:120])
            try:
                if conn is not None:
                    conn.close()
            except Exception:
                pass
            conn = None
            time.sleep(0.05)
        time.sleep(0.002)


def pid_of(role):
    with open(os.path.join(BASE, role, f"{role}.pid")) as f:
        return int(f.read().strip())


def restart_missing():
    subprocess.run([SANDBOX, "start"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def kill_replica():
    os.kill(pid_of("replica1"), signal.SIGKILL)
    time.sleep(FAULT)
    restart_missing()


def stop_replica():
    pid = pid_of("replica2")
    os.kill(pid, signal.SIGSTOP)
    time.sleep(10 if not QUICK else FAULT)
    os.kill(pid, signal.SIGCONT)


def kill_primary():
    os.kill(pid_of("primary"), signal.SIGKILL)
    time.sleep(1)
    restart_missing()


def exhaust_pool():
    """Sessions that hold primary connections (SELECT ... FOR UPDATE sleeping in a
    transaction) beyond the pool's size, so that other writes wait for a connection."""
    def hold():
        try:
            c = connect()
            cur = c.cursor()
            cur.execute("BEGIN")
            cur.execute("SELECT SLEEP(%s) FOR UPDATE", (FAULT,))
            cur.execute("COMMIT")
            c.close()
        except Exception:
            pass
    holders = [threading.Thread(target=hold) for _ in range(50)]
    for t in holders:
        t.start()
    for t in holders:
        t.join()


def drop_mid_result():
    """Clients that start reading the large table and close their socket after one row."""
    end = time.time() + FAULT
    while time.time() < end:
        try:
            c = connect()
            cur = c.cursor(pymysql.cursors.SSCursor)
            cur.execute("SELECT id, pad FROM chaos_big")
            cur.fetchone()
            c._sock.close()  # gone in the middle of the result
        except Exception:
            pass
        time.sleep(0.02)


def restart_memcached():
    os.kill(pid_of("memcached1"), signal.SIGKILL)
    time.sleep(1)
    restart_missing()


def reload_config():
    os.kill(WEICHE_PID, signal.SIGHUP)
    time.sleep(1)


FAULTS = [
    ("kill -9 a replica (restarted after the fault)", kill_replica),
    (f"SIGSTOP a replica for {10 if not QUICK else FAULT} s", stop_replica),
    ("kill -9 the primary, restart it", kill_primary),
    ("exhaust the pool (50 sessions hold primary connections)", exhaust_pool),
    ("drop clients in the middle of results", drop_mid_result),
    ("restart a memcached node (kill -9)", restart_memcached),
    ("reload the config (SIGHUP)", reload_config),
]


def setup():
    c = connect(*PRIMARY)
    cur = c.cursor()
    cur.execute("DROP TABLE IF EXISTS chaos_ledger, chaos_static, chaos_big")
    # No unique key on wid: a write applied twice must show up as two rows.
    # Each row records the server connection and the time that wrote it, so that a duplicate
    # can be traced in Weiche's log (the trigger runs on the primary only: row-based events do
    # not fire triggers on the replicas).
    cur.execute("CREATE TABLE chaos_ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
                "wid VARCHAR(40) NOT NULL, client INT NOT NULL, "
                "conn BIGINT NOT NULL DEFAULT 0, at TIMESTAMP(6) NOT NULL DEFAULT NOW(6), "
                "KEY (wid), KEY (client))")
    # Creating a trigger with the binlog on takes SUPER: the sandbox's root (no password).
    root = pymysql.connect(host=PRIMARY[0], port=int(PRIMARY[1]), user="root", password="",
                           database="weiche", autocommit=True)
    root.cursor().execute("CREATE TRIGGER chaos_ledger_conn BEFORE INSERT ON chaos_ledger "
                          "FOR EACH ROW SET NEW.conn = CONNECTION_ID()")
    root.close()
    cur.execute("CREATE TABLE chaos_static (id INT PRIMARY KEY, v VARCHAR(40))")
    cur.executemany("INSERT INTO chaos_static VALUES (%s, %s)",
                    [(i, f"value {i}") for i in range(1, 1001)])
    cur.execute("CREATE TABLE chaos_big (id INT PRIMARY KEY, pad VARCHAR(500))")
    cur.executemany("INSERT INTO chaos_big VALUES (%s, REPEAT('x', 500))",
                    [(i,) for i in range(1, 2001)])
    c.close()
    time.sleep(1)  # the replicas catch up


def main():
    setup()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(3)
    phases = []
    for name, fault in FAULTS:
        start = time.time()
        fault()
        end = time.time()
        time.sleep(RECOVERY)
        phases.append((name, start, end, time.time()))
    stop.set()
    for t in threads:
        t.join(timeout=30)

    c = connect(*PRIMARY)
    cur = c.cursor()
    cur.execute("SELECT wid, COUNT(*) FROM chaos_ledger GROUP BY wid")
    counts = dict(cur.fetchall())
    c.close()

    print(f"Weiche fault injection: {CLIENTS} clients, "
          f"{'quick' if QUICK else 'full'} mode, {RECOVERY} s watched after each fault.\n")
    print("| fault | lasted s | client errors | operations | time to recover s "
          "| acked writes | lost | duplicated |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total_lost = total_dup = 0
    for name, start, end, until in phases:
        window = [e for e in events if start <= e[0] < until]
        errors = [e for e in window if not e[1]]
        last_error = max((e[0] for e in errors), default=None)
        recover = 0.0 if last_error is None or last_error <= end else last_error - end
        mine = [w for w, t in acked.items() if start <= t < until]
        lost = sum(1 for w in mine if counts.get(w, 0) == 0)
        dup = sum(1 for w in mine if counts.get(w, 0) > 1)
        total_lost += lost
        total_dup += dup
        print(f"| {name} | {end - start:.1f} | {len(errors)} | {len(window)} | {recover:.1f} "
              f"| {len(mine)} | {lost} | {dup} |")
    all_lost = [w for w in acked if counts.get(w, 0) == 0]
    all_dup = [w for w, n in counts.items() if n > 1]
    print(f"\nOver the whole run: {len(acked)} acknowledged writes, {len(all_lost)} lost, "
          f"{len(all_dup)} written more than once; {len(events)} operations, "
          f"{sum(1 for e in events if not e[1])} client errors; "
          f"{len(stale)} reads that missed the session's own write.")
    errors = {}
    for e in events:
        if not e[1]:
            errors[e[3]] = errors.get(e[3], 0) + 1
    if errors:
        print("\nMost frequent client errors:\n")
        for msg, n in sorted(errors.items(), key=lambda kv: -kv[1])[:8]:
            print(f"- {n} x {msg}")
    if all_dup:
        c = connect(*PRIMARY)
        cur = c.cursor()
        marks = ", ".join(["%s"] * len(all_dup[:10]))
        cur.execute(f"SELECT wid, id, conn, at FROM chaos_ledger WHERE wid IN ({marks}) "
                    "ORDER BY wid, id", all_dup[:10])
        print("\nRows of the duplicated writes (wid, id, server connection, written at):\n")
        for wid, id_, conn, at in cur.fetchall():
            acked_at = time.strftime("%H:%M:%S", time.gmtime(acked[wid])) if wid in acked else "?"
            frac = f"{acked[wid] % 1:.6f}"[1:] if wid in acked else ""
            print(f"- {wid} id={id_} conn={conn} at={at} (acknowledged {acked_at}{frac} UTC)")
        c.close()
    if all_lost or all_dup or total_lost or total_dup:
        print(f"\nchaos: FAILED: lost {all_lost[:10]}, duplicated {all_dup[:10]}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
