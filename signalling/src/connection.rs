//! One socket's life: welcome, limits, heartbeats, and the copy between the
//! WebSocket and the hub.
//!
//! [`serve_socket`] is generic over any `Sink`/`Stream` of axum WebSocket messages,
//! so tests drive it with channels as well as with real sockets. It never panics on
//! input and always ends by unregistering the socket (a drop guard does it, so an
//! aborted task cleans up too), which announces the leave to the socket's swarms.

use std::fmt::Display;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, close_code};
use futures::{Sink, SinkExt, Stream, StreamExt};
use telly_proto::signal::{ClientMessage, ErrorCode, SIGNAL_VERSION, ServerMessage};
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};

use crate::hub::Hub;
use crate::limits::{SocketLimits, Strikes, TokenBucket};
use crate::rooms::ConnId;

/// Why a socket's task ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The client closed the socket or the stream ended.
    ClientClosed,
    /// The stream failed (an unreadable or oversized frame, a reset).
    Transport(String),
    /// Too many strikes.
    Abuse,
    /// Nothing heard for the idle timeout.
    Idle,
    /// In no swarm for the join timeout.
    NeverJoined,
    /// A write failed or did not finish in time.
    WriteFailed,
    /// The server is at its socket limit.
    Full,
}

/// Unregisters the socket however its task ends.
struct Registration {
    hub: Arc<Hub>,
    conn: ConnId,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.conn);
    }
}

struct Socket<W> {
    sink: W,
    limits: SocketLimits,
    conn: ConnId,
}

impl<W, E> Socket<W>
where
    W: Sink<Message, Error = E> + Unpin,
    E: Display,
{
    async fn send(&mut self, message: Message) -> Result<(), Ending> {
        match timeout(self.limits.write_timeout, self.sink.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::debug!(socket = self.conn.0, error = %e, "write failed");
                Err(Ending::WriteFailed)
            }
            Err(_) => {
                tracing::info!(socket = self.conn.0, "write timed out; dropping the socket");
                Err(Ending::WriteFailed)
            }
        }
    }

    async fn send_json(&mut self, message: &ServerMessage) -> Result<(), Ending> {
        match serde_json::to_string(message) {
            Ok(text) => self.send(Message::text(text)).await,
            Err(e) => {
                // Unreachable for these types; logged rather than trusted.
                tracing::error!(error = %e, "cannot encode a server message");
                Ok(())
            }
        }
    }

    async fn send_error(&mut self, code: ErrorCode, detail: String) -> Result<(), Ending> {
        self.send_json(&ServerMessage::Error { code, detail }).await
    }

    /// Best effort: the client may already be gone.
    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        let _ = timeout(self.limits.write_timeout, self.sink.send(frame)).await;
    }
}

/// Serves one WebSocket until it closes, misbehaves or goes silent.
pub async fn serve_socket<W, WE, R, RE>(hub: Arc<Hub>, sink: W, mut stream: R) -> Ending
where
    W: Sink<Message, Error = WE> + Unpin,
    WE: Display,
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: Display,
{
    let limits = hub.config().limits;
    let Some((conn, mut outbox)) = hub.register() else {
        let mut socket = Socket {
            sink,
            limits,
            conn: ConnId(0),
        };
        socket.close(close_code::AGAIN, "the server is full").await;
        return Ending::Full;
    };
    let _registration = Registration {
        hub: Arc::clone(&hub),
        conn,
    };
    let mut socket = Socket { sink, limits, conn };
    let ending = run(&hub, &mut socket, &mut stream, &mut outbox).await;
    match &ending {
        Ending::Abuse => {
            socket
                .close(close_code::POLICY, "too many bad messages")
                .await;
        }
        Ending::NeverJoined => socket.close(close_code::POLICY, "join a swarm").await,
        Ending::Transport(_) => socket.close(close_code::PROTOCOL, "unreadable frame").await,
        Ending::Idle | Ending::ClientClosed | Ending::WriteFailed | Ending::Full => {}
    }
    tracing::debug!(socket = conn.0, ?ending, "socket ended");
    ending
}

