<?php
// Client test with PHP PDO (pdo_mysql on mysqlnd), server-side prepares
// (ATTR_EMULATE_PREPARES false). Run against MariaDB directly and through the
// proxy: stdout must be identical in both cases.
//
// Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
// Usage: php tests/clients/pdo.php
//
// KILL QUERY is skipped: PDO does not expose the connection id the driver got
// in the handshake, and CONNECTION_ID() is the backend's id behind a proxy.

declare(strict_types=1);

require __DIR__ . '/common.php';

function connect(array $c): PDO
{
    $dsn = sprintf('mysql:host=%s;port=%d;dbname=%s;charset=utf8mb4', $c['host'], $c['port'], $c['db']);
    return new PDO($dsn, $c['user'], $c['password'], [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,      // real COM_STMT_PREPARE/EXECUTE
        PDO::MYSQL_ATTR_LOCAL_INFILE => true,
        PDO::MYSQL_ATTR_MULTI_STATEMENTS => true,
        PDO::ATTR_STRINGIFY_FETCHES => false,
        // DB_COMPRESS=1: the compressed protocol.
        PDO::MYSQL_ATTR_COMPRESS => getenv('DB_COMPRESS') === '1',
    ]);
}

/** A statement sent with the text protocol (COM_QUERY), not prepared on the server. */
// (pdo_mysql ignores ATTR_EMULATE_PREPARES given to prepare(): switch the
// connection's attribute around the call instead.)
function text_query(PDO $pdo, string $sql): PDOStatement
{
    $pdo->setAttribute(PDO::ATTR_EMULATE_PREPARES, true);
    try {
        $st = $pdo->prepare($sql);
        $st->execute();
    } finally {
        $pdo->setAttribute(PDO::ATTR_EMULATE_PREPARES, false);
    }
    return $st;
}

function scalar(PDO $pdo, string $sql)
{
    return $pdo->query($sql)->fetchColumn();
}

function fmt_meta(PDOStatement $st): string
{
    $parts = [];
    for ($i = 0; $i < $st->columnCount(); $i++) {
        $m = $st->getColumnMeta($i);
        $parts[] = sprintf('%s/%s/len=%d/prec=%d/flags=%s', $m['name'], $m['native_type'] ?? '-',
            $m['len'], $m['precision'], implode(',', $m['flags']));
    }
    return implode(' ', $parts);
}

