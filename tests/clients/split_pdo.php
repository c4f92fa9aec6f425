<?php
// Application patterns a read/write-splitting proxy must not break, with PHP
// PDO (pdo_mysql on mysqlnd): session state (SET NAMES, time_zone, sql_mode,
// USE, user variables, temporary tables, named locks), LAST_INSERT_ID /
// FOUND_ROWS / ROW_COUNT, transactions, prepared statements, reads right after
// writes and SHOW WARNINGS. Run against MariaDB directly and through the proxy:
// stdout must be identical in both cases.
//
// Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
// Usage: php tests/clients/split_pdo.php
//
// ATTR_EMULATE_PREPARES is false: PDO::query() and prepare() use server-side
// COM_STMT_PREPARE/EXECUTE (SELECTs, SET @a = ?, SHOW WARNINGS, ...), exec()
// uses COM_QUERY. The account also needs the database `test` (created if missing).

declare(strict_types=1);

require __DIR__ . '/common.php';

const OTHER_DB = 'test';

function connect(array $c): PDO
{
    $dsn = sprintf('mysql:host=%s;port=%d;dbname=%s;charset=utf8mb4', $c['host'], $c['port'], $c['db']);
    return new PDO($dsn, $c['user'], $c['password'], [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,      // real COM_STMT_PREPARE/EXECUTE
    ]);
}

/** The first row of a (server-side prepared) query, values formatted. */
function vals(PDO $pdo, string $sql, array $params = []): string
{
    $st = $pdo->prepare($sql);
    $st->execute($params);
    return implode(' ', array_map('fmt', $st->fetchAll(PDO::FETCH_NUM)[0]));
}

/** Run the statements in $first (COM_QUERY), then print the first row of $select. */
function show(PDO $pdo, string $label, string $select, string ...$first): void
{
    foreach ($first as $sql) {
        $pdo->exec($sql);
    }
    out($label, vals($pdo, $select));
}

/** Server error code of a statement that must fail. */
function error_code(PDO $pdo, string $sql): string
{
    try {
        $pdo->query($sql);
    } catch (PDOException $e) {
        return 'error=' . ($e->errorInfo[1] ?? '?');
    }
    return 'no error';
}

/** "Level Code" of each SHOW WARNINGS row. */
function warnings(PDO $pdo): string
{
    $w = array_map(fn($row) => $row[0] . ' ' . $row[1], $pdo->query('SHOW WARNINGS')->fetchAll(PDO::FETCH_NUM));
    return 'show_warnings=[' . implode(', ', $w) . ']';
}

/** Insert ids relative to the first one: driver, LAST_INSERT_ID(), @@IDENTITY. */
function ids(PDO $pdo, int $first): string
{
    $driver = (int)$pdo->lastInsertId();
    [$lii, $identity] = $pdo->query('SELECT LAST_INSERT_ID(), @@IDENTITY')->fetch(PDO::FETCH_NUM);
    return sprintf('driver=+%d last_insert_id=+%d identity=+%d equal=%s', $driver - $first,
        (int)$lii - $first, (int)$identity - $first,
        ((int)$lii === $driver && (int)$identity === $driver) ? 'yes' : 'no');
}