async fn run<W, WE, R, RE>(
    hub: &Hub,
    socket: &mut Socket<W>,
    stream: &mut R,
    outbox: &mut tokio::sync::mpsc::Receiver<ServerMessage>,
) -> Ending
where
    W: Sink<Message, Error = WE> + Unpin,
    WE: Display,
    R: Stream<Item = Result<Message, RE>> + Unpin,
    RE: Display,
{
    let limits = socket.limits;
    let conn = socket.conn;
    let started = Instant::now();
    let welcome = ServerMessage::Welcome {
        version: SIGNAL_VERSION,
        limits: limits.advertised(&hub.config().rooms),
    };
    if let Err(ending) = socket.send_json(&welcome).await {
        return ending;
    }
    let mut bucket = TokenBucket::new(limits.messages_per_second, limits.burst, started.into_std());
    let mut strikes = Strikes::new(
        limits.max_strikes,
        limits.strike_forgiveness,
        started.into_std(),
    );
    let mut last_heard = started;
    let mut unjoined_since = Some(started);
    let mut heartbeat = interval_at(
        started + limits.heartbeat_interval,
        limits.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            inbound = stream.next() => {
                let now = Instant::now();
                let frame = match inbound {
                    None => return Ending::ClientClosed,
                    Some(Err(e)) => return Ending::Transport(e.to_string()),
                    Some(Ok(frame)) => frame,
                };
                last_heard = now;
                let verdict = on_frame(hub, socket, &mut bucket, frame, now).await;
                match verdict {
                    Ok(Verdict::Fine) => {}
                    Ok(Verdict::Strike) => {
                        if strikes.add(now.into_std()) {
                            tracing::info!(socket = conn.0, "too many bad messages; closing");
                            return Ending::Abuse;
                        }
                    }
                    Ok(Verdict::Closed) => return Ending::ClientClosed,
                    Err(ending) => return ending,
                }
            }
            outgoing = outbox.recv() => {
                let Some(message) = outgoing else {
                    // Only unregistering drops the sender, and that is this task's.
                    return Ending::ClientClosed;
                };
                if let Err(ending) = socket.send_json(&message).await {
                    return ending;
                }
            }
            _ = heartbeat.tick() => {
                let now = Instant::now();
                if now.duration_since(last_heard) >= limits.idle_timeout {
                    tracing::info!(socket = conn.0, "silent socket dropped");
                    return Ending::Idle;
                }
                hub.expire(conn);
                if hub.has_joined(conn) {
                    unjoined_since = None;
                } else {
                    let since = *unjoined_since.get_or_insert(now);
                    if now.duration_since(since) >= limits.join_timeout {
                        return Ending::NeverJoined;
                    }
                }
                if let Err(ending) = socket.send(Message::Ping(Default::default())).await {
                    return ending;
                }
            }
        }
    }
}

enum Verdict {
    Fine,
    Strike,
    Closed,
}

async fn on_frame<W, WE>(
    hub: &Hub,
    socket: &mut Socket<W>,
    bucket: &mut TokenBucket,
    frame: Message,
    now: Instant,
) -> Result<Verdict, Ending>
where
    W: Sink<Message, Error = WE> + Unpin,
    WE: Display,
{
    if matches!(frame, Message::Close(_)) {
        return Ok(Verdict::Closed);
    }
    if !bucket.take(now.into_std()) {
        let detail = format!(
            "more than {} messages a second",
            socket.limits.messages_per_second
        );
        socket.send_error(ErrorCode::RateLimited, detail).await?;
        return Ok(Verdict::Strike);
    }
    let text = match frame {
        Message::Text(text) => text,
        // Heartbeat traffic: noted as heard, answered by the WebSocket layer.
        Message::Ping(_) | Message::Pong(_) => return Ok(Verdict::Fine),
        Message::Binary(_) => {
            let detail = "signalling messages are JSON text frames".to_owned();
            socket.send_error(ErrorCode::Malformed, detail).await?;
            return Ok(Verdict::Strike);
        }
        Message::Close(_) => return Ok(Verdict::Closed),
    };
    if text.len() > socket.limits.max_message_bytes {
        let detail = format!(
            "a message may be at most {} bytes, this one is {}",
            socket.limits.max_message_bytes,
            text.len()
        );
        socket.send_error(ErrorCode::TooLarge, detail).await?;
        return Ok(Verdict::Strike);
    }
    match serde_json::from_str::<ClientMessage>(text.as_str()) {
        Ok(message) => Ok(if hub.handle(socket.conn, message) {
            Verdict::Strike
        } else {
            Verdict::Fine
        }),
        Err(e) => {
            let detail: String = format!("not a signalling message: {e}")
                .chars()
                .take(200)
                .collect();
            socket.send_error(ErrorCode::Malformed, detail).await?;
            Ok(Verdict::Strike)
        }
    }
}

#[cfg(test)]
mod tests;