run_main(function () {
    $c = env_config();
    $p = $c['prefix'];
    $pdo = connect($c);
    out('connect', 'ok database=' . scalar($pdo, 'SELECT DATABASE()')
        . ' charset=' . scalar($pdo, 'SELECT @@character_set_client')
        . ' emulate_prepares=' . var_export($pdo->getAttribute(PDO::ATTR_EMULATE_PREPARES), true));
    $r = $pdo->query("SHOW STATUS LIKE 'Compression'")->fetch(PDO::FETCH_NUM);
    out('compression', $r[1]);

    // --- schema ---------------------------------------------------------
    foreach (ddl($p) as $sql) {
        $pdo->exec($sql);
    }
    out('create', 'ok');

    // --- prepared insert with parameters of every type --------------------
    $st = $pdo->prepare("INSERT INTO `{$p}types` (id, i, bu, d, f, s, b, dt, ts, n)"
        . ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
    $affected = 0;
    foreach (type_rows() as $row) {
        [$id, $i, $bu, $d, $f, $s, $b, $dt, $ts, $n] = $row;
        $st->bindValue(1, $id, PDO::PARAM_INT);
        $st->bindValue(2, $i, $i === null ? PDO::PARAM_NULL : PDO::PARAM_INT);
        $st->bindValue(3, $bu, $bu === null ? PDO::PARAM_NULL : PDO::PARAM_STR); // > PHP_INT_MAX
        $st->bindValue(4, $d, $d === null ? PDO::PARAM_NULL : PDO::PARAM_STR);   // exact decimal
        $st->bindValue(5, $f === null ? null : json_encode($f), $f === null ? PDO::PARAM_NULL : PDO::PARAM_STR);
        $st->bindValue(6, $s, $s === null ? PDO::PARAM_NULL : PDO::PARAM_STR);
        $st->bindValue(7, $b, $b === null ? PDO::PARAM_NULL : PDO::PARAM_LOB);
        $st->bindValue(8, $dt, $dt === null ? PDO::PARAM_NULL : PDO::PARAM_STR);
        $st->bindValue(9, $ts, $ts === null ? PDO::PARAM_NULL : PDO::PARAM_STR);
        $st->bindValue(10, $n, $n === null ? PDO::PARAM_NULL : PDO::PARAM_INT);
        $st->execute();
        $affected += $st->rowCount();
    }
    $st->closeCursor();
    out('insert', "prepared rows=$affected");

    // --- read back: binary protocol (prepared) and text protocol ----------
    $cols = 'id, i, bu, d, f, s, b, dt, ts, n';
    $st = $pdo->prepare("SELECT $cols FROM `{$p}types` WHERE id >= ? ORDER BY id");
    $st->execute([1]);
    out('select_prepared_meta', fmt_meta($st));
    while ($row = $st->fetch(PDO::FETCH_ASSOC)) {
        out('select_prepared', fmt_row($row));
    }
    $st = null;
    $st = text_query($pdo, "SELECT $cols FROM `{$p}types` ORDER BY id");
    out('select_text_meta', fmt_meta($st));
    while ($row = $st->fetch(PDO::FETCH_ASSOC)) {
        out('select_text', fmt_row($row));
    }
    out('select_blob_sql', implode(' ', array_map('fmt', $pdo->query(
        "SELECT LENGTH(b), SHA1(b), HEX(s) FROM `{$p}types` WHERE id = 1")->fetch(PDO::FETCH_NUM))));

    // --- transaction with rollback ----------------------------------------
    $count = "SELECT COUNT(*) FROM `{$p}types`";
    $before = scalar($pdo, $count);
    $pdo->beginTransaction();
    $pdo->exec("INSERT INTO `{$p}types` (id, s) VALUES (10, 'rolled back')");
    $during = scalar($pdo, $count);
    $pdo->rollBack();
    $after = scalar($pdo, $count);
    out('transaction', "before=$before during=$during after_rollback=$after");

    // --- multi-statement query (text protocol: cannot be prepared) ---------
    // Free the previous statement first: pdo_mysql's statement destructor drains
    // pending result sets on the connection, i.e. this query's later ones.
    $st = null;
    $st = text_query($pdo, "INSERT INTO `{$p}types` (id, i) VALUES (20, 7);"
        . " SELECT COUNT(*) AS c FROM `{$p}types`;"
        . " SELECT id, i, s FROM `{$p}types` WHERE id IN (1, 20) ORDER BY id");
    $set = 0;
    do {
        $set++;
        if ($st->columnCount() === 0) {
            out('multi', "result$set affected=" . $st->rowCount());
            continue;
        }
        $rows = [];
        foreach ($st->fetchAll(PDO::FETCH_ASSOC) as $row) {
            $rows[] = '[' . fmt_row($row) . ']';
        }
        out('multi', "result$set rows=" . implode(' ', $rows));
    } while ($st->nextRowset());
    $st = null;
    out('multi', "results=$set after=" . scalar($pdo, 'SELECT 1'));

    // --- LOAD DATA LOCAL INFILE of a generated ~20 MB file -----------------
    $file = make_load_file();
    try {
        $affected = $pdo->exec('LOAD DATA LOCAL INFILE ' . $pdo->quote($file)
            . " INTO TABLE `{$p}load` FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'"
            . ' (id, k, s)');
        out('load_data', 'bytes=' . filesize($file) . " affected=$affected");
    } finally {
        remove_load_file($file);
    }
    out('load_data_check', fmt_row($pdo->query(load_checksum_sql($p))->fetch(PDO::FETCH_ASSOC)));

    // --- 20 MiB blob round trips (more than one 16 MiB packet) -------------
    $big = big_blob();
    out('big_blob', 'generated ' . fmt($big));
    $st = $pdo->prepare("INSERT INTO `{$p}big` (id, b) VALUES (?, ?)");
    // 1: prepared, bound as LOB; 2: prepared, bound as string.
    $st->bindValue(1, 1, PDO::PARAM_INT);
    $st->bindValue(2, $big, PDO::PARAM_LOB);
    $st->execute();
    $st->bindValue(1, 2, PDO::PARAM_INT);
    $st->bindValue(2, $big, PDO::PARAM_STR);
    $st->execute();
    $st = null;
    // 3: text protocol, quoted string literal.
    $pdo->exec("INSERT INTO `{$p}big` (id, b) VALUES (3, " . $pdo->quote($big) . ')');
    $st = $pdo->prepare("SELECT id, b FROM `{$p}big` WHERE id >= ? ORDER BY id");
    $st->execute([1]);
    while ($row = $st->fetch(PDO::FETCH_ASSOC)) {
        out('big_blob_prepared', fmt_row($row) . ' same=' . ($row['b'] === $big ? 'yes' : 'no'));
    }
    $st = null;
    $st = text_query($pdo, "SELECT id, b FROM `{$p}big` ORDER BY id");
    while ($row = $st->fetch(PDO::FETCH_ASSOC)) {
        out('big_blob_text', fmt_row($row) . ' same=' . ($row['b'] === $big ? 'yes' : 'no'));
    }
    $st = $pdo->query("SELECT id, LENGTH(b) AS len, SHA1(b) AS sha1 FROM `{$p}big` ORDER BY id");
    while ($row = $st->fetch(PDO::FETCH_ASSOC)) {
        out('big_blob_sql', fmt_row($row));
    }
    $st = null;
    unset($big);

    // --- KILL QUERY ------------------------------------------------------------
    out('kill', 'skipped (PDO does not expose the handshake connection id)');

    // --- cleanup -------------------------------------------------------------
    $pdo->exec("DROP TABLE `{$p}types`, `{$p}load`, `{$p}big`");
    out('drop', 'ok');
});
