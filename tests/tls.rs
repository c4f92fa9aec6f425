//! TLS on both sides: clients (the mariadb CLI, PHP mysqli and PDO, Python PyMySQL) upgrade to
//! TLS with Weiche's certificate, made here with openssl; Weiche talks TLS to the sandbox's
//! servers, whose certificates come from the sandbox's CA. Verification fails where it must:
//! a client that trusts another CA, a backend certificate Weiche cannot verify.

mod common;

use common::{app_password, app_user, host_port, Weiche};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A CA and a certificate for 127.0.0.1 signed by it, in a directory of their own.
fn make_certs(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tls-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("certificate directory");
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj '/CN=Weiche test CA' \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout ca-key.pem -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj '/CN=127.0.0.1' -keyout key.pem -out req.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext
openssl x509 -req -in req.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 \
  -extfile ext -out cert.pem";
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(&dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn sandbox_ca() -> String {
    std::env::var("WEICHE_SANDBOX_CA").expect("WEICHE_SANDBOX_CA (eval \"$(scripts/sandbox env)\")")
}

fn tls_config(certs: &Path, extra: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        certs.join("cert.pem").display(),
        certs.join("key.pem").display()
    )
}

fn backend_tls(mode: &str, ca: &str) -> String {
    if ca.is_empty() {
        format!("[backend_tls]\nmode = \"{mode}\"\n")
    } else {
        format!("[backend_tls]\nmode = \"{mode}\"\nca = \"{ca}\"\n")
    }
}

fn mariadb(addr: &str, ssl: &[&str], sql: &str) -> Output {
    let mut args = vec!["-N", "-B"];
    args.extend_from_slice(ssl);
    common::mariadb_cli(addr, &app_user(), &app_password(), &args, sql)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_mariadb_cli_talks_tls_to_weiche_and_weiche_to_the_servers() {
    let certs = make_certs("cli");
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let w = Weiche::start_config(&format!(
        "{}{}",
        tls_config(&certs, ""),
        backend_tls("verify", &sandbox_ca())
    ));
    // The client's session: `status` reports the cipher of the client's own connection; the
    // server's Ssl_version is that of Weiche's connection to the backend.
    let verified = ["--ssl", "--ssl-ca", ca, "--ssl-verify-server-cert"];
    let o = mariadb(
        &w.addr(),
        &verified,
        "status; SHOW SESSION STATUS LIKE 'Ssl_version'",
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("Cipher in use is TLS"),
        "client side not TLS:\n{out}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("Ssl_version\tTLSv1.")),
        "Weiche's backend connection is not TLS:\n{out}"
    );
    // A client that trusts another CA refuses Weiche's certificate.
    let wrong = [
        "--ssl",
        "--ssl-ca",
        &sandbox_ca(),
        "--ssl-verify-server-cert",
    ];
    let o = mariadb(&w.addr(), &wrong, "SELECT 1");
    assert!(
        !o.status.success(),
        "a certificate from another CA was accepted"
    );
    // Plain connections still work where TLS is not required.
    let o = mariadb(&w.addr(), &["--skip-ssl"], "SELECT 'plain'");
    assert!(text(&o).contains("plain"), "{}", text(&o));
    assert!(w.log_text().contains("TLS"), "the log does not mention TLS");
}

#[test]
fn compression_runs_inside_tls_on_both_sides() {
    let certs = make_certs("compress");
    let ca = certs.join("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let w = Weiche::start_primary_compressed(&format!(
        "{}{}",
        tls_config(&certs, ""),
        backend_tls("verify", &sandbox_ca())
    ));
    let args = [
        "--ssl",
        "--ssl-ca",
        ca,
        "--ssl-verify-server-cert",
        "--compress",
        "-D",
        "weiche",
    ];
    let o = mariadb(
        &w.addr(),
        &args,
        "status; SHOW STATUS LIKE 'Compression'; SHOW SESSION STATUS LIKE 'Ssl_version'; \
         SELECT seq, REPEAT('y', 200) FROM seq_1_to_100000",
    );
    let out = text(&o);
    assert!(o.status.success(), "{}", &out[..out.len().min(2000)]);
    assert!(out.contains("Cipher in use is TLS"), "client side not TLS");
    assert!(
        out.lines().any(|l| l.starts_with("Compression\tON")),
        "client side not compressed"
    );
    assert!(
        out.lines().any(|l| l.starts_with("Ssl_version\tTLSv1.")),
        "Weiche's backend connection is not TLS"
    );
    let rows = out
        .lines()
        .filter(|l| l.ends_with(&"y".repeat(200)))
        .count();
    assert_eq!(rows, 100_000, "rows of the large result");
    // The backend connection is compressed too: a prepared SHOW STATUS reaches the server,
    // which answers for Weiche's connection to it.
    let o = mariadb(
        &w.addr(),
        &args,
        "PREPARE s FROM \"SHOW STATUS LIKE 'Compression'\"; EXECUTE s",
    );
    assert!(
        text(&o).lines().any(|l| l.starts_with("Compression\tON")),
        "{}",
        text(&o)
    );
}

#[test]
fn required_tls_refuses_plain_clients_with_a_clear_error() {
    let certs = make_certs("require");
    let w = Weiche::start_config(&tls_config(&certs, "require = true\n"));
    let o = mariadb(&w.addr(), &["--skip-ssl"], "SELECT 1");
    let out = text(&o);
    assert!(!o.status.success());
    assert!(
        out.contains("3159") && out.contains("insecure transport"),
        "unexpected refusal: {out}"
    );
    let o = mariadb(&w.addr(), &["--ssl"], "SELECT 'over tls'");
    assert!(text(&o).contains("over tls"), "{}", text(&o));
}

#[test]
fn a_backend_certificate_that_does_not_verify_is_refused_unless_told_not_to_verify() {
    // Weiche is told to trust its own test CA, which did not sign the sandbox's certificates.
    let certs = make_certs("backend");
    let wrong_ca = certs.join("ca.pem");
    let wrong_ca = wrong_ca.to_str().expect("utf-8 path");
    let w = Weiche::start_config(&backend_tls("verify", wrong_ca));
    let o = mariadb(&w.addr(), &[], "SELECT 1");
    let out = text(&o);
    assert!(!o.status.success(), "an unverified backend was used: {out}");
    assert!(
        out.contains("TLS") && out.to_lowercase().contains("certificate"),
        "the error does not say why: {out}"
    );
    let w = Weiche::start_config(&backend_tls("no-verify", ""));
    let o = mariadb(&w.addr(), &[], "SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert!(text(&o).contains("TLSv1."), "{}", text(&o));
}

#[test]
fn php_and_python_clients_use_tls_through_weiche() {
    let certs = make_certs("drivers");
    let ca = certs.join("ca.pem");
    let w = Weiche::start_config(&format!(
        "{}{}",
        tls_config(&certs, "require = true\n"),
        backend_tls("verify", &sandbox_ca())
    ));
    let (host, port) = host_port(&w.addr());
    let php = r#"
$h = getenv('DB_HOST'); $p = (int)getenv('DB_PORT'); $ca = getenv('CA');
$m = mysqli_init();
$m->ssl_set(null, null, $ca, null, null);
$m->options(MYSQLI_OPT_SSL_VERIFY_SERVER_CERT, true);
$m->real_connect($h, getenv('DB_USER'), getenv('DB_PASSWORD'), 'weiche', $p, null, MYSQLI_CLIENT_SSL);
$r = $m->query("SELECT 'mysqli ok'")->fetch_row();
echo $r[0], "\n";
$pdo = new PDO("mysql:host=$h;port=$p;dbname=weiche", getenv('DB_USER'), getenv('DB_PASSWORD'),
    [PDO::MYSQL_ATTR_SSL_CA => $ca, PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT => true]);
echo $pdo->query("SELECT 'pdo ok'")->fetchColumn(), "\n";
"#;
    let python = r#"
import os, pymysql
c = pymysql.connect(host=os.environ['DB_HOST'], port=int(os.environ['DB_PORT']),
    user=os.environ['DB_USER'], password=os.environ['DB_PASSWORD'], database='weiche',
    ssl={'ca': os.environ['CA']})  # with a CA, PyMySQL verifies the certificate and the name
cur = c.cursor(); cur.execute("SELECT 'pymysql ok'")
print(cur.fetchone()[0], c._sock.version())
"#;
    for (program, args) in [
        ("php", vec!["-r", php]),
        ("/usr/bin/python3", vec!["-c", python]),
    ] {
        let o = Command::new(program)
            .args(&args)
            .env("DB_HOST", &host)
            .env("DB_PORT", port.to_string())
            .env("DB_USER", app_user())
            .env("DB_PASSWORD", app_password())
            .env("CA", &ca)
            .output()
            .expect("run the client");
        let out = text(&o);
        assert!(o.status.success(), "{program}: {out}");
        match program {
            "php" => assert!(out.contains("mysqli ok") && out.contains("pdo ok"), "{out}"),
            _ => assert!(out.contains("pymysql ok TLSv1."), "{out}"),
        }
    }
}

#[test]
fn a_bad_certificate_file_stops_the_start_with_its_reason() {
    let dir = make_certs("bad");
    let check = |toml: &str| {
        let path = dir.join("weiche.toml");
        std::fs::write(&path, toml).expect("write config");
        Command::new(env!("CARGO_BIN_EXE_weiche"))
            .args(["--config", path.to_str().expect("utf-8"), "--check-config"])
            .args(["-b", "127.0.0.1:1", "--user", "a:b"])
            .output()
            .expect("run weiche")
    };
    let o = check(&format!(
        "[tls]\ncert = \"{0}/nonexistent.pem\"\nkey = \"{0}/key.pem\"\n",
        dir.display()
    ));
    assert!(!o.status.success());
    assert!(text(&o).contains("nonexistent.pem"), "{}", text(&o));
    // The CA's key does not belong to the certificate.
    let o = check(&format!(
        "[tls]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/ca-key.pem\"\n",
        dir.display()
    ));
    assert!(!o.status.success());
    assert!(text(&o).contains("does not fit"), "{}", text(&o));
}

#[test]
fn a_config_file_that_every_user_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls-perms");
    std::fs::create_dir_all(&dir).expect("directory");
    let path = dir.join("weiche.toml");
    std::fs::write(&path, "[[users]]\nname = \"a\"\npassword = \"secret\"\n").expect("write");
    let check = |mode: u32| {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let o = Command::new(env!("CARGO_BIN_EXE_weiche"))
            .args(["--config", path.to_str().expect("utf-8"), "--check-config"])
            .args(["-b", "127.0.0.1:1"])
            .output()
            .expect("run weiche");
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    assert!(check(0o644).contains("every local user can read it"));
    assert!(!check(0o640).contains("can read it"));
}
