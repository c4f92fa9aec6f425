<?php
// Shared helpers for the PHP client tests (mysqli.php, pdo.php).
//
// Everything printed must be the same whether the program talks to MariaDB
// directly or through the proxy: no connection ids, timings, ports or hosts.

declare(strict_types=1);

error_reporting(E_ALL);
ini_set('memory_limit', '1G');
// Warnings and notices are bugs here: turn them into exceptions.
set_error_handler(function (int $no, string $msg, string $file, int $line): bool {
    throw new ErrorException($msg, 0, $no, $file, $line);
});

/** Connection settings from the environment (DB_KILL_OK is ignored). */
function env_config(): array
{
    $get = function (string $name, ?string $default = null): string {
        $v = getenv($name);
        if ($v === false || $v === '') {
            if ($default === null) {
                throw new RuntimeException("environment variable $name is required");
            }
            return $default;
        }
        return $v;
    };
    return [
        'host' => $get('DB_HOST', '127.0.0.1'),
        'port' => (int)$get('DB_PORT', '3306'),
        'user' => $get('DB_USER'),
        'password' => getenv('DB_PASSWORD') === false ? '' : (string)getenv('DB_PASSWORD'),
        'db' => $get('DB_NAME'),
        'prefix' => $get('TEST_TABLE_PREFIX', ''),
    ];
}

/** Print one labelled result line. */
function out(string $label, string $text): void
{
    echo $label, ': ', $text, "\n";
}

/** Canonical text for a fetched value, tagged with its PHP type. */
function fmt($v): string
{
    if ($v === null) {
        return 'NULL';
    }
    if (is_int($v)) {
        return 'int:' . $v;
    }
    if (is_float($v)) {
        return 'float:' . json_encode($v); // shortest round-trip form
    }
    if (is_string($v)) {
        // Printable UTF-8 is shown as is; anything else by length and SHA-1.
        if (preg_match('//u', $v) && !preg_match('/[\x00-\x1f\x7f]/', $v)) {
            return 'string:' . $v;
        }
        return sprintf('bytes:len=%d,sha1=%s', strlen($v), sha1($v));
    }
    return gettype($v) . ':' . var_export($v, true);
}

function fmt_row(array $row): string
{
    $parts = [];
    foreach ($row as $k => $v) {
        $parts[] = $k . '=' . fmt($v);
    }
    return implode(' ', $parts);
}

/** Every byte value 0x00..0xff once, in order. */
function all_bytes(): string
{
    $s = '';
    for ($i = 0; $i < 256; $i++) {
        $s .= chr($i);
    }
    return $s;
}

const BIG_BLOB_LEN = 20 * 1024 * 1024; // 20 MiB: more than one 16 MiB packet

/** Deterministic, incompressible 20 MiB: SHA-256 of a 32-bit big-endian counter. */
function big_blob(): string
{
    $parts = [];
    for ($i = 0; $i < BIG_BLOB_LEN / 32; $i++) {
        $parts[] = hash('sha256', pack('N', $i), true);
    }
    return implode('', $parts);
}

const LOAD_ROWS = 220000; // about 20 MB of text

/**
 * Write the LOAD DATA file (tab separated: id, k, s; k is \N every 1000th row)
 * into a fresh temporary directory and return its path. Same content as the
 * Python and CLI tests generate.
 */
function make_load_file(): string
{
    $dir = sys_get_temp_dir() . '/weiche-client-' . getmypid() . '-' . bin2hex(random_bytes(4));
    mkdir($dir, 0700);
    $path = $dir . '/load.tsv';
    $fh = fopen($path, 'wb');
    $buf = '';
    for ($i = 1; $i <= LOAD_ROWS; $i++) {
        $k = ($i % 1000 === 0) ? '\N' : (string)(($i * 7919) % 1000003);
        $s = str_repeat(sprintf('%08x', ($i * 2654435761) % 4294967296), 10);
        $buf .= $i . "\t" . $k . "\t" . $s . "\n";
        if (strlen($buf) > 1 << 20) {
            fwrite($fh, $buf);
            $buf = '';
        }
    }
    fwrite($fh, $buf);
    fclose($fh);
    return $path;
}

function remove_load_file(string $path): void
{
    @unlink($path);
    @rmdir(dirname($path));
}

/** Rows inserted into the types table, in column order after id. */
function type_rows(): array
{
    return [
        // id, i, bu, d, f, s, b, dt, ts, n
        [1, -2147483648, '18446744073709551615', '12345678901234.567891', 3.5,
            'Grüße, 東京 🚂', all_bytes(), '2024-02-29', '2024-02-29 23:59:58.123456', null],
        [2, 2147483647, '0', '-0.000001', -1.25e-10,
            '', '', '1000-01-01', '9999-12-31 23:59:59.999999', 42],
        [3, null, null, null, null, null, null, null, null, null],
    ];
}

/** DDL of the test tables. */
function ddl(string $prefix): array
{
    return [
        "DROP TABLE IF EXISTS `{$prefix}types`, `{$prefix}load`, `{$prefix}big`",
        "CREATE TABLE `{$prefix}types` (id INT PRIMARY KEY, i INT, bu BIGINT UNSIGNED,"
            . " d DECIMAL(20,6), f DOUBLE, s VARCHAR(100) CHARACTER SET utf8mb4, b BLOB,"
            . " dt DATE, ts DATETIME(6), n INT NULL) ENGINE=InnoDB",
        "CREATE TABLE `{$prefix}load` (id INT PRIMARY KEY, k INT NULL, s VARCHAR(100))"
            . " ENGINE=InnoDB",
        "CREATE TABLE `{$prefix}big` (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB",
    ];
}

/** Order-independent aggregate over the loaded table. */
function load_checksum_sql(string $prefix): string
{
    return "SELECT COUNT(*) AS n, COUNT(k) AS nk, SUM(k) AS sk, SUM(CRC32(s)) AS cs,"
        . " BIT_XOR(CRC32(CONCAT_WS(',', id, k, s))) AS x FROM `{$prefix}load`";
}

/** Run the program body; print unexpected errors to stderr and exit 1. */
function run_main(callable $main): void
{
    try {
        $main();
    } catch (Throwable $e) {
        fwrite(STDERR, 'FAILED: ' . get_class($e) . ' (' . $e->getCode() . '): '
            . $e->getMessage() . "\n  at " . $e->getFile() . ':' . $e->getLine() . "\n");
        exit(1);
    }
}
