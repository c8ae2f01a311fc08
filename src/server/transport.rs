//! A connection's two halves, plaintext or TLS: the reader ([`ReadHalf`]) and the writer
//! ([`WriteHalf`]) wait independently, each on its own handle of the socket (the writer's is a
//! dup), as the connection loop wants them.
//!
//! TLS (rustls): the handshake runs first, on one handle, bounded by the caller's deadline
//! ([`handshake`]). Then both halves share the connection's one `rustls::ServerConnection`
//! through an `Rc<RefCell<..>>` on the shard's executor, borrowed only between awaits, never
//! across one: the reader moves ciphertext from its socket handle into rustls and plaintext
//! out; the writer moves plaintext in and ciphertext out to its handle. Only the writer ever
//! writes to the socket, so TLS records leave in rustls' order; what the reader makes rustls
//! queue (a KeyUpdate answer) leaves with the next answer, which is enough for Kafka's
//! request-response exchange.
//!
//! Lives on: the shard that accepted the socket.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::ServerConnection;

/// Ciphertext bytes asked of the socket per read (a TLS record is at most about 16 KiB).
const CIPHER_READ_BYTES: usize = 64 * 1024;
/// rustls' bound on queued ciphertext; the writer sends once this much is queued, and on flush.
pub const SENDABLE_TLS_BYTES: usize = 256 * 1024;

/// Why a TLS handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the connection closed during the TLS handshake")]
    Closed,
    #[error(
        "the client spoke plaintext Kafka to a TLS listener (its first bytes are a request size, \
         not a TLS record): connect with TLS (security.protocol=SSL or SASL_SSL)"
    )]
    PlaintextOnTls,
    #[error("no TLS handshake within connections_max_idle_ms")]
    Timeout,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whether the first bytes of a TLS port are a Kafka request's size prefix: a plaintext
/// client. A request under 16 MiB starts with a zero byte, which no TLS record does (content
/// types are 20-24).
fn looks_like_kafka(first: &[u8]) -> bool {
    first.first() == Some(&0)
}

/// Runs the server side of a TLS handshake over `stream` until it is complete and the
/// server's last flight (TLS 1.3 session tickets included) is written. Returns the
/// ciphertext that arrived after the handshake (the start of the client's first request),
/// for the reader.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    conn: &mut ServerConnection,
) -> Result<Vec<u8>, HandshakeError> {
    let mut buf = vec![0u8; CIPHER_READ_BYTES];
    let mut out = Vec::new();
    let mut first = true;
    loop {
        while conn.wants_write() {
            out.clear();
            conn.write_tls(&mut out)?;
            stream.write_all(&out).await?;
        }
        if !conn.is_handshaking() {
            stream.flush().await?;
            return Ok(Vec::new());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        if std::mem::take(&mut first) && looks_like_kafka(&buf[..n]) {
            return Err(HandshakeError::PlaintextOnTls);
        }
        let used = feed(conn, &buf[..n])?;
        if !conn.is_handshaking() {
            while conn.wants_write() {
                out.clear();
                conn.write_tls(&mut out)?;
                stream.write_all(&out).await?;
            }
            stream.flush().await?;
            return Ok(buf[used..n].to_vec());
        }
    }
}

/// Hands ciphertext to rustls, record by record, until it is all taken or the handshake is
/// complete (what follows it is the reader's). Returns how many bytes were taken. Errors on
/// anything rustls refuses; never panics on any input (see the TLS fuzz target).
pub fn feed(conn: &mut ServerConnection, data: &[u8]) -> Result<usize, HandshakeError> {
    let mut rest = data;
    while !rest.is_empty() && conn.is_handshaking() {
        let n = conn.read_tls(&mut rest)?;
        conn.process_new_packets()?;
        if n == 0 {
            // A close_notify: nothing more is read.
            return Err(HandshakeError::Closed);
        }
    }
    Ok(data.len() - rest.len())
}

/// Runs [`handshake`] over `input`, handed over `step` bytes at a time, then the end of the
/// stream; what the server writes is dropped. The TLS fuzz target and its CI test feed
/// arbitrary bytes through this: it must return (Ok or Err), never panic.
pub fn handshake_from_bytes(
    conn: &mut ServerConnection,
    input: &[u8],
    step: usize,
) -> Result<Vec<u8>, HandshakeError> {
    let mut stream = MemStream {
        input,
        step: step.max(1),
    };
    futures_lite::future::block_on(handshake(&mut stream, conn))
}

/// An in-memory peer for [`handshake_from_bytes`].
struct MemStream<'a> {
    input: &'a [u8],
    step: usize,
}

impl AsyncRead for MemStream<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let n = self.input.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        std::task::Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MemStream<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The reading half of a connection.
pub enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsRead),
}

/// The writing half of a connection.
pub enum WriteHalf {
    Plain(TcpStream),
    Tls(TlsWrite),
}

