<?php
// Application patterns a read/write-splitting proxy must not break, with PHP
// mysqli (mysqlnd): session state (SET NAMES, time_zone, sql_mode, USE, user
// variables, temporary tables, named locks), LAST_INSERT_ID / FOUND_ROWS /
// ROW_COUNT, transactions, prepared statements, reads right after writes and
// SHOW WARNINGS. Run against MariaDB directly and through the proxy: stdout
// must be identical in both cases.
//
// Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
// Usage: php tests/clients/split_mysqli.php
//
// The account must also have all privileges on the database `test` (created
// here if missing).

declare(strict_types=1);

require __DIR__ . '/common.php';

mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

const OTHER_DB = 'test';

function connect(array $c): mysqli
{
    $m = mysqli_init();
    $m->real_connect($c['host'], $c['user'], $c['password'], $c['db'], $c['port']);
    $m->set_charset('utf8mb4');
    return $m;
}

/** The first row of a query, values formatted and separated by spaces. */
function vals(mysqli $m, string $sql): string
{
    return implode(' ', array_map('fmt', $m->query($sql)->fetch_row()));
}

/** Run the statements in $first, then print the first row of $select. */
function show(mysqli $m, string $label, string $select, string ...$first): void
{
    foreach ($first as $sql) {
        $m->query($sql);
    }
    out($label, vals($m, $select));
}

/** Error code of a statement that must fail. */
function error_code(mysqli $m, string $sql): string
{
    try {
        $m->query($sql);
    } catch (mysqli_sql_exception $e) {
        return 'error=' . $e->getCode();
    }
    return 'no error';
}

/** "Level Code" of each SHOW WARNINGS row. */
function warnings(mysqli $m): string
{
    $w = array_map(fn($row) => $row[0] . ' ' . $row[1], $m->query('SHOW WARNINGS')->fetch_all());
    return 'show_warnings=[' . implode(', ', $w) . ']';
}

/** Insert ids relative to the first one: driver, LAST_INSERT_ID(), @@IDENTITY. */
function ids(mysqli $m, int $first): string
{
    $driver = (int)$m->insert_id;
    [$lii, $identity] = $m->query('SELECT LAST_INSERT_ID(), @@IDENTITY')->fetch_row();
    return sprintf('driver=+%d last_insert_id=+%d identity=+%d equal=%s', $driver - $first,
        (int)$lii - $first, (int)$identity - $first,
        ((int)$lii === $driver && (int)$identity === $driver) ? 'yes' : 'no');
}

