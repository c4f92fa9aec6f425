#!/usr/bin/env bash
# Client test with the `mariadb` command-line client (batch mode).
#
# Run against MariaDB directly and through the proxy: stdout must be identical
# in both cases (nothing printed depends on connection ids, timings or ports).
#
# Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
# Needs: mariadb client, coreutils (basenc, sha1sum, stdbuf), gawk, openssl.
#
# Each `mariadb` invocation is its own connection. "Prepared" statements here
# are SQL-level PREPARE/EXECUTE (text protocol); the multi-statement query is
# sent as one COM_QUERY by changing the client's DELIMITER.
set -Eeuo pipefail

: "${DB_USER:?DB_USER is required}"
: "${DB_NAME:?DB_NAME is required}"
DB_HOST="${DB_HOST:-127.0.0.1}"
DB_PORT="${DB_PORT:-3306}"
P="${TEST_TABLE_PREFIX:-}"
# The password goes through the environment, not the command line.
export MYSQL_PWD="${DB_PASSWORD:-}"

BIG_BLOB_LEN=$((20 * 1024 * 1024)) # 20 MiB: more than one 16 MiB packet
LOAD_ROWS=220000                    # about 20 MB of text

MYSQL=(
  mariadb --no-defaults --protocol=tcp -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" -D "$DB_NAME"
  --batch --raw --skip-column-names --local-infile=1
  --default-character-set=utf8mb4 --max-allowed-packet=64M
)
# DB_COMPRESS=1: every connection uses the compressed protocol.
[[ ${DB_COMPRESS:-} == 1 ]] && MYSQL+=(--compress)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/weiche-cli.XXXXXX")
SLEEPER_PID=""
cleanup() {
  if [[ -n $SLEEPER_PID ]] && kill -0 "$SLEEPER_PID" 2>/dev/null; then kill "$SLEEPER_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'echo "FAILED: line $LINENO: $BASH_COMMAND (exit $?)" >&2' ERR

out() { printf '%s: %s\n' "$1" "$2"; }
q() { "${MYSQL[@]}" -e "$1"; }
# Tab-separated result lines -> one line with " | " between columns.
join_cols() { sed 's/\t/ | /g'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

for tool in mariadb basenc sha1sum stdbuf gawk openssl; do
  command -v "$tool" >/dev/null || { echo "FAILED: $tool not found" >&2; exit 1; }
done

# --- connect ----------------------------------------------------------------
# (Results go through a variable first: a failing $(...) inside an argument
# would not stop the script under set -e.)
res=$(q 'SELECT DATABASE(), @@character_set_client' | join_cols)
out connect "ok $res"
res=$(q "SHOW STATUS LIKE 'Compression'" | join_cols)
out compression "$res"

# --- schema -----------------------------------------------------------------
q "DROP TABLE IF EXISTS \`${P}types\`, \`${P}load\`, \`${P}big\`;
CREATE TABLE \`${P}types\` (id INT PRIMARY KEY, i INT, bu BIGINT UNSIGNED,
  d DECIMAL(20,6), f DOUBLE, s VARCHAR(100) CHARACTER SET utf8mb4, b BLOB,
  dt DATE, ts DATETIME(6), n INT NULL) ENGINE=InnoDB;
CREATE TABLE \`${P}load\` (id INT PRIMARY KEY, k INT NULL, s VARCHAR(100)) ENGINE=InnoDB;
CREATE TABLE \`${P}big\` (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB;"
out create ok

# --- prepared insert (SQL PREPARE/EXECUTE) with parameters of every type ----
all_bytes_hex=$(printf '%02X' $(seq 0 255))
rows=$(q "PREPARE ins FROM 'INSERT INTO \`${P}types\` (id, i, bu, d, f, s, b, dt, ts, n) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';
SET @rows = 0;
SET @id = 1, @i = -2147483648, @bu = 18446744073709551615, @d = 12345678901234.567891, @f = 3.5e0,
    @s = 'Grüße, 東京 🚂', @b = X'$all_bytes_hex', @dt = '2024-02-29', @ts = '2024-02-29 23:59:58.123456', @n = NULL;
EXECUTE ins USING @id, @i, @bu, @d, @f, @s, @b, @dt, @ts, @n;
SET @rows = @rows + ROW_COUNT();
SET @id = 2, @i = 2147483647, @bu = 0, @d = -0.000001, @f = -1.25e-10,
    @s = '', @b = X'', @dt = '1000-01-01', @ts = '9999-12-31 23:59:59.999999', @n = 42;
EXECUTE ins USING @id, @i, @bu, @d, @f, @s, @b, @dt, @ts, @n;
SET @rows = @rows + ROW_COUNT();
SET @id = 3, @i = NULL, @bu = NULL, @d = NULL, @f = NULL, @s = NULL, @b = NULL, @dt = NULL, @ts = NULL, @n = NULL;
EXECUTE ins USING @id, @i, @bu, @d, @f, @s, @b, @dt, @ts, @n;
SET @rows = @rows + ROW_COUNT();
DEALLOCATE PREPARE ins;
SELECT @rows;")
out insert "prepared rows=$rows"

# --- read back ----------------------------------------------------------------
cols='id, i, bu, d, f, s, LENGTH(b) AS b_len, SHA1(b) AS b_sha1, dt, ts, n'
# Column metadata as relayed (--column-type-info needs table output mode).
"${MYSQL[@]}" --table --column-type-info -e "SELECT id, i, bu, d, f, s, b, dt, ts, n FROM \`${P}types\` ORDER BY id" |
  gawk '/^Field +[0-9]+:/ { if (line != "") print line; line = $3 }
        /^(Type|Collation|Length|Max_length|Decimals|Flags):/ { $1 = $1; line = line " " $0 }
        END { if (line != "") print line }' |
  while IFS= read -r line; do out select_fields "$line"; done
q "SELECT $cols FROM \`${P}types\` ORDER BY id" | join_cols |
  while IFS= read -r line; do out select "$line"; done
# Same through a SQL prepared statement.
q "PREPARE sel FROM 'SELECT $cols FROM \`${P}types\` WHERE id >= ? ORDER BY id'; SET @one = 1;
EXECUTE sel USING @one; DEALLOCATE PREPARE sel;" | join_cols |
  while IFS= read -r line; do out select_prepared "$line"; done
# The raw bytes of the 256-byte blob (--raw: no escaping; one trailing newline).
q "SELECT b FROM \`${P}types\` WHERE id = 1" >"$TMP/small.out"
size=$(stat -c %s "$TMP/small.out")
head -c $((size - 1)) "$TMP/small.out" >"$TMP/small.bin"
out select_blob_raw "len=$(stat -c %s "$TMP/small.bin") sha1=$(sha1sum <"$TMP/small.bin" | cut -d' ' -f1)"

# --- transaction with rollback (one connection) -------------------------------
mapfile -t counts < <(q "SELECT COUNT(*) FROM \`${P}types\`;
START TRANSACTION;
INSERT INTO \`${P}types\` (id, s) VALUES (10, 'rolled back');
SELECT COUNT(*) FROM \`${P}types\`;
ROLLBACK;
SELECT COUNT(*) FROM \`${P}types\`;")
out transaction "before=${counts[0]} during=${counts[1]} after_rollback=${counts[2]}"

# --- multi-statement query: one COM_QUERY, several results ---------------------
# With `DELIMITER //` the client sends everything up to `//` as one query; column
# names are on so that each result set shows where it starts.
"${MYSQL[@]}" --column-names -e "DELIMITER //
INSERT INTO \`${P}types\` (id, i) VALUES (20, 7); SELECT COUNT(*) AS c FROM \`${P}types\`; SELECT id, i, s FROM \`${P}types\` WHERE id IN (1, 20) ORDER BY id //
DELIMITER ;
SELECT COUNT(*) AS after_multi FROM \`${P}types\`;" | join_cols |
  while IFS= read -r line; do out multi "$line"; done

# --- LOAD DATA LOCAL INFILE of a generated ~20 MB file ---------------------------
# Same content as the PHP and Python tests: id, k (\N every 1000th row), s.
gawk -v n="$LOAD_ROWS" 'BEGIN {
  for (i = 1; i <= n; i++) {
    k = (i % 1000 == 0) ? "\\N" : (i * 7919) % 1000003
    h = sprintf("%08x", (i * 2654435761) % 4294967296)
    s = h h h h h h h h h h
    printf "%d\t%s\t%s\n", i, k, s
  }
}' >"$TMP/load.tsv"
loaded=$(q "LOAD DATA LOCAL INFILE '$TMP/load.tsv' INTO TABLE \`${P}load\`
  FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n' (id, k, s); SELECT ROW_COUNT();")
out load_data "bytes=$(stat -c %s "$TMP/load.tsv") affected=$loaded"
rm -f "$TMP/load.tsv"
res=$(q "SELECT COUNT(*), COUNT(k), SUM(k), SUM(CRC32(s)),
  BIT_XOR(CRC32(CONCAT_WS(',', id, k, s))) FROM \`${P}load\`" | join_cols)
out load_data_check "$res"

# --- 20 MiB blob round trip (more than one 16 MiB packet each way) --------------
# Deterministic incompressible bytes: AES-128-CTR keystream with a zero key.
head -c "$BIG_BLOB_LEN" /dev/zero |
  openssl enc -aes-128-ctr -nosalt -K 00000000000000000000000000000000 \
    -iv 00000000000000000000000000000000 >"$TMP/big.bin"
big_sha1=$(sha1sum <"$TMP/big.bin" | cut -d' ' -f1)
out big_blob "generated len=$(stat -c %s "$TMP/big.bin") sha1=$big_sha1"
# One ~40 MiB INSERT with a hex literal.
{
  printf 'INSERT INTO `%sbig` (id, b) VALUES (1, X'"'" "$P"
  basenc --base16 -w0 "$TMP/big.bin"
  printf "');\n"
} >"$TMP/big.sql"
"${MYSQL[@]}" <"$TMP/big.sql"
rm -f "$TMP/big.sql"
q "SELECT b FROM \`${P}big\` WHERE id = 1" >"$TMP/big.out"
size=$(stat -c %s "$TMP/big.out")
head -c $((size - 1)) "$TMP/big.out" >"$TMP/big.back"
back_sha1=$(sha1sum <"$TMP/big.back" | cut -d' ' -f1)
same=no
cmp -s "$TMP/big.bin" "$TMP/big.back" && same=yes
out big_blob_select "len=$(stat -c %s "$TMP/big.back") sha1=$back_sha1 same=$same"
res=$(q "SELECT id, LENGTH(b), SHA1(b) FROM \`${P}big\` ORDER BY id" | join_cols)
out big_blob_sql "$res"
rm -f "$TMP/big.bin" "$TMP/big.out" "$TMP/big.back"
[[ $same == yes ]] || { echo "FAILED: big blob differs after round trip" >&2; exit 1; }

# --- KILL QUERY from a second connection ---------------------------------------
# The victim prints its connection id with the client's `status` command: that
# is the id from the handshake (what a proxy hands out), unlike CONNECTION_ID().
# stdbuf makes the client's stdout line-buffered so the id shows up at once.
t0=$(now_ms)
# Create the output files first: the background job's redirections may happen after the loop
# below starts reading.
: >"$TMP/victim.out"
: >"$TMP/victim.err"
stdbuf -oL "${MYSQL[@]}" -e "status; SELECT SLEEP(30);" >"$TMP/victim.out" 2>"$TMP/victim.err" &
SLEEPER_PID=$!
tid=""
while [[ -z $tid ]]; do
  tid=$(gawk '/^Connection id:/ { print $3 }' "$TMP/victim.out")
  if [[ -z $tid ]]; then
    kill -0 "$SLEEPER_PID" 2>/dev/null || { cat "$TMP/victim.err" >&2; echo "FAILED: victim exited early" >&2; exit 1; }
    (($(now_ms) - t0 < 10000)) || { echo "FAILED: no connection id from status" >&2; exit 1; }
    sleep 0.05
  fi
done
sleep 0.3
# Repeat KILL until the sleep ends, in case the first one arrives before it runs.
last_kill=0
while kill -0 "$SLEEPER_PID" 2>/dev/null; do
  if (($(now_ms) - last_kill >= 1000)); then
    q "KILL QUERY $tid"
    last_kill=$(now_ms)
  fi
  (($(now_ms) - t0 < 40000)) || { echo "FAILED: SELECT SLEEP(30) did not finish" >&2; exit 1; }
  sleep 0.05
done
victim_rc=0
wait "$SLEEPER_PID" || victim_rc=$?
SLEEPER_PID=""
elapsed=$(($(now_ms) - t0))
# Killed: either error 1317 (client exits 1) or SLEEP() returning 1.
if grep -q '^ERROR 1317 ' "$TMP/victim.err" || [[ $victim_rc == 0 && $(tail -n 1 "$TMP/victim.out") == 1 ]]; then
  how=interrupted
else
  how="not interrupted (rc=$victim_rc: $(tr '\n' ' ' <"$TMP/victim.err"))"
fi
under=no
((elapsed < 10000)) && under=yes
out kill "sleep $how under_10s=$under"
if [[ $how != interrupted || $under != yes ]]; then
  echo "FAILED: KILL QUERY: $how after ${elapsed} ms" >&2
  exit 1
fi

# --- cleanup ---------------------------------------------------------------------
q "DROP TABLE \`${P}types\`, \`${P}load\`, \`${P}big\`"
out drop ok
