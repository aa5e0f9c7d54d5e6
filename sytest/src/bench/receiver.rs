//! WebSocket receivers: each holds one authenticated `/ws` connection and logs the receipt
//! time of every message frame by (group, seq). While `verify` is set (the warm-up), it also
//! decrypts each message with its MLS engine, proving the relay end to end; during the
//! measured phases it only parses the frame, so the bench's CPU goes to the load.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::{SinkExt, StreamExt};
use parley_client_api::client::unb64;
use parley_client_api::sync::{WsAuth, WsEvent, WS_PATH};
use parley_mls::{DeviceRef, Envelope, StaticDeviceKeys};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::setup;
use parley_sytest::device::Device;

/// A `/ws` connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// (group index, seq, receipt time).
pub type Receipt = (u32, u64, Instant);

/// The fields of a pushed frame the measurement needs.
#[derive(serde::Deserialize)]
struct Light<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    group_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
}

/// `ws://…/_parley/client/v1/ws` for a server's `http://…` base URL.
pub fn ws_url(base_url: &str) -> String {
    format!("{}{WS_PATH}", base_url.replacen("http", "ws", 1))
}

/// Connects, authenticates with the first frame and waits for the server's first push
/// (the key-package count), which shows the connection is authenticated and subscribed.
pub async fn connect(url: &str, access_token: &str, since: Option<&str>) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .context("WebSocket connect")?;
    let auth = WsAuth {
        access_token: access_token.to_owned(),
        since: since.map(str::to_owned),
    };
    ws.send(Message::text(serde_json::to_string(&auth)?))
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .context("no frame within 30 s of authenticating")?;
    match first {
        Some(Ok(Message::Text(_))) => Ok(ws),
        other => anyhow::bail!("WebSocket closed after authentication: {other:?}"),
    }
}

/// Shared state of one running receiver.
pub struct Receiver {
    pub receipts: Arc<Mutex<Vec<Receipt>>>,
    pub decrypted: Arc<AtomicU64>,
    pub failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver for `device` on the server at `base_url`.
    pub async fn start(
        mut device: Device,
        base_url: &str,
        groups: Arc<HashMap<String, u32>>,
        keys: StaticDeviceKeys,
        verify: Arc<AtomicBool>,
    ) -> anyhow::Result<Receiver> {
        let mut ws = connect(
            &ws_url(base_url),
            setup::access_token(&device),
            device.since.as_deref(),
        )
        .await?;
        let receipts = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
        let decrypted = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(tokio::sync::Notify::new());
        let (r, d, f, s) = (
            receipts.clone(),
            decrypted.clone(),
            failures.clone(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    _ = s.notified() => break,
                    frame = ws.next() => frame,
                };
                let at = Instant::now();
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        lock(&f).push(format!("{}: WebSocket error: {e}", device.user_id));
                        break;
                    }
                    None => {
                        lock(&f).push(format!("{}: WebSocket closed", device.user_id));
                        break;
                    }
                };
                let Ok(light) = serde_json::from_str::<Light>(text.as_str()) else {
                    lock(&f).push(format!("{}: unreadable frame", device.user_id));
                    continue;
                };
                if light.kind != "message" {
                    continue;
                }
                let (Some(gid), Some(seq)) = (light.group_id.as_deref(), light.seq) else {
                    continue;
                };
                let Some(&index) = groups.get(gid) else {
                    continue;
                };
                lock(&r).push((index, seq, at));
                if verify.load(Ordering::Relaxed) {
                    match decrypt(&mut device, text.as_str(), &keys) {
                        Ok(()) => {
                            d.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => lock(&f).push(format!("{}: {e:#}", device.user_id)),
                    }
                }
            }
            let _ = ws.close(None).await;
        });
        Ok(Receiver {
            receipts,
            decrypted,
            failures,
            stop,
            task,
        })
    }

    /// Takes the receipts logged so far.
    pub fn take(&self) -> Vec<Receipt> {
        std::mem::take(&mut *lock(&self.receipts))
    }

    /// The highest seq received per group index.
    pub fn max_seqs(&self, groups: usize) -> Vec<u64> {
        let mut max = vec![0; groups];
        for &(g, seq, _) in lock(&self.receipts).iter() {
            let m = &mut max[g as usize];
            *m = (*m).max(seq);
        }
        max
    }

    /// Closes the connection.
    pub async fn stop(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decrypts one pushed message frame with the device's engine.
fn decrypt(device: &mut Device, text: &str, keys: &StaticDeviceKeys) -> anyhow::Result<()> {
    let WsEvent::Message {
        group_id, message, ..
    } = serde_json::from_str::<WsEvent>(text)?
    else {
        anyhow::bail!("not a message frame");
    };
    let envelope = Envelope {
        sender: Some(DeviceRef::new(
            &message.sender.user_id,
            &message.sender.device_id,
        )?),
        epoch: message.epoch,
        ts: message.ts,
        adds: Vec::new(),
        removes: Vec::new(),
    };
    let bytes = unb64(&message.message).context("message base64")?;
    let events = device
        .engine
        .process(&group_id, &bytes, &envelope, keys)
        .with_context(|| format!("seq {} of {group_id}", message.seq))?;
    anyhow::ensure!(
        events
            .iter()
            .any(|e| matches!(e, parley_mls::Event::ApplicationMessage { .. })),
        "seq {} decrypted to no application message",
        message.seq
    );
    Ok(())
}
