//! A TCP proxy in front of Postgres that counts the client's round trips to the server.
//!
//! It reads the frontend half of the wire protocol as it forwards it and counts the
//! messages after which a client waits for the server's `ReadyForQuery`: `Sync` (`S`,
//! the end of an extended-protocol exchange: `Parse`/`Bind`/`Execute`…) and simple
//! `Query` (`Q`). A client that pipelines several of these before waiting (sqlx does so
//! for a queued `ROLLBACK`) makes fewer real round trips than are counted.
//!
//! What sqlx sends (`tests/pg_wire.rs` shows each): one `Sync` per prepared statement
//! it runs, and one more the first time a connection prepares it; `BEGIN` and `COMMIT`
//! as simple queries; and its pool pings a connection (one `Sync`) before lending it
//! (`test_before_acquire`, on by default; the store turns it off) and again when it
//! comes back (always), so one statement on a default pool outside a transaction is
//! three round trips, and two on the store's.
//!
//! In a store-level test, point the store at the proxy and count one call. The pool's
//! ping on return runs in a task of its own after the call has returned, so wait for
//! the connection to be back in the pool before resetting and before reading:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use std::time::Duration;
//!
//! let database = sable_testkit::TestDatabase::create().await?;
//! let counter = sable_testkit::RoundTripCounter::in_front_of(&database.url).await?;
//! let options = sable_store::StoreOptions::default();
//! let store = sable_store::PgStore::connect_lazy(&counter.proxied_url(&database.url), &options)?;
//! let back_in_pool = || async { store.pool().num_idle() == store.pool().size() as usize };
//! let wait = Duration::from_secs(5);
//! store.ping().await?; // opens the pool's connection: not part of what is counted
//! sable_testkit::eventually("idle pool", wait, back_in_pool).await?;
//! counter.reset();
//! store.ping().await?;
//! sable_testkit::eventually("idle pool", wait, back_in_pool).await?;
//! assert_eq!(counter.round_trips(), 2); // the statement, return (ping)
//! # Ok(())
//! # }
//! ```
//!
//! The stream must stay plaintext to be read, so the proxy answers a client's
//! `SSLRequest` and `GSSENCRequest` itself with `N` (no encryption here), as a server
//! without TLS would: `sslmode=prefer` falls back to plaintext, `sslmode=require` fails.
//! [`RoundTripCounter::proxied_url`] sets `sslmode=disable`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};

/// The request codes of the untyped packets a connection may open with.
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;

/// Forwards 127.0.0.1:<port> to a Postgres server and counts the round trips of every
/// connection made through it.
pub struct RoundTripCounter {
    addr: SocketAddr,
    counts: Arc<Counts>,
    accept_task: tokio::task::JoinHandle<()>,
}

/// What every connection has counted, together.
#[derive(Default)]
struct Counts {
    round_trips: AtomicU64,
    pings: AtomicU64,
}

impl RoundTripCounter {
    /// Starts the proxy on a free port of 127.0.0.1, in front of the server at
    /// `upstream`. Needs a Tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let accept_task = tokio::spawn(accept_loop(listener, upstream, counts.clone()));
        Ok(Self {
            addr,
            counts,
            accept_task,
        })
    }

    /// Starts the proxy in front of the server that `database_url` names (its host and
    /// port; a Unix socket path is refused).
    pub async fn in_front_of(database_url: &str) -> io::Result<Self> {
        let options: PgConnectOptions = database_url
            .parse()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        if options.get_socket().is_some() || options.get_host().starts_with('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{database_url} names a Unix socket; the counter needs TCP"),
            ));
        }
        let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} does not resolve", options.get_host()),
                )
            })?;
        Self::start(upstream).await
    }

    /// Where clients connect instead of the server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `database_url` (`postgres://user@host:port/database?…`) pointed at the proxy: the
    /// same user, database and parameters, this proxy's address, and `sslmode=disable`.
    pub fn proxied_url(&self, database_url: &str) -> String {
        let (scheme, rest) = database_url
            .split_once("://")
            .unwrap_or(("postgres", database_url));
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let user = authority
            .rsplit_once('@')
            .map(|(user, _)| format!("{user}@"))
            .unwrap_or_default();
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let mut parameters: Vec<&str> = query
            .split('&')
            .filter(|parameter| {
                !parameter.is_empty()
                    && !["sslmode=", "host=", "port="]
                        .iter()
                        .any(|name| parameter.starts_with(name))
            })
            .collect();
        parameters.push("sslmode=disable");
        format!(
            "{scheme}://{user}{}{path}?{}",
            self.addr,
            parameters.join("&")
        )
    }

    /// Round trips counted since the start or the last [`RoundTripCounter::reset`], over
    /// every connection.
    pub fn round_trips(&self) -> u64 {
        self.counts.round_trips.load(Ordering::SeqCst)
    }

    /// Of [`RoundTripCounter::round_trips`], those that carried no statement: a `Sync`
    /// with nothing before it since the last round trip, which is how sqlx pings a
    /// connection (its pool does, before lending one and when one comes back).
    pub fn pings(&self) -> u64 {
        self.counts.pings.load(Ordering::SeqCst)
    }

    /// Starts counting from zero again (connections stay open).
    pub fn reset(&self) {
        self.counts.round_trips.store(0, Ordering::SeqCst);
        self.counts.pings.store(0, Ordering::SeqCst);
    }
}