impl ReadHalf {
    /// Reads plaintext into `buf`; 0 at the end of the stream.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf).await,
            ReadHalf::Tls(t) => t.read(buf).await,
        }
    }
}

impl WriteHalf {
    /// Queues `buf` for the peer (plaintext: written; TLS: encrypted, written once rustls'
    /// queue is full or on [`WriteHalf::flush`]).
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(buf).await,
            WriteHalf::Tls(t) => t.write_all(buf).await,
        }
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.flush().await,
            WriteHalf::Tls(t) => t.flush().await,
        }
    }

    /// The socket underneath (for TCP_CORK).
    pub fn socket(&self) -> &TcpStream {
        match self {
            WriteHalf::Plain(s) => s,
            WriteHalf::Tls(t) => &t.sock,
        }
    }

    /// The socket, when bytes written to it reach the peer as they are (sendfile may write
    /// there): a plaintext connection. A TLS one goes through the copying path.
    pub fn plain_socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            WriteHalf::Plain(s) => Some(s),
            WriteHalf::Tls(_) => None,
        }
    }
}

/// Both TLS halves of a connection whose handshake is complete: `read_sock` and
/// `write_sock` are two handles of its socket, `leftover` the ciphertext [`handshake`] read
/// past the handshake.
pub fn tls_halves(
    conn: ServerConnection,
    read_sock: TcpStream,
    write_sock: TcpStream,
    leftover: Vec<u8>,
) -> (ReadHalf, WriteHalf) {
    let mut conn = conn;
    conn.set_buffer_limit(Some(SENDABLE_TLS_BYTES));
    let conn = Rc::new(RefCell::new(conn));
    let len = leftover.len();
    let cipher = leftover;
    (
        ReadHalf::Tls(TlsRead {
            sock: read_sock,
            conn: conn.clone(),
            cipher,
            pos: 0,
            len,
        }),
        WriteHalf::Tls(TlsWrite {
            sock: write_sock,
            conn,
            out: Vec::new(),
        }),
    )
}

/// The reader's side of a TLS connection.
pub struct TlsRead {
    sock: TcpStream,
    conn: Rc<RefCell<ServerConnection>>,
    /// Ciphertext read from the socket; `pos..len` not yet handed to rustls. Allocated for a
    /// read and given back once rustls took it all and the socket had no more, so an idle
    /// connection holds no read buffer here (as on plaintext).
    cipher: Vec<u8>,
    pos: usize,
    len: usize,
}

impl TlsRead {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                // Borrowed until the end of this block: no await inside.
                let mut c = self.conn.borrow_mut();
                match c.reader().read(buf) {
                    // 0: the peer's close_notify, a clean end.
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
                if self.pos < self.len {
                    let mut rest = &self.cipher[self.pos..self.len];
                    let n = c.read_tls(&mut rest)?;
                    self.pos += n;
                    c.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if n == 0 {
                        // rustls takes nothing more after a close_notify.
                        return Ok(0);
                    }
                    if self.pos == self.len && self.len < self.cipher.len() {
                        // The last read did not fill the buffer: the socket had no more.
                        self.cipher = Vec::new();
                        (self.pos, self.len) = (0, 0);
                    }
                    continue;
                }
            }
            if self.cipher.len() < CIPHER_READ_BYTES {
                self.cipher = vec![0; CIPHER_READ_BYTES];
            }
            let n = self.sock.read(&mut self.cipher).await?;
            if n == 0 {
                // Closed without a close_notify: the end of the stream, as on plaintext.
                return Ok(0);
            }
            self.pos = 0;
            self.len = n;
        }
    }
}

/// The writer's side of a TLS connection.
pub struct TlsWrite {
    sock: TcpStream,
    conn: Rc<RefCell<ServerConnection>>,
    /// Ciphertext on its way to the socket (at most about [`SENDABLE_TLS_BYTES`]); given back
    /// once rustls' queue is empty.
    out: Vec<u8>,
}

impl TlsWrite {
    async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.conn.borrow_mut().writer().write(data)?;
            data = &data[n..];
            if !data.is_empty() {
                // rustls' queue is full: send it, then go on.
                self.send_queued().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.send_queued().await?;
        self.sock.flush().await
    }

    /// Writes the ciphertext rustls holds, in its order.
    async fn send_queued(&mut self) -> io::Result<()> {
        loop {
            self.out.clear();
            {
                let mut c = self.conn.borrow_mut();
                while c.wants_write() && self.out.len() < SENDABLE_TLS_BYTES {
                    c.write_tls(&mut self.out)?;
                }
            }
            if self.out.is_empty() {
                self.out = Vec::new();
                return Ok(());
            }
            self.sock.write_all(&self.out).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plaintext_kafka_request_is_told_from_a_tls_record() {
        assert!(looks_like_kafka(&[0, 0, 0, 20, 0, 18]));
        assert!(!looks_like_kafka(&[0x16, 3, 1, 0, 200]));
        assert!(!looks_like_kafka(&[]));
    }
}
