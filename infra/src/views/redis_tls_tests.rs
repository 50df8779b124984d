//! The Redis view store over TLS, against a real `redis-server` listening only on a TLS port
//! with a certificate made here (rcgen): a private CA, a server certificate for `localhost`
//! signed by it, and an access key as the password, as Azure Cache for Redis has them (port
//! 6380, TLS only, key auth). The whole conformance suite runs over it, then what is specific
//! to TLS: the bulk writer on the same TLS, the system roots refusing a private CA, another
//! CA's certificate refused, a wrong key refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use projections::view_store::{Doc, ViewStore};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use uuid::Uuid;

use super::RedisViewStore;

/// The access key, with the characters a base64 key has (so the URL must percent-encode it).
const KEY: &str = "k3y/with+base64=";
const KEY_IN_URL: &str = "k3y%2Fwith%2Bbase64%3D";

/// A CA's certificate as PEM, and what it signs with.
fn certificate_authority(name: &str) -> (String, CertifiedIssuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a CA key"))
        .expect("a CA certificate");
    (issuer.pem(), issuer)
}

/// A `redis-server` with TLS on a port of its own and no plain port, killed on drop.
pub(crate) struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (ca_pem, ca) = certificate_authority("orderflow test CA");
        let server_key = KeyPair::generate().expect("a server key");
        let params = CertificateParams::new(vec!["localhost".to_owned()]).expect("parameters");
        let server = params
            .signed_by(&server_key, &ca)
            .expect("a server certificate");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("a certificate file");
            path
        };
        let ca_file = write("ca.pem", &ca_pem);
        let cert = write("server.pem", &server.pem());
        let key = write("server.key", &server_key.serialize_pem());
        // A port the kernel had free; if another process takes it first, start again.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    "0",
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(&key)
                .arg("--tls-ca-cert-file")
                .arg(&ca_file)
                .args(["--requirepass", KEY])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs (Debian's is built with TLS)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server with --tls-port did not start");
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The store URL: `rediss://`, the key as password, this server's CA, a fresh prefix.
    pub(crate) fn url(&self) -> String {
        self.url_with(KEY_IN_URL, Some(&self.ca_file()))
    }

    fn url_with(&self, key: &str, ca_file: Option<&Path>) -> String {
        let prefix = format!("tls-{}", Uuid::new_v4().simple());
        let ca = ca_file.map_or(String::new(), |path| {
            format!("&ca-file={}", urlencoding::encode(&path.to_string_lossy()))
        });
        format!(
            "rediss://:{key}@localhost:{}?prefix={prefix}{ca}",
            self.port
        )
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tls_fixture() -> (Arc<dyn ViewStore>, TlsRedis) {
    let server = TlsRedis::start();
    let store = RedisViewStore::connect(&server.url())
        .await
        .expect("the store connects over TLS");
    (Arc::new(store), server)
}

mod conformance_over_tls {
    projections::view_store_conformance!(super::tls_fixture());
}

/// A replay's bulk writes (the store's own connections, not fred's) go over the same TLS and
/// key: the server has no plain port to take them otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_writes_go_over_tls() {
    let server = TlsRedis::start();
    let store = RedisViewStore::connect(&server.url())
        .await
        .expect("connects");
    let docs = (0..500)
        .map(|i| {
            let doc = Doc {
                version: 1,
                body: format!(r#"{{"n":{i}}}"#),
            };
            (format!("order:{i}"), doc)
        })
        .collect();

    store
        .overwrite_many(docs)
        .await
        .expect("bulk writes over TLS");
    store
        .index_add_many(vec![("orders".into(), 7, "order:7".into())])
        .await
        .expect("bulk index over TLS");

    let read = store.get("order:499").await.expect("read back");
    assert_eq!(read.map(|d| d.body), Some(r#"{"n":499}"#.to_owned()));
    let page = store.index_page("orders", None, 10).await.expect("page");
    assert_eq!(page, vec![(7, "order:7".to_owned())]);
}

/// Without `ca-file` the system's roots are trusted, and they do not know a private CA: the
/// connection is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_roots_do_not_trust_a_private_ca() {
    let server = TlsRedis::start();

    let refused = RedisViewStore::connect(&server.url_with(KEY_IN_URL, None)).await;

    let error = refused.err().expect("refused").to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// A server certificate signed by another CA than the one named is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cas_certificate_is_refused() {
    let server = TlsRedis::start();
    let other = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(other.path(), certificate_authority("someone else").0).expect("written");

    let refused = RedisViewStore::connect(&server.url_with(KEY_IN_URL, Some(other.path()))).await;

    let error = refused.err().expect("refused").to_string();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// A wrong access key is refused by the server, and the key is not in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_access_key_is_refused() {
    let server = TlsRedis::start();

    let refused =
        RedisViewStore::connect(&server.url_with("not-the-key", Some(&server.ca_file()))).await;

    let error = refused.err().expect("refused").to_string();
    assert!(!error.contains("not-the-key"), "the key leaked: {error}");
}