impl Drop for RoundTripCounter {
    /// Stops accepting connections; those already open keep being forwarded.
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, counts: Arc<Counts>) {
    while let Ok((client, _)) = listener.accept().await {
        let counts = counts.clone();
        tokio::spawn(async move {
            // An I/O error ends this connection only, as a broken socket to the server
            // would; the client sees the connection close and reports it.
            let _ = forward(client, upstream, counts).await;
        });
    }
}

/// One client connection: the opening packets, then both directions until either ends.
async fn forward(
    mut client: TcpStream,
    upstream: SocketAddr,
    counts: Arc<Counts>,
) -> io::Result<()> {
    // Small messages both ways: without this, Nagle's algorithm and delayed ACKs would add
    // tens of milliseconds to some round trips.
    client.set_nodelay(true)?;
    let (startup_header, startup_length) = decline_encryption(&mut client).await?;
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    server_write.write_all(&startup_header).await?;
    let mut frontend = FrontendMessages::after_startup_header(startup_length);
    let to_server = async {
        copy_counting(client_read, &mut server_write, &mut frontend, &counts).await?;
        server_write.shutdown().await
    };
    let to_client = async {
        tokio::io::copy(&mut server_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::select! {
        result = to_server => result,
        result = to_client => result,
    }
}

/// Answers `N` to every `SSLRequest` and `GSSENCRequest` the client opens with, and
/// returns the header (length and code) of the first other untyped packet: a
/// `StartupMessage`, or a `CancelRequest`, with its length.
async fn decline_encryption(client: &mut TcpStream) -> io::Result<([u8; 8], u32)> {
    loop {
        let mut header = [0u8; 8];
        client.read_exact(&mut header).await?;
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let code = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if length == 8 && (code == SSL_REQUEST || code == GSSENC_REQUEST) {
            client.write_all(b"N").await?;
            continue;
        }
        return Ok((header, length));
    }
}

/// Forwards the client's bytes as they come, counting the round trips among them.
async fn copy_counting(
    mut client: OwnedReadHalf,
    server: &mut tokio::net::tcp::OwnedWriteHalf,
    frontend: &mut FrontendMessages,
    counts: &Counts,
) -> io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = client.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        let seen = frontend.feed(&buffer[..read]);
        if seen.round_trips > 0 {
            counts
                .round_trips
                .fetch_add(seen.round_trips, Ordering::SeqCst);
            counts.pings.fetch_add(seen.pings, Ordering::SeqCst);
        }
        server.write_all(&buffer[..read]).await?;
    }
}

/// Where the frontend stream is: typed messages (a type byte, a big-endian length that
/// counts itself, the body) split anywhere across reads.
#[derive(Debug)]
struct FrontendMessages {
    header: [u8; 5],
    header_filled: usize,
    body_left: usize,
    /// A message other than `Sync` came since the last round trip.
    statement_pending: bool,
}

/// Round trips that began in one read, and how many of them were pings.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    round_trips: u64,
    pings: u64,
}

impl FrontendMessages {
    /// After the first 8 bytes (length and code) of an untyped packet of `length` bytes.
    fn after_startup_header(length: u32) -> Self {
        Self {
            header: [0; 5],
            header_filled: 0,
            body_left: usize::try_from(length.saturating_sub(8)).unwrap_or(usize::MAX),
            statement_pending: false,
        }
    }