run_main(function () {
    $c = env_config();
    $p = $c['prefix'];
    $o = '`' . OTHER_DB . '`';
    $pdo = connect($c);
    $tables = "`{$p}chars`, `{$p}ai`, `{$p}seq`, `{$p}items`, `{$p}tx`, `{$p}log`, `{$p}warn`";
    show($pdo, 'setup', 'SELECT DATABASE()',
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
    show($pdo, 'names_latin1', $vars, 'SET NAMES latin1');
    show($pdo, 'names_utf8mb4', $vars, 'SET NAMES utf8mb4');
    $emoji = "Grüße 🚂😀";
    $pdo->prepare("INSERT INTO `{$p}chars` (id, s) VALUES (?, ?)")->execute([1, $emoji]);
    $row = $pdo->query("SELECT s, HEX(s), CHAR_LENGTH(s), LENGTH(s) FROM `{$p}chars` WHERE id = 1")->fetch(PDO::FETCH_NUM);
    out('emoji', implode(' ', array_map('fmt', $row)) . ' same=' . ($row[0] === $emoji ? 'yes' : 'no'));

    // --- 2. time zone and sql_mode ----------------------------------------------
    show($pdo, 'time_zone', "SELECT @@time_zone, FROM_UNIXTIME(0), CONVERT_TZ('2024-01-01 00:00:00',"
        . " '+00:00', @@time_zone), UNIX_TIMESTAMP('1970-01-01 06:30:00')", "SET time_zone = '+05:30'");
    show($pdo, 'time_zone_default', 'SELECT @@time_zone = @@global.time_zone', 'SET time_zone = DEFAULT');
    show($pdo, 'ansi_quotes', 'SELECT @@sql_mode, "a column" + 1 AS "x" FROM (SELECT 41 AS "a column") AS "t"',
        'SET @saved_mode = @@sql_mode', "SET sql_mode = 'ANSI_QUOTES'");
    out('ansi_quotes_table', vals($pdo, "SELECT \"s\" FROM \"{$p}chars\" WHERE \"id\" = ?", [1]));
    show($pdo, 'sql_mode_restored', "SELECT @@sql_mode = @saved_mode, \"dq\" = 'dq'", 'SET sql_mode = @saved_mode');

    // --- 3. other schema ----------------------------------------------------------
    show($pdo, 'use_other', 'SELECT DATABASE()', "USE $o");
    $pdo->exec("CREATE TABLE `{$p}other` (id INT PRIMARY KEY, s VARCHAR(10))");
    $pdo->prepare("INSERT INTO `{$p}other` VALUES (?, ?)")->execute([1, 'other']);
    show($pdo, 'other_select', "SELECT id, s FROM `{$p}other`");
    show($pdo, 'use_back', "SELECT DATABASE(), (SELECT COUNT(*) FROM `{$p}chars`),"
        . " (SELECT COUNT(*) FROM $o.`{$p}other`)", "USE `{$c['db']}`");
    $pdo->exec("DROP TABLE $o.`{$p}other`");

    // --- 4. user variables (SET with a bound parameter, SELECT ... INTO prepared) ----
    $st = $pdo->prepare('SET @a = ?');
    $st->bindValue(1, 41, PDO::PARAM_INT);
    $st->execute();
    show($pdo, 'uservar_plus_1', 'SELECT @a + 1');
    show($pdo, 'uservar_assign', 'SELECT @a := @a + 10');
    show($pdo, 'uservar_a', 'SELECT @a');
    show($pdo, 'uservar_concat', "SELECT CONCAT(@s, '!')", "SET @s = 'text'");
    $st = $pdo->prepare("SELECT HEX(s), CHAR_LENGTH(s) INTO @v, @n FROM `{$p}chars` WHERE id = ?");
    $st->execute([1]);
    out('uservar_into', 'columns=' . $st->columnCount() . ' ' . vals($pdo, 'SELECT @v, @n'));

    // --- 5. temporary table -------------------------------------------------------
    $pdo->exec("CREATE TEMPORARY TABLE `{$p}tmp` (id INT PRIMARY KEY)");
    $pdo->exec("INSERT INTO `{$p}tmp` VALUES (1), (2), (3)");
    for ($i = 1; $i <= 3; $i++) {
        show($pdo, "temp_count$i", "SELECT COUNT(*) FROM `{$p}tmp`");
    }
    out('temp_prepared', vals($pdo, "SELECT COUNT(*) FROM `{$p}tmp` WHERE id >= ?", [2]));
    $pdo->exec("DROP TEMPORARY TABLE `{$p}tmp`");
    out('temp_after_drop', error_code($pdo, "SELECT COUNT(*) FROM `{$p}tmp`"));

    // --- 6. insert ids ------------------------------------------------------------------
    $pdo->exec("INSERT INTO `{$p}ai` (name) VALUES ('one')");
    $first = (int)$pdo->lastInsertId();
    out('insert_id_first', ids($pdo, $first) . ' absolute=' . $first);
    $pdo->prepare("INSERT INTO `{$p}ai` (name) VALUES (?)")->execute(['two']); // prepared
    out('insert_id_second', ids($pdo, $first));
    $n = $pdo->exec("INSERT INTO `{$p}ai` (name) VALUES ('m1'), ('m2'), ('m3')");
    out('insert_id_multi', ids($pdo, $first) . " rows=$n");
    show($pdo, 'insert_id_read', "SELECT COUNT(*), MAX(id) - MIN(id), GROUP_CONCAT(name ORDER BY id) FROM `{$p}ai`");
    out('insert_id_after_select', vals($pdo, 'SELECT LAST_INSERT_ID() - ?', [$first]));
    $pdo->exec("INSERT INTO `{$p}seq` VALUES (100)");
    $pdo->exec("UPDATE `{$p}seq` SET n = LAST_INSERT_ID(n + 1)"); // the sequence idiom
    out('sequence', 'driver=' . $pdo->lastInsertId() . ' ' . vals($pdo, "SELECT LAST_INSERT_ID(), n FROM `{$p}seq`"));

    // --- 7. FOUND_ROWS, ROW_COUNT -------------------------------------------------------
    $n = $pdo->exec("INSERT INTO `{$p}items` (id, grp, name)"
        . " SELECT seq, seq % 10, CONCAT('item-', LPAD(seq, 3, '0')) FROM seq_1_to_100");
    out('items', "affected=$n " . vals($pdo, "SELECT COUNT(*), SUM(id) FROM `{$p}items`"));
    $st = $pdo->prepare("SELECT SQL_CALC_FOUND_ROWS id, name FROM `{$p}items` WHERE grp = ? ORDER BY id LIMIT 2");
    $st->execute([3]);
    $rows = array_map(fn($row) => implode('=', $row), $st->fetchAll(PDO::FETCH_NUM));
    out('calc_found_rows', implode(' ', $rows) . ' ' . vals($pdo, 'SELECT FOUND_ROWS()'));
    $n = $pdo->exec("UPDATE `{$p}items` SET qty = qty + 1 WHERE grp = 3");
    out('update', "affected=$n row_count=" . vals($pdo, 'SELECT ROW_COUNT()'));
    out('update_read', vals($pdo, "SELECT SUM(qty) FROM `{$p}items` WHERE grp = ?", [3]));
    $st = $pdo->prepare("UPDATE `{$p}items` SET qty = qty WHERE grp = ?");
    $st->execute([3]);
    out('update_unchanged', 'affected=' . $st->rowCount() . ' row_count=' . vals($pdo, 'SELECT ROW_COUNT()'));

    // --- 8. named locks (a second connection must see the lock as taken) ----------------
    $other = connect($c);
    $lock = "weiche-split-{$p}lock";
    out('get_lock', vals($pdo, 'SELECT GET_LOCK(?, 1)', [$lock]));
    out('is_used_lock', vals($pdo, 'SELECT IS_USED_LOCK(?) IS NOT NULL', [$lock]));
    out('is_free_lock', vals($pdo, 'SELECT IS_FREE_LOCK(?)', [$lock]));
    out('other_get_lock', vals($other, 'SELECT GET_LOCK(?, 0), IS_FREE_LOCK(?)', [$lock, $lock]));
    out('release_lock', vals($pdo, 'SELECT RELEASE_LOCK(?)', [$lock]));
    out('is_free_lock_after', vals($pdo, 'SELECT IS_FREE_LOCK(?)', [$lock]));
    out('other_after', vals($other, 'SELECT IS_FREE_LOCK(?)', [$lock]));
    $other = null;

    // --- 9. transactions: rows, @@autocommit, @@in_transaction after each step ------------
    // (COUNT(*) in a subquery: MariaDB 10.11 returns @@autocommit as 0 in
    // `SELECT COUNT(*), @@autocommit FROM t`)
    $state = "SELECT (SELECT COUNT(*) FROM `{$p}tx`), @@autocommit, @@in_transaction";
    $ins = fn(int $id) => "INSERT INTO `{$p}tx` VALUES ($id)";
    show($pdo, 'tx_start', $state);
    show($pdo, 'tx_begin_insert', $state, 'BEGIN', $ins(1));
    show($pdo, 'tx_rollback', $state, 'ROLLBACK');
    $pdo->beginTransaction(); // driver API
    $pdo->prepare("INSERT INTO `{$p}tx` VALUES (?)")->execute([2]);
    show($pdo, 'tx_start_insert', $state);
    $pdo->commit();
    show($pdo, 'tx_commit', $state);
    show($pdo, 'tx_savepoint_insert', $state, 'START TRANSACTION', $ins(3), 'SAVEPOINT s1', $ins(4));
    show($pdo, 'tx_rollback_to_savepoint', $state, 'ROLLBACK TO SAVEPOINT s1');
    show($pdo, 'tx_savepoint_commit', $state, 'COMMIT');
    show($pdo, 'autocommit0', $state, 'SET autocommit = 0');
    show($pdo, 'autocommit0_insert', $state, $ins(5));
    show($pdo, 'autocommit0_rollback', $state, 'ROLLBACK');
    show($pdo, 'autocommit1', $state, 'SET autocommit = 1');
    $pdo->setAttribute(PDO::ATTR_AUTOCOMMIT, false); // driver API
    $pdo->exec($ins(6));
    $pdo->exec('COMMIT');
    $pdo->setAttribute(PDO::ATTR_AUTOCOMMIT, true);
    show($pdo, 'driver_autocommit_commit', $state);
    show($pdo, 'tx_rows', "SELECT GROUP_CONCAT(id ORDER BY id) FROM `{$p}tx`");

    // --- 10. prepared statements -------------------------------------------------------
    $st = $pdo->prepare("SELECT id, name FROM `{$p}items` WHERE id = ?");
    $sum = $hits = 0;
    $names = '';
    for ($i = 0; $i < 1000; $i++) {
        $st->execute([($i * 37) % 110 + 1]); // ids 101..110 do not exist
        foreach ($st->fetchAll(PDO::FETCH_NUM) as [$rid, $rname]) {
            $sum += $rid;
            $names .= $rname . ',';
            $hits++;
        }
    }
    $st = null; // COM_STMT_CLOSE
    out('prepared_select', "executions=1000 rows=$hits sum_id=$sum md5_names=" . md5($names));
    $st = $pdo->prepare("INSERT INTO `{$p}log` (item_id, note) VALUES (?, ?)");
    $affected = 0;
    $consecutive = true;
    for ($i = 1; $i <= 50; $i++) {
        $st->execute([$i * 3, "note-$i"]);
        $affected += $st->rowCount();
        $consecutive = $consecutive && ($i === 1 || (int)$pdo->lastInsertId() === $prev + 1);
        $prev = (int)$pdo->lastInsertId();
    }
    $st = null;
    out('prepared_insert', "executions=50 affected=$affected insert_ids_consecutive=" . ($consecutive ? 'yes' : 'no'));
    show($pdo, 'prepared_insert_read', "SELECT COUNT(*), SUM(item_id), MD5(GROUP_CONCAT(note ORDER BY id)) FROM `{$p}log`");
    // A statement prepared outside a transaction, executed inside one.
    $st = $pdo->prepare("SELECT COUNT(*) FROM `{$p}log` WHERE item_id > ?");
    $count = function () use ($st): int {
        $st->execute([0]);
        return $st->fetchAll(PDO::FETCH_COLUMN)[0];
    };
    $before = $count();
    $pdo->exec('BEGIN');
    $pdo->exec("INSERT INTO `{$p}log` (item_id, note) VALUES (1000, 'in tx')");
    $during = $count();
    $pdo->exec('ROLLBACK');
    out('prepared_in_tx', "before=$before during=$during after_rollback=" . $count());
    $st = null;

    // --- 11. reads right after writes (all prepared) --------------------------------
    $upd = $pdo->prepare("UPDATE `{$p}items` SET qty = ? WHERE id = 1");
    $add = $pdo->prepare("INSERT INTO `{$p}items` (id, grp, name) VALUES (?, 99, 'new')");
    $del = $pdo->prepare("DELETE FROM `{$p}items` WHERE id = ?");
    $stale = 0;
    for ($i = 1; $i <= 20; $i++) {
        $upd->execute([$i]);
        $stale += vals($pdo, "SELECT qty FROM `{$p}items` WHERE id = ?", [1]) === fmt($i) ? 0 : 1;
        $add->execute([1000 + $i]);
        $stale += vals($pdo, "SELECT COUNT(*) FROM `{$p}items` WHERE id = ?", [1000 + $i]) === fmt(1) ? 0 : 1;
        $del->execute([1000 + $i]);
        $stale += vals($pdo, "SELECT COUNT(*) FROM `{$p}items` WHERE grp = ?", [99]) === fmt(0) ? 0 : 1;
    }
    out('read_after_write', "iterations=20 stale=$stale");

    // --- 12. warnings ------------------------------------------------------------------
    $pdo->exec("SET sql_mode = ''");
    $pdo->exec("INSERT INTO `{$p}warn` (id, v) VALUES (1, 300)");
    out('warning_insert', warnings($pdo));
    $pdo->prepare("INSERT INTO `{$p}warn` (id, v) VALUES (?, ?)")->execute([2, -300]);
    out('warning_insert_prepared', warnings($pdo));
    show($pdo, 'warning_value', "SELECT GROUP_CONCAT(v ORDER BY id) FROM `{$p}warn`");
    show($pdo, 'warning_sql_mode_restored', 'SELECT @@sql_mode = @saved_mode', 'SET sql_mode = @saved_mode');
    $v = vals($pdo, "SELECT CAST('12abc' AS SIGNED)"); // a warning from a read
    out('warning_select', $v . ' ' . warnings($pdo));

    // --- 13. cleanup ---------------------------------------------------------------
    $pdo->exec("DROP TABLE IF EXISTS $tables");
    out('drop', 'ok');
    $pdo = null;
    echo "done\n";
});
