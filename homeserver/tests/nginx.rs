//! The nginx example of `deploy/nginx.conf`, run by a real nginx in front of two parley
//! processes on one PostgreSQL database: accounts, a group, messages and a WebSocket, all
//! through the proxy over TLS.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{free_port, Db, TestServer};
use futures::{SinkExt, StreamExt};
use parley_client_api::Client;
use parley_sytest::device::{ClientFactory, Device};
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::tungstenite::Message;

/// A running nginx, stopped on drop.
struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGQUIT, so the master stops its workers too; SIGKILL if it lingers.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example config made runnable here: the ports, certificate and file paths of this test,
/// and nothing else changed.
fn example_config(
    dir: &std::path::Path,
    upstreams: [u16; 2],
    http: u16,
    https: u16,
    fed: u16,
) -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/nginx.conf"))
            .expect("deploy/nginx.conf");
    let d = dir.display();
    let replaced = example
        .replace("user www-data;", "")
        .replace("pid /run/nginx.pid;", &format!("pid {d}/nginx.pid;"))
        .replace("/var/log/nginx/", &format!("{d}/"))
        .replace("server 127.0.0.1:8008;", &format!("server 127.0.0.1:{};", upstreams[0]))
        .replace("server 127.0.0.1:8009;", &format!("server 127.0.0.1:{};", upstreams[1]))
        .replace("listen 80;", &format!("listen 127.0.0.1:{http};"))
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{https} ssl;"))
        .replace("listen 8448 ssl;", &format!("listen 127.0.0.1:{fed} ssl;"))
        .replace(
            "/etc/letsencrypt/live/chat.example.org/fullchain.pem",
            &format!("{d}/cert.pem"),
        )
        .replace(
            "/etc/letsencrypt/live/chat.example.org/privkey.pem",
            &format!("{d}/key.pem"),
        )
        .replace(
            "http {",
            &format!(
                "http {{\n    client_body_temp_path {d}/body;\n    proxy_temp_path {d}/proxy;\n    fastcgi_temp_path {d}/fastcgi;\n    uwsgi_temp_path {d}/uwsgi;\n    scgi_temp_path {d}/scgi;"
            ),
        );
    // This machine may have no IPv6: the test listens on IPv4 loopback only.
    replaced
        .lines()
        .filter(|l| !l.trim_start().starts_with("listen [::]"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts nginx with the example in front of `upstreams`; the certificate (for `localhost`)
/// and the HTTPS port.
async fn start_nginx(upstreams: [u16; 2]) -> (Nginx, String, u16) {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nginx is not installed: scripts/test.sh installs it (apt-get install nginx)");
    let dir = tempfile::tempdir().unwrap();
    // Workers may run as another user: they need the temporary directories.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let p = dir.path().join(sub);
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    let (http, https, fed) = (free_port(), free_port(), free_port());
    let config = example_config(dir.path(), upstreams, http, https, fed);
    let config_path = dir.path().join("nginx.conf");
    std::fs::write(&config_path, config).unwrap();
    let check = Command::new(nginx)
        .args(["-t", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "nginx -t refused the example: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(nginx)
        .args(["-g", "daemon off;", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Nginx { child, _dir: dir }, cert.pem(), https)
}

/// Clients of the front, trusting its certificate.
struct Front {
    http: reqwest::Client,
    base_url: String,
}

impl ClientFactory for Front {
    fn client(&self) -> Client {
        Client::with_http(self.http.clone(), self.base_url.clone())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_nginx_example_fronts_two_processes_messages_and_websockets_included() {
    let a = TestServer::start(Db::Postgres, "localhost", common::RELAXED_LIMITS).await;
    let b = a.sibling();
    let port = |s: &TestServer| -> u16 { s.base_url.rsplit(':').next().unwrap().parse().unwrap() };
    let (_nginx, cert_pem, https) = start_nginx([port(&a), port(&b)]).await;
    tokio::time::sleep(parley_schema::cluster::HEARTBEAT).await;
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let front = Front {
        http,
        base_url: format!("https://localhost:{https}"),
    };
    // Round-robin over two processes: every request may land on either.
    let mut alice = Device::register(&front, "alice").await.unwrap();
    let mut bob = Device::register(&front, "bob").await.unwrap();
    alice.know(&["@bob:localhost"]);
    bob.know(&["@alice:localhost"]);
    let group = alice.create_group().await.unwrap();
    alice.add(&group, &["@bob:localhost"]).await.unwrap();
    bob.sync_until(10, "the Welcome", |d| d.engine.group_ids().len() == 1)
        .await
        .unwrap();
    bob.sync_all().await.unwrap();
    for i in 0..6 {
        alice
            .send_text(&group, &format!("via nginx {i}"))
            .await
            .unwrap();
    }
    bob.sync_until(10, "the messages", |d| d.texts(&group).len() == 6)
        .await
        .unwrap();

    // The WebSocket, upgraded through nginx over TLS.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    roots.add(der).unwrap();
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https))
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{https}/_parley/client/v1/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let auth =
        serde_json::json!({"access_token": bob.client.access_token().unwrap(), "since": bob.since});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice
        .send_text(&group, "pushed through nginx")
        .await
        .unwrap();
    let frame = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no WebSocket frame through nginx within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = frame {
            let f: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
            if f["type"] == "message" {
                break f;
            }
        }
    };
    let m: parley_client_api::sync::MessageEvent = serde_json::from_value(frame).unwrap();
    bob.process(&group, &m).unwrap();
    assert_eq!(
        bob.texts(&group).last().map(String::as_str),
        Some("pushed through nginx")
    );
}