    /// Reads `bytes` and returns the round trips that began in them.
    fn feed(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let skipped = self.body_left.min(bytes.len());
                self.body_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let taken = (self.header.len() - self.header_filled).min(bytes.len());
            self.header[self.header_filled..self.header_filled + taken]
                .copy_from_slice(&bytes[..taken]);
            self.header_filled += taken;
            bytes = &bytes[taken..];
            if self.header_filled == self.header.len() {
                self.header_filled = 0;
                let [kind, length @ ..] = self.header;
                // The length counts its own four bytes; a shorter one is malformed and
                // read as an empty body.
                let length = u32::from_be_bytes(length).saturating_sub(4);
                self.body_left = usize::try_from(length).unwrap_or(usize::MAX);
                match kind {
                    b'S' => {
                        seen.round_trips += 1;
                        seen.pings += u64::from(!self.statement_pending);
                        self.statement_pending = false;
                    }
                    b'Q' => {
                        seen.round_trips += 1;
                        self.statement_pending = false;
                    }
                    _ => self.statement_pending = true,
                }
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let length = u32::try_from(body.len() + 4).expect("small body");
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn extended_query() -> Vec<u8> {
        [
            message(b'P', b"\0SELECT $1\0\0\0"),
            message(b'B', b"\0\0\0\0\0\0\0\0\0"),
            message(b'E', b"\0\0\0\0\0"),
            message(b'S', b""),
        ]
        .concat()
    }

    #[test]
    fn a_sync_and_a_simple_query_count_and_other_messages_do_not() {
        let mut frontend = FrontendMessages::after_startup_header(8);
        let stream = [extended_query(), message(b'Q', b"SELECT 1\0")].concat();
        assert_eq!(frontend.feed(&stream).round_trips, 2);
        assert_eq!(frontend.feed(&message(b'X', b"")).round_trips, 0);
    }

    #[test]
    fn messages_split_at_every_byte_are_counted_once() {
        let mut frontend = FrontendMessages::after_startup_header(8);
        let stream = [
            extended_query(),
            message(b'Q', b"BEGIN\0"),
            extended_query(),
        ]
        .concat();
        let counted: u64 = stream
            .chunks(1)
            .map(|byte| frontend.feed(byte).round_trips)
            .sum();
        assert_eq!(counted, 3);
    }

    #[test]
    fn the_rest_of_the_startup_packet_is_skipped_even_when_it_holds_an_s_or_a_q() {
        let startup_rest = b"user\0Sue\0database\0Q\0\0";
        let length = u32::try_from(8 + startup_rest.len()).expect("small packet");
        let mut frontend = FrontendMessages::after_startup_header(length);
        let stream = [startup_rest.as_slice(), &message(b'Q', b"SELECT 1\0")].concat();
        assert_eq!(frontend.feed(&stream).round_trips, 1);
    }

    #[test]
    fn a_query_string_holding_message_bytes_is_not_read_as_messages() {
        let mut frontend = FrontendMessages::after_startup_header(8);
        let tricky = message(b'Q', b"SELECT 'S\0\0\0\x04Q'\0");
        assert_eq!(frontend.feed(&tricky).round_trips, 1);
    }

    #[test]
    fn a_sync_with_no_statement_before_it_is_a_ping() {
        let mut frontend = FrontendMessages::after_startup_header(8);
        let stream = [
            message(b'S', b""),
            extended_query(),
            message(b'S', b""),
            message(b'Q', b"BEGIN\0"),
            message(b'S', b""),
        ]
        .concat();
        let seen = frontend.feed(&stream);
        assert_eq!(
            seen,
            Seen {
                round_trips: 5,
                pings: 3
            }
        );
    }

    #[tokio::test]
    async fn the_proxied_url_keeps_user_database_and_parameters_and_disables_tls() {
        let counter = RoundTripCounter::start("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("proxy starts");
        let addr = counter.addr();
        assert_eq!(
            counter.proxied_url(
                "postgres://postgres@db.example:5432/sable?sslmode=require&application_name=x"
            ),
            format!("postgres://postgres@{addr}/sable?application_name=x&sslmode=disable")
        );
        assert_eq!(
            counter.proxied_url("postgresql://u:p%40ss@localhost/db"),
            format!("postgresql://u:p%40ss@{addr}/db?sslmode=disable")
        );
    }
}
