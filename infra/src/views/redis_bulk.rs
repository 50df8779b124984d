//! The Redis view store's bulk writes, in Redis's own protocol on connections of their own:
//! what Redis's documentation calls mass insertion ("Redis mass insertion", generate the
//! protocol and send it in one stream), which `redis-cli --pipe` does.
//!
//! Why not through fred: a replay writes about 600,000 commands per million events. One
//! `EVAL` of a bulk Lua script per thousand writes cost Redis 5 to 6 µs of CPU per `HSET`
//! (3.9 to 4.5 per `ZADD`), against 3.2 to 3.6 for the same commands sent plain; sent plain
//! through fred's pipelines, each command cost the client more than Redis saved (2 to 3 CPU-s
//! more per million events). Written here, a command is a few bytes appended to a buffer, and
//! its answer a line read back.
//!
//! A batch is written whole while its answers are read; every answer is checked, and any
//! error answer fails the batch (its other commands may have run: the callers write
//! documents nobody reads yet, and a failed replay deletes its generation). A connection that
//! failed or timed out is dropped; the others are kept for the next batch, and a batch whose
//! kept connection turns out to be closed goes again on a new one. Over `rediss://` each
//! connection is TLS, with the store's rustls configuration and the URL's host as the name.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use projections::view_store::ViewError;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One bulk connection, plain or TLS.
enum Connection {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// Where to connect, and what to send first on each new connection.
pub(crate) struct Bulk {
    host: String,
    port: u16,
    /// `AUTH` and `SELECT` as the URL asks and `CLIENT SETNAME`, already encoded.
    hello: Commands,
    /// Over `rediss://`: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: std::sync::Mutex<Vec<Connection>>,
    timeout: Duration,
}

/// Commands encoded one after another, and how many there are.
#[derive(Default)]
pub(crate) struct Commands {
    buf: Vec<u8>,
    count: usize,
}

impl Commands {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Appends one command (`*N` then `$len` and the bytes of each argument).
    pub(crate) fn push(&mut self, args: &[&[u8]]) {
        self.header(b'*', args.len());
        for arg in args {
            self.header(b'$', arg.len());
            self.buf.extend_from_slice(arg);
            self.buf.extend_from_slice(b"\r\n");
        }
        self.count += 1;
    }

    /// `*N\r\n` or `$len\r\n`, the number written straight into the buffer (six per
    /// `HSET`, a million and more per replay).
    fn header(&mut self, kind: u8, n: usize) {
        use std::io::Write;
        self.buf.push(kind);
        // Writing to a Vec cannot fail.
        let _ = write!(self.buf, "{n}\r\n");
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Bulk {
    /// Bulk writes to the Redis at `host:port`, authenticating and selecting the database as
    /// the store's `config` says; each connection is named `name` in `CLIENT LIST`.
    pub(crate) fn new(
        name: &str,
        (host, port): (String, u16),
        config: &fred::types::config::Config,
        tls: Option<Arc<rustls::ClientConfig>>,
        timeout: Duration,
    ) -> Result<Self, ViewError> {
        let mut hello = Commands::default();
        match (config.username.as_deref(), config.password.as_deref()) {
            (Some(user), Some(password)) => {
                hello.push(&[b"AUTH", user.as_bytes(), password.as_bytes()]);
            }
            (None, Some(password)) => hello.push(&[b"AUTH", password.as_bytes()]),
            _ => {}
        }
        if let Some(db) = config.database {
            hello.push(&[b"SELECT", db.to_string().as_bytes()]);
        }
        hello.push(&[b"CLIENT", b"SETNAME", name.as_bytes()]);
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| unavailable(format!("Redis TLS: the host {host}: {e}")))?;
                Some((TlsConnector::from(config), name))
            }
            None => None,
        };
        Ok(Self {
            host,
            port,
            hello,
            tls,
            idle: std::sync::Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// Sends `commands` and checks every answer.
    pub(crate) async fn run(&self, commands: Commands) -> Result<(), ViewError> {
        if commands.is_empty() {
            return Ok(());
        }
        let idle = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
        if let Some(connection) = idle {
            // A kept connection may have been closed since (Redis restarted, a client kill):
            // then the batch goes again on a new one. Every command in it is an overwrite,
            // so running part of it twice changes nothing.
            if let Ok(()) = self.exchange(connection, &commands).await {
                return Ok(());
            }
        }
        let connection = self.open().await?;
        self.exchange(connection, &commands).await
    }

    /// One batch on `connection`, which is kept for the next batch if all went well.
    async fn exchange(
        &self,
        mut connection: Connection,
        commands: &Commands,
    ) -> Result<(), ViewError> {
        match tokio::time::timeout(self.timeout, send_and_check(&mut connection, commands)).await {
            Ok(Ok(())) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(connection);
                }
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ViewError::Unavailable(format!(
                "Redis did not answer {} bulk writes within {:?}",
                commands.count, self.timeout
            ))),
        }
    }