run_main(function () {
    $c = env_config();
    $p = $c['prefix'];
    $o = '`' . OTHER_DB . '`';
    $m = connect($c);
    $tables = "`{$p}chars`, `{$p}ai`, `{$p}seq`, `{$p}items`, `{$p}tx`, `{$p}log`, `{$p}warn`";
    show($m, 'setup', 'SELECT DATABASE()',
        "DROP TABLE IF EXISTS $tables",
        "CREATE DATABASE IF NOT EXISTS $o",
        "DROP TABLE IF EXISTS $o.`{$p}other`",
        "CREATE TABLE `{$p}chars` (id INT PRIMARY KEY, s VARCHAR(20) CHARACTER SET utf8mb4)",
        "CREATE TABLE `{$p}ai` (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE `{$p}items` (id INT PRIMARY KEY, grp INT, name VARCHAR(20), qty INT NOT NULL DEFAULT 0)",
        "CREATE TABLE `{$p}seq` (n INT NOT NULL)", "CREATE TABLE `{$p}tx` (id INT PRIMARY KEY)",
        "CREATE TABLE `{$p}log` (id INT AUTO_INCREMENT PRIMARY KEY, item_id INT, note VARCHAR(30))",
        "CREATE TABLE `{$p}warn` (id INT PRIMARY KEY, v TINYINT)");

    // --- 1. character set ---------------------------------------------------
    $vars = 'SELECT @@character_set_client, @@character_set_results, @@collation_connection';
    show($m, 'names_latin1', $vars, 'SET NAMES latin1');
    show($m, 'names_utf8mb4', $vars, 'SET NAMES utf8mb4');
    $emoji = "Grüße 🚂😀";
    $m->query("INSERT INTO `{$p}chars` (id, s) VALUES (1, '$emoji')");
    $row = $m->query("SELECT s, HEX(s), CHAR_LENGTH(s), LENGTH(s) FROM `{$p}chars` WHERE id = 1")->fetch_row();
    out('emoji', implode(' ', array_map('fmt', $row)) . ' same=' . ($row[0] === $emoji ? 'yes' : 'no'));

    // --- 2. time zone and sql_mode ----------------------------------------------
    show($m, 'time_zone', "SELECT @@time_zone, FROM_UNIXTIME(0), CONVERT_TZ('2024-01-01 00:00:00',"
        . " '+00:00', @@time_zone), UNIX_TIMESTAMP('1970-01-01 06:30:00')", "SET time_zone = '+05:30'");
    show($m, 'time_zone_default', 'SELECT @@time_zone = @@global.time_zone', 'SET time_zone = DEFAULT');
    show($m, 'ansi_quotes', 'SELECT @@sql_mode, "a column" + 1 AS "x" FROM (SELECT 41 AS "a column") AS "t"',
        'SET @saved_mode = @@sql_mode', "SET sql_mode = 'ANSI_QUOTES'");
    show($m, 'ansi_quotes_table', "SELECT \"s\" FROM \"{$p}chars\" WHERE \"id\" = 1");
    show($m, 'sql_mode_restored', "SELECT @@sql_mode = @saved_mode, \"dq\" = 'dq'", 'SET sql_mode = @saved_mode');

    // --- 3. other schema ----------------------------------------------------------
    show($m, 'use_other', 'SELECT DATABASE()', "USE $o");
    show($m, 'other_select', "SELECT id, s FROM `{$p}other`",
        "CREATE TABLE `{$p}other` (id INT PRIMARY KEY, s VARCHAR(10))",
        "INSERT INTO `{$p}other` VALUES (1, 'other')");
    show($m, 'use_back', "SELECT DATABASE(), (SELECT COUNT(*) FROM `{$p}chars`),"
        . " (SELECT COUNT(*) FROM $o.`{$p}other`)", "USE `{$c['db']}`");
    $m->select_db(OTHER_DB); // COM_INIT_DB instead of USE
    show($m, 'init_db_other', "SELECT DATABASE(), (SELECT COUNT(*) FROM `{$p}other`)");
    $m->select_db($c['db']);
    show($m, 'init_db_back', "SELECT DATABASE(), (SELECT COUNT(*) FROM `{$p}chars`)");
    $m->query("DROP TABLE $o.`{$p}other`");

    // --- 4. user variables ------------------------------------------------------------
    show($m, 'uservar_plus_1', 'SELECT @a + 1', 'SET @a = 41');
    show($m, 'uservar_assign', 'SELECT @a := @a + 10');
    show($m, 'uservar_a', 'SELECT @a');
    show($m, 'uservar_concat', "SELECT CONCAT(@s, '!')", "SET @s = 'text'");
    show($m, 'uservar_into', 'SELECT @v, @n',
        "SELECT HEX(s), CHAR_LENGTH(s) INTO @v, @n FROM `{$p}chars` WHERE id = 1");

    // --- 5. temporary table -------------------------------------------------------
    $m->query("CREATE TEMPORARY TABLE `{$p}tmp` (id INT PRIMARY KEY)");
    $m->query("INSERT INTO `{$p}tmp` VALUES (1), (2), (3)");
    for ($i = 1; $i <= 3; $i++) {
        show($m, "temp_count$i", "SELECT COUNT(*) FROM `{$p}tmp`");
    }
    $st = $m->prepare("SELECT COUNT(*) FROM `{$p}tmp` WHERE id >= ?");
    $st->execute([2]);
    out('temp_prepared', implode(' ', array_map('fmt', $st->get_result()->fetch_row())));
    $st->close();
    $m->query("DROP TEMPORARY TABLE `{$p}tmp`");
    out('temp_after_drop', error_code($m, "SELECT COUNT(*) FROM `{$p}tmp`"));

    // --- 6. insert ids ------------------------------------------------------------------
    $m->query("INSERT INTO `{$p}ai` (name) VALUES ('one')");
    $first = (int)$m->insert_id;
    out('insert_id_first', ids($m, $first) . ' absolute=' . $first);
    $m->query("INSERT INTO `{$p}ai` (name) VALUES ('two')");
    out('insert_id_second', ids($m, $first));
    $m->query("INSERT INTO `{$p}ai` (name) VALUES ('m1'), ('m2'), ('m3')");
    out('insert_id_multi', ids($m, $first) . ' rows=' . $m->affected_rows);
    show($m, 'insert_id_read', "SELECT COUNT(*), MAX(id) - MIN(id), GROUP_CONCAT(name ORDER BY id) FROM `{$p}ai`");
    show($m, 'insert_id_after_select', "SELECT LAST_INSERT_ID() - $first");
    $m->query("INSERT INTO `{$p}seq` VALUES (100)");
    $m->query("UPDATE `{$p}seq` SET n = LAST_INSERT_ID(n + 1)"); // the sequence idiom
    out('sequence', 'driver=' . $m->insert_id . ' ' . vals($m, "SELECT LAST_INSERT_ID(), n FROM `{$p}seq`"));

    // --- 7. FOUND_ROWS, ROW_COUNT -------------------------------------------------------
    $m->query("INSERT INTO `{$p}items` (id, grp, name)"
        . " SELECT seq, seq % 10, CONCAT('item-', LPAD(seq, 3, '0')) FROM seq_1_to_100");
    out('items', 'affected=' . $m->affected_rows . ' ' . vals($m, "SELECT COUNT(*), SUM(id) FROM `{$p}items`"));
    $r = $m->query("SELECT SQL_CALC_FOUND_ROWS id, name FROM `{$p}items` WHERE grp = 3 ORDER BY id LIMIT 2");
    $rows = array_map(fn($row) => implode('=', $row), $r->fetch_all());
    out('calc_found_rows', implode(' ', $rows) . ' ' . vals($m, 'SELECT FOUND_ROWS()'));
    $m->query("UPDATE `{$p}items` SET qty = qty + 1 WHERE grp = 3");
    out('update', 'affected=' . $m->affected_rows . ' row_count=' . vals($m, 'SELECT ROW_COUNT()'));
    show($m, 'update_read', "SELECT SUM(qty) FROM `{$p}items` WHERE grp = 3");
    $m->query("UPDATE `{$p}items` SET qty = qty WHERE grp = 3");
    out('update_unchanged', 'affected=' . $m->affected_rows . ' row_count=' . vals($m, 'SELECT ROW_COUNT()'));

    // --- 8. named locks (a second connection must see the lock as taken) ----------------
    $other = connect($c);
    $lock = $m->real_escape_string("weiche-split-{$p}lock");
    show($m, 'get_lock', "SELECT GET_LOCK('$lock', 1)");
    show($m, 'is_used_lock', "SELECT IS_USED_LOCK('$lock') IS NOT NULL");
    show($m, 'is_free_lock', "SELECT IS_FREE_LOCK('$lock')");
    show($other, 'other_get_lock', "SELECT GET_LOCK('$lock', 0), IS_FREE_LOCK('$lock')");
    show($m, 'release_lock', "SELECT RELEASE_LOCK('$lock')");
    show($m, 'is_free_lock_after', "SELECT IS_FREE_LOCK('$lock')");
    show($other, 'other_after', "SELECT IS_FREE_LOCK('$lock')");
    $other->close();

    // --- 9. transactions: rows, @@autocommit, @@in_transaction after each step ------------
    // (COUNT(*) in a subquery: MariaDB 10.11 returns @@autocommit as 0 in
    // `SELECT COUNT(*), @@autocommit FROM t`)
    $state = "SELECT (SELECT COUNT(*) FROM `{$p}tx`), @@autocommit, @@in_transaction";
    $ins = fn(int $id) => "INSERT INTO `{$p}tx` VALUES ($id)";
    show($m, 'tx_start', $state);
    show($m, 'tx_begin_insert', $state, 'BEGIN', $ins(1));
    show($m, 'tx_rollback', $state, 'ROLLBACK');
    show($m, 'tx_start_insert', $state, 'START TRANSACTION', $ins(2));
    show($m, 'tx_commit', $state, 'COMMIT');
    $m->begin_transaction(); // driver API
    show($m, 'tx_savepoint_insert', $state, $ins(3), 'SAVEPOINT s1', $ins(4));
    show($m, 'tx_rollback_to_savepoint', $state, 'ROLLBACK TO SAVEPOINT s1');
    $m->commit();
    show($m, 'tx_savepoint_commit', $state);
    show($m, 'autocommit0', $state, 'SET autocommit = 0');
    show($m, 'autocommit0_insert', $state, $ins(5));
    show($m, 'autocommit0_rollback', $state, 'ROLLBACK');
    show($m, 'autocommit1', $state, 'SET autocommit = 1');
    $m->autocommit(false); // driver API
    $m->query($ins(6));
    $m->commit();
    $m->autocommit(true);
    show($m, 'driver_autocommit_commit', $state);
    show($m, 'tx_rows', "SELECT GROUP_CONCAT(id ORDER BY id) FROM `{$p}tx`");

    // --- 10. prepared statements -------------------------------------------------------
    $st = $m->prepare("SELECT id, name FROM `{$p}items` WHERE id = ?");
    $st->bind_param('i', $id); // classic by-reference binding this time
    $st->bind_result($rid, $rname);
    $sum = $hits = 0;
    $names = '';
    for ($i = 0; $i < 1000; $i++) {
        $id = ($i * 37) % 110 + 1; // ids 101..110 do not exist
        $st->execute();
        while ($st->fetch()) {
            $sum += $rid;
            $names .= $rname . ',';
            $hits++;
        }
        // (no free_result(): on mysqlnd it drops the bind_result() bindings)
    }
    $st->close();
    out('prepared_select', "executions=1000 rows=$hits sum_id=$sum md5_names=" . md5($names));
    $st = $m->prepare("INSERT INTO `{$p}log` (item_id, note) VALUES (?, ?)");
    $affected = 0;
    $consecutive = true;
    for ($i = 1; $i <= 50; $i++) {
        $st->execute([$i * 3, "note-$i"]); // PHP 8.1 execute($params): no bind_param
        $affected += $st->affected_rows;
        $consecutive = $consecutive && ($i === 1 || $st->insert_id === $prev + 1);
        $prev = $st->insert_id;
    }
    $st->close();
    out('prepared_insert', "executions=50 affected=$affected insert_ids_consecutive=" . ($consecutive ? 'yes' : 'no'));
    show($m, 'prepared_insert_read', "SELECT COUNT(*), SUM(item_id), MD5(GROUP_CONCAT(note ORDER BY id)) FROM `{$p}log`");
    // A statement prepared outside a transaction, executed inside one.
    $st = $m->prepare("SELECT COUNT(*) FROM `{$p}log` WHERE item_id > ?");
    $count = function () use ($st): int {
        $st->execute([0]);
        return $st->get_result()->fetch_row()[0];
    };
    $before = $count();
    $m->query('BEGIN');
    $m->query("INSERT INTO `{$p}log` (item_id, note) VALUES (1000, 'in tx')");
    $during = $count();
    $m->query('ROLLBACK');
    out('prepared_in_tx', "before=$before during=$during after_rollback=" . $count());
    $st->close();

    // --- 11. reads right after writes ----------------------------------------------
    $stale = 0;
    for ($i = 1; $i <= 20; $i++) {
        $m->query("UPDATE `{$p}items` SET qty = $i WHERE id = 1");
        $stale += vals($m, "SELECT qty FROM `{$p}items` WHERE id = 1") === fmt((string)$i) ? 0 : 1;
        $m->query("INSERT INTO `{$p}items` (id, grp, name) VALUES (1000 + $i, 99, 'new')");
        $stale += vals($m, "SELECT COUNT(*) FROM `{$p}items` WHERE id = 1000 + $i") === fmt('1') ? 0 : 1;
        $m->query("DELETE FROM `{$p}items` WHERE id = 1000 + $i");
        $stale += vals($m, "SELECT COUNT(*) FROM `{$p}items` WHERE grp = 99") === fmt('0') ? 0 : 1;
    }
    out('read_after_write', "iterations=20 stale=$stale");

    // --- 12. warnings ------------------------------------------------------------------
    $m->query("SET sql_mode = ''");
    $m->query("INSERT INTO `{$p}warn` (id, v) VALUES (1, 300)");
    out('warning_insert', 'warning_count=' . $m->warning_count . ' ' . warnings($m));
    show($m, 'warning_value', "SELECT v FROM `{$p}warn` WHERE id = 1");
    show($m, 'warning_sql_mode_restored', 'SELECT @@sql_mode = @saved_mode', 'SET sql_mode = @saved_mode');
    $v = vals($m, "SELECT CAST('12abc' AS SIGNED)"); // a warning from a read
    out('warning_select', $v . ' warning_count=' . $m->warning_count . ' ' . warnings($m));

    // --- 13. cleanup ---------------------------------------------------------------
    $m->query("DROP TABLE IF EXISTS $tables");
    out('drop', 'ok');
    $m->close();
    echo "done\n";
});
