<?php
// Client test with PHP mysqli (mysqlnd). Run against MariaDB directly and
// through the proxy: stdout must be identical in both cases.
//
// Env: DB_HOST DB_PORT DB_USER DB_PASSWORD DB_NAME TEST_TABLE_PREFIX
// Usage: php tests/clients/mysqli.php
//
// LOAD DATA LOCAL needs the PHP_INI_SYSTEM setting mysqli.allow_local_infile,
// which ini_set() cannot change: without it the program re-runs itself with
// `-d mysqli.allow_local_infile=1`.

declare(strict_types=1);

if (!ini_get('mysqli.allow_local_infile') && getenv('WEICHE_MYSQLI_REEXEC') === false) {
    putenv('WEICHE_MYSQLI_REEXEC=1');
    $cmd = escapeshellarg(PHP_BINARY) . ' -d mysqli.allow_local_infile=1 ' . escapeshellarg(__FILE__);
    passthru($cmd, $rc);
    exit($rc);
}

require __DIR__ . '/common.php';

// Errors become mysqli_sql_exception.
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

function connect(array $c): mysqli
{
    $m = mysqli_init();
    $m->options(MYSQLI_OPT_LOCAL_INFILE, true);
    // DB_COMPRESS=1: the compressed protocol.
    $flags = getenv('DB_COMPRESS') === '1' ? MYSQLI_CLIENT_COMPRESS : 0;
    $m->real_connect($c['host'], $c['user'], $c['password'], $c['db'], $c['port'], null, $flags);
    $m->set_charset('utf8mb4');
    return $m;
}

function scalar(mysqli $m, string $sql)
{
    $r = $m->query($sql);
    $row = $r->fetch_row();
    $r->free();
    return $row[0];
}

/** Column metadata as relayed by the server (or proxy). */
function fmt_fields(mysqli_result $r): string
{
    $parts = [];
    foreach ($r->fetch_fields() as $f) {
        $parts[] = sprintf('%s/type=%d/len=%d/flags=%d/dec=%d/cs=%d',
            $f->name, $f->type, $f->length, $f->flags, $f->decimals, $f->charsetnr);
    }
    return implode(' ', $parts);
}