    async fn open(&self) -> Result<Connection, ViewError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let connection = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| {
                unavailable(format!(
                    "connecting to {}:{} timed out",
                    self.host, self.port
                ))
            })?
            .map_err(|e| unavailable(format!("connecting to {}:{}: {e}", self.host, self.port)))?;
        // Nagle would hold the tail of each batch back for the answers to the head.
        connection.set_nodelay(true).map_err(io_error)?;
        let mut connection = match &self.tls {
            None => Connection::Plain(connection),
            Some((connector, name)) => {
                let handshake = connector.connect(name.clone(), connection);
                let stream = tokio::time::timeout(self.timeout, handshake)
                    .await
                    .map_err(|_| unavailable("Redis TLS handshake timed out".into()))?
                    .map_err(|e| unavailable(format!("Redis TLS handshake: {e}")))?;
                Connection::Tls(Box::new(stream))
            }
        };
        if !self.hello.is_empty() {
            tokio::time::timeout(self.timeout, send_and_check(&mut connection, &self.hello))
                .await
                .map_err(|_| {
                    unavailable("Redis did not answer AUTH, SELECT or SETNAME".into())
                })??;
        }
        Ok(connection)
    }
}

/// Writes `commands` while reading their answers (a batch is larger than the socket's
/// buffers, and Redis answers as it reads).
async fn send_and_check(connection: &mut Connection, commands: &Commands) -> Result<(), ViewError> {
    let (read, mut write) = tokio::io::split(connection);
    let send = async {
        write.write_all(&commands.buf).await.map_err(io_error)?;
        write.flush().await.map_err(io_error)
    };
    let answers = read_answers(BufReader::new(read), commands.count);
    tokio::try_join!(send, answers).map(drop)
}

/// Reads `count` answers; the first error answer among them is the result.
async fn read_answers<R: AsyncRead + Unpin>(
    mut read: BufReader<R>,
    count: usize,
) -> Result<(), ViewError> {
    let mut line = Vec::with_capacity(64);
    let mut first_error = None;
    for _ in 0..count {
        skip_answer(&mut read, &mut line, &mut first_error).await?;
    }
    match first_error {
        Some(error) => Err(ViewError::Unavailable(format!(
            "Redis refused a bulk write: {error}"
        ))),
        None => Ok(()),
    }
}

/// Reads one answer of RESP2: a status, an error, an integer or a bulk string (what `HSET`,
/// `ZADD`, `AUTH` and `SELECT` give).
async fn skip_answer<R: AsyncRead + Unpin>(
    read: &mut BufReader<R>,
    line: &mut Vec<u8>,
    first_error: &mut Option<String>,
) -> Result<(), ViewError> {
    line.clear();
    let n = read.read_until(b'\n', line).await.map_err(io_error)?;
    if n < 3 || !line.ends_with(b"\r\n") {
        return Err(unavailable("Redis closed the connection mid-answer".into()));
    }
    let body = &line[1..line.len() - 2];
    match line[0] {
        b'+' | b':' => Ok(()),
        b'-' => {
            first_error.get_or_insert_with(|| String::from_utf8_lossy(body).into_owned());
            Ok(())
        }
        b'$' => {
            if let Ok(len) = usize::try_from(length(body)?) {
                let mut skip = vec![0; len + 2];
                tokio::io::AsyncReadExt::read_exact(read, &mut skip)
                    .await
                    .map_err(io_error)?;
            }
            Ok(())
        }
        other => Err(unavailable(format!(
            "Redis answered a bulk write with {:?}",
            char::from(other)
        ))),
    }
}

fn length(text: &[u8]) -> Result<i64, ViewError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            unavailable(format!(
                "Redis sent a bad length {:?}",
                String::from_utf8_lossy(text)
            ))
        })
}

fn io_error(e: std::io::Error) -> ViewError {
    unavailable(format!("Redis bulk write: {e}"))
}

fn unavailable(reason: String) -> ViewError {
    ViewError::Unavailable(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_resp_arrays_of_bulk_strings() {
        let mut commands = Commands::default();
        commands.push(&[b"HSET", b"k", b"v", b"1", b"b", b"{\"a\":\"\r\n\"}"]);
        commands.push(&[b"PING"]);
        assert_eq!(commands.count, 2);
        assert_eq!(
            String::from_utf8(commands.buf).unwrap(),
            "*6\r\n$4\r\nHSET\r\n$1\r\nk\r\n$1\r\nv\r\n$1\r\n1\r\n$1\r\nb\r\n$10\r\n{\"a\":\"\r\n\"}\r\n\
             *1\r\n$4\r\nPING\r\n"
        );
    }

    #[tokio::test]
    async fn every_answer_is_read_and_the_first_error_is_the_result() {
        let answers: &[u8] =
            b"+OK\r\n:1\r\n-WRONGTYPE Operation against a key\r\n$3\r\nabc\r\n$-1\r\n-ERR later\r\n";
        let error = read_answers(BufReader::new(answers), 6).await.unwrap_err();
        assert!(error.to_string().contains("WRONGTYPE"), "{error}");
        let fine: &[u8] = b":0\r\n:1\r\n";
        read_answers(BufReader::new(fine), 2).await.unwrap();
        let short: &[u8] = b":0\r\n";
        assert!(read_answers(BufReader::new(short), 2).await.is_err());
    }
}
