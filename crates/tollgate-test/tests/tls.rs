//! `rediss://`: the Redis store over TLS to a server whose certificate a private CA signed.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tollgate::store::redis::{RedisConfig, RedisStore};
use tollgate::{Cost, Limiter, Subject};

struct TlsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    ca: std::path::PathBuf,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_tls_server() -> TlsServer {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let port = tollgate_test::free_port().unwrap();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert_path)
        .arg("--tls-key-file")
        .arg(&key_path)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    // Wait until the TLS port accepts connections (process readiness, not a rate window).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the TLS server did not start");
        std::thread::yield_now();
    }
    TlsServer {
        child,
        port,
        ca: cert_path,
        _dir: dir,
    }
}

#[tokio::test]
async fn decisions_over_tls_with_a_private_ca() {
    let server = start_tls_server();
    let url = format!("rediss://127.0.0.1:{}/", server.port);
    let config = RedisConfig {
        tls_ca_file: Some(server.ca.clone()),
        ..RedisConfig::default()
    };
    let store = RedisStore::connect_with(&url, config)
        .await
        .expect("a TLS connection");
    // Server time runs during the test: a daily budget refills too slowly to blur the usage.
    let policy = tollgate::Policy::builder()
        .rule(
            tollgate::Rule::builder("daily")
                .per("tenant")
                .limit(tollgate::LimitSpec::new(
                    tollgate::LimitKind::Tokens,
                    1000,
                    tollgate::Window::DAY,
                )),
        )
        .build()
        .unwrap();
    let limiter = Limiter::with_store(policy, store);
    let who = Subject::new().tenant("acme").provider("openai");
    let d = limiter.check(&who, Cost::tokens(10)).await.unwrap();
    assert!(d.is_allowed());
    assert_eq!(limiter.usage(&who).await.unwrap()[0].used, 10);

    // Without the CA the server's certificate is not trusted.
    let untrusted = RedisStore::connect(&url).await;
    match untrusted {
        Err(e) => assert!(e.is_transient(), "{e}"),
        Ok(store) => {
            let l = Limiter::with_store(tollgate::default_policy(), store);
            assert!(
                l.check(&who, Cost::ONE).await.is_err(),
                "an untrusted certificate was accepted"
            );
        }
    }
}