run_main(function () {
    $c = env_config();
    $p = $c['prefix'];
    $m = connect($c);
    out('connect', 'ok database=' . scalar($m, 'SELECT DATABASE()')
        . ' charset=' . $m->character_set_name());
    $r = $m->query("SHOW STATUS LIKE 'Compression'")->fetch_row();
    out('compression', $r[1]);

    // --- schema ---------------------------------------------------------
    foreach (ddl($p) as $sql) {
        $m->query($sql);
    }
    out('create', 'ok');

    // --- prepared insert with parameters of every type --------------------
    $st = $m->prepare("INSERT INTO `{$p}types` (id, i, bu, d, f, s, b, dt, ts, n)"
        . ' VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
    $id = $i = $n = null;
    $bu = $d = $s = $b = $dt = $ts = null;
    $f = null;
    // bigint unsigned and decimal go as strings (exact), double as double.
    $st->bind_param('iissdssssi', $id, $i, $bu, $d, $f, $s, $b, $dt, $ts, $n);
    $affected = 0;
    foreach (type_rows() as $row) {
        [$id, $i, $bu, $d, $f, $s, $b, $dt, $ts, $n] = $row;
        $st->execute();
        $affected += $st->affected_rows;
    }
    $st->close();
    out('insert', "prepared rows=$affected");

    // --- read back: binary protocol (prepared) and text protocol ----------
    $cols = 'id, i, bu, d, f, s, b, dt, ts, n';
    $st = $m->prepare("SELECT $cols FROM `{$p}types` WHERE id >= ? ORDER BY id");
    $one = 1;
    $st->bind_param('i', $one);
    $st->execute();
    $r = $st->get_result();
    out('select_prepared_fields', fmt_fields($r));
    while ($row = $r->fetch_assoc()) {
        out('select_prepared', fmt_row($row));
    }
    $st->close();
    $r = $m->query("SELECT $cols FROM `{$p}types` ORDER BY id");
    out('select_text_fields', fmt_fields($r));
    while ($row = $r->fetch_assoc()) {
        out('select_text', fmt_row($row));
    }
    $r->free();
    out('select_blob_sql', implode(' ', array_map('fmt', $m->query(
        "SELECT LENGTH(b), SHA1(b), HEX(s) FROM `{$p}types` WHERE id = 1")->fetch_row())));

    // --- transaction with rollback ----------------------------------------
    $count = "SELECT COUNT(*) FROM `{$p}types`";
    $before = scalar($m, $count);
    $m->begin_transaction();
    $m->query("INSERT INTO `{$p}types` (id, s) VALUES (10, 'rolled back')");
    $during = scalar($m, $count);
    $m->rollback();
    $after = scalar($m, $count);
    out('transaction', "before=$before during=$during after_rollback=$after");

    // --- multi-statement query ---------------------------------------------
    $m->multi_query("INSERT INTO `{$p}types` (id, i) VALUES (20, 7);"
        . " SELECT COUNT(*) AS c FROM `{$p}types`;"
        . " SELECT id, i, s FROM `{$p}types` WHERE id IN (1, 20) ORDER BY id");
    $set = 0;
    do {
        $set++;
        $r = $m->store_result();
        if ($r === false) {
            out('multi', "result$set affected=" . $m->affected_rows);
            continue;
        }
        $rows = [];
        while ($row = $r->fetch_assoc()) {
            $rows[] = '[' . fmt_row($row) . ']';
        }
        $r->free();
        out('multi', "result$set rows=" . implode(' ', $rows));
    } while ($m->more_results() && $m->next_result());
    out('multi', "results=$set after=" . scalar($m, 'SELECT 1'));

    // --- LOAD DATA LOCAL INFILE of a generated ~20 MB file -----------------
    $file = make_load_file();
    try {
        $m->query("LOAD DATA LOCAL INFILE '" . $m->real_escape_string($file)
            . "' INTO TABLE `{$p}load` FIELDS TERMINATED BY '\\t' LINES TERMINATED BY '\\n'"
            . ' (id, k, s)');
        out('load_data', 'bytes=' . filesize($file) . ' affected=' . $m->affected_rows
            . ' info=' . str_replace('  ', ' ', (string)$m->info));
    } finally {
        remove_load_file($file);
    }
    out('load_data_check', fmt_row($m->query(load_checksum_sql($p))->fetch_assoc()));

    // --- 20 MiB blob round trips (more than one 16 MiB packet) -------------
    $big = big_blob();
    out('big_blob', 'generated ' . fmt($big));
    // 1: prepared statement, blob as an ordinary string parameter (one
    //    COM_STMT_EXECUTE larger than 16 MiB).
    $st = $m->prepare("INSERT INTO `{$p}big` (id, b) VALUES (?, ?)");
    $bid = 1;
    $st->bind_param('is', $bid, $big);
    $st->execute();
    $st->close();
    // 2: prepared statement, blob streamed with COM_STMT_SEND_LONG_DATA.
    $st = $m->prepare("INSERT INTO `{$p}big` (id, b) VALUES (?, ?)");
    $bid = 2;
    $null = null;
    $st->bind_param('ib', $bid, $null);
    foreach (str_split($big, 1 << 20) as $chunk) {
        $st->send_long_data(1, $chunk);
    }
    $st->execute();
    $st->close();
    // 3: text protocol, escaped string literal.
    $m->query("INSERT INTO `{$p}big` (id, b) VALUES (3, '" . $m->real_escape_string($big) . "')");
    // Read back: binary protocol and text protocol.
    $st = $m->prepare("SELECT id, b FROM `{$p}big` WHERE id >= ? ORDER BY id");
    $st->bind_param('i', $one);
    $st->execute();
    $r = $st->get_result();
    while ($row = $r->fetch_assoc()) {
        out('big_blob_prepared', fmt_row($row) . ' same=' . ($row['b'] === $big ? 'yes' : 'no'));
    }
    $st->close();
    $r = $m->query("SELECT id, b FROM `{$p}big` ORDER BY id");
    while ($row = $r->fetch_assoc()) {
        out('big_blob_text', fmt_row($row) . ' same=' . ($row['b'] === $big ? 'yes' : 'no'));
    }
    $r->free();
    $r = $m->query("SELECT id, LENGTH(b) AS len, SHA1(b) AS sha1 FROM `{$p}big` ORDER BY id");
    while ($row = $r->fetch_assoc()) {
        out('big_blob_sql', fmt_row($row));
    }
    $r->free();
    unset($big);

    // --- KILL QUERY from a second connection --------------------------------
    // The id is the one the driver got in the handshake (what a proxy hands
    // out), not CONNECTION_ID(). KILL is repeated until the sleep ends, in case
    // the first one arrives before the query runs.
    $victim = connect($c);
    $killer = connect($c);
    $tid = $victim->thread_id;
    $t0 = microtime(true);
    $victim->query('SELECT SLEEP(30) AS slept', MYSQLI_ASYNC);
    usleep(300000);
    $lastKill = 0.0;
    while (true) {
        if (microtime(true) - $lastKill >= 1.0) {
            $killer->query("KILL QUERY $tid");
            $lastKill = microtime(true);
        }
        $read = $error = $reject = [$victim];
        if (mysqli::poll($read, $error, $reject, 0, 100000) > 0) {
            break;
        }
        if (microtime(true) - $t0 > 40) {
            throw new RuntimeException('SELECT SLEEP(30) did not finish');
        }
    }
    try {
        $r = $victim->reap_async_query();
        $v = $r->fetch_row()[0];
        $r->free();
        $how = ((string)$v === '1') ? 'interrupted' : "not interrupted (returned $v)";
    } catch (mysqli_sql_exception $e) {
        if ($e->getCode() !== 1317) {
            throw $e;
        }
        $how = 'interrupted';
    }
    $elapsed = microtime(true) - $t0;
    out('kill', "sleep $how under_10s=" . ($elapsed < 10 ? 'yes' : 'no')
        . ' victim_alive=' . scalar($victim, 'SELECT 1'));
    if ($how !== 'interrupted' || $elapsed >= 10) {
        throw new RuntimeException(sprintf('KILL QUERY failed: %s after %.1f s', $how, $elapsed));
    }
    $victim->close();
    $killer->close();

    // --- cleanup -------------------------------------------------------------
    $m->query("DROP TABLE `{$p}types`, `{$p}load`, `{$p}big`");
    out('drop', 'ok');
    $m->close();
});
