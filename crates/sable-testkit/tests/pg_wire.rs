//! The round-trip and commit counters against the shared test Postgres
//! ([`sable_testkit::shared_admin_url`], trust authentication).

use std::time::Duration;

use sable_testkit::{CommitCounter, RoundTripCounter};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn admin_url() -> String {
    sable_testkit::shared_admin_url()
}

/// A counter in front of the test server and a connection through it, counted from zero.
async fn counted_connection() -> (RoundTripCounter, PgConnection) {
    let counter = RoundTripCounter::in_front_of(&admin_url())
        .await
        .expect("counter starts");
    let connection = PgConnection::connect(&counter.proxied_url(&admin_url()))
        .await
        .expect("connects through the counter");
    counter.reset();
    (counter, connection)
}

#[tokio::test]
async fn three_simple_queries_are_three_round_trips() {
    let (counter, mut connection) = counted_connection().await;
    for _ in 0..3 {
        connection.execute("SELECT 1").await.expect("query");
    }
    assert_eq!((counter.round_trips(), counter.pings()), (3, 0));
}

#[tokio::test]
async fn begin_insert_commit_is_three_round_trips() {
    let (counter, mut connection) = counted_connection().await;
    connection
        .execute("CREATE TEMPORARY TABLE counted (n int)")
        .await
        .expect("temporary table");
    counter.reset();
    let mut transaction = connection.begin().await.expect("begin");
    transaction
        .execute("INSERT INTO counted VALUES (1)")
        .await
        .expect("insert");
    transaction.commit().await.expect("commit");
    assert_eq!(counter.round_trips(), 3);
}

#[tokio::test]
async fn a_prepared_statement_costs_one_more_round_trip_the_first_time_a_connection_runs_it() {
    let (counter, mut connection) = counted_connection().await;
    let select = || sqlx::query_scalar::<_, i32>("SELECT $1::int4 + 1").bind(41);
    assert_eq!(
        select().fetch_one(&mut connection).await.expect("first"),
        42
    );
    assert_eq!(counter.round_trips(), 2, "prepare, then execute");
    counter.reset();
    select().fetch_one(&mut connection).await.expect("second");
    assert_eq!(counter.round_trips(), 1, "the statement is cached");
}

/// Round trips (and pings among them) of one statement on a pool of one idle connection,
/// counted until the connection is back in the pool.
async fn pooled_statement_round_trips(test_before_acquire: bool) -> (u64, u64) {
    let counter = RoundTripCounter::in_front_of(&admin_url())
        .await
        .expect("counter starts");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(test_before_acquire)
        .connect(&counter.proxied_url(&admin_url()))
        .await
        .expect("pool connects");
    let back_in_pool = || async { pool.num_idle() == 1 };
    sable_testkit::eventually(
        "the connection back in the pool",
        Duration::from_secs(5),
        back_in_pool,
    )
    .await
    .expect("idle connection");
    counter.reset();
    pool.execute("SELECT 1").await.expect("query");
    // sqlx pings a connection when it comes back, in a task of its own.
    sable_testkit::eventually(
        "the connection back in the pool",
        Duration::from_secs(5),
        back_in_pool,
    )
    .await
    .expect("released connection");
    (counter.round_trips(), counter.pings())
}

#[tokio::test]
async fn a_pooled_statement_is_three_round_trips_a_ping_before_lending_the_connection_and_one_after()
 {
    assert_eq!(pooled_statement_round_trips(true).await, (3, 2));
}

#[tokio::test]
async fn without_test_before_acquire_a_pooled_statement_is_two_round_trips() {
    assert_eq!(pooled_statement_round_trips(false).await, (2, 1));
}

#[tokio::test]
async fn a_client_asking_for_tls_is_declined_and_then_counted_in_plaintext() {
    let options: PgConnectOptions = admin_url().parse().expect("url");
    let counter = RoundTripCounter::in_front_of(&admin_url())
        .await
        .expect("counter starts");
    let mut socket = TcpStream::connect(counter.addr()).await.expect("connects");
    // SSLRequest: length 8, code 80877103.
    socket
        .write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("ssl request");
    assert_eq!(socket.read_u8().await.expect("answer"), b'N');
    let user = options.get_username();
    let database = options.get_database().unwrap_or(user);
    let mut startup = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for value in ["user", user, "database", database, ""] {
        startup.extend_from_slice(value.as_bytes());
        startup.push(0);
    }
    let length = u32::try_from(startup.len() + 4).expect("short packet");
    socket
        .write_all(&[length.to_be_bytes().as_slice(), &startup].concat())
        .await
        .expect("startup");
    read_until_ready(&mut socket).await;
    assert_eq!(counter.round_trips(), 0, "start-up is not a round trip");
    socket
        .write_all(b"Q\0\0\0\x0dSELECT 1\0")
        .await
        .expect("query");
    read_until_ready(&mut socket).await;
    assert_eq!(counter.round_trips(), 1);
}

/// Reads backend messages up to `ReadyForQuery` (`Z`); panics on `ErrorResponse` (`E`).
async fn read_until_ready(socket: &mut TcpStream) {
    loop {
        let kind = socket.read_u8().await.expect("message type");
        let length = socket.read_u32().await.expect("message length");
        let mut body = vec![0; usize::try_from(length - 4).expect("length")];
        socket.read_exact(&mut body).await.expect("message body");
        assert_ne!(
            kind,
            b'E',
            "server error: {}",
            String::from_utf8_lossy(&body)
        );
        if kind == b'Z' {
            return;
        }
    }
}

#[tokio::test]
async fn a_writing_transaction_counts_as_one_commit_and_a_read_as_none() {
    let mut connection = PgConnection::connect(&admin_url()).await.expect("connects");
    connection
        .execute("CREATE TEMPORARY TABLE written (n int)")
        .await
        .expect("temporary table");
    let mut commits = CommitCounter::connect(&admin_url())
        .await
        .expect("counter connects");
    // The count is server-wide: other tests writing to the same server add to it, never
    // take from it. Tries until a quiet moment gives the exact count.
    let mut counts = Vec::new();
    for _ in 0..20 {
        commits.reset().await.expect("reset");
        connection.execute("SELECT 1").await.expect("read");
        connection
            .execute("INSERT INTO written VALUES (1)")
            .await
            .expect("write");
        counts.push(commits.commits().await.expect("count"));
        if counts.last() == Some(&1) {
            break;
        }
    }
    assert!(counts.iter().all(|count| *count >= 1), "{counts:?}");
    assert_eq!(counts.last(), Some(&1), "{counts:?}");
}

#[tokio::test]
async fn a_store_ping_through_the_counter_is_two_round_trips() -> anyhow::Result<()> {
    let database = sable_testkit::TestDatabase::create().await?;
    let counter = RoundTripCounter::in_front_of(&database.url).await?;
    let options = sable_store::StoreOptions::default();
    let store = sable_store::PgStore::connect_lazy(&counter.proxied_url(&database.url), &options)?;
    let back_in_pool = || async { store.pool().num_idle() == store.pool().size() as usize };
    let wait = Duration::from_secs(5);
    store.ping().await?;
    sable_testkit::eventually("idle pool", wait, back_in_pool).await?;
    counter.reset();
    store.ping().await?;
    sable_testkit::eventually("idle pool", wait, back_in_pool).await?;
    // The store's pool pings a connection before lending it only after it sat idle
    // (`test_before_acquire` is off); sqlx always pings it when it comes back.
    assert_eq!(counter.round_trips(), 2, "the statement, return (ping)");
    Ok(())
}

#[tokio::test]
async fn the_write_ahead_log_count_covers_a_row_written_in_between() -> anyhow::Result<()> {
    let database = sable_testkit::TestDatabase::create().await?;
    let mut connection = PgConnection::connect(&database.url).await?;
    // Stored as written (no compression): the row puts at least its bytes in the log.
    connection
        .execute(
            "CREATE TABLE written (body text); ALTER TABLE written ALTER body SET STORAGE EXTERNAL",
        )
        .await?;
    let mut commits = CommitCounter::connect(&database.url).await?;
    commits.reset().await?;
    connection
        .execute("INSERT INTO written SELECT string_agg(md5(n::text), '') FROM generate_series(1, 4000) n")
        .await?;
    let bytes = commits.wal_bytes().await?;
    assert!(
        bytes >= 4000 * 32,
        "{bytes} bytes of log for a 128,000-byte row"
    );
    Ok(())
}

#[tokio::test]
async fn unusual_settings_name_autovacuum_exactly_when_the_server_has_it_off() -> anyhow::Result<()>
{
    let mut connection = PgConnection::connect(&admin_url()).await?;
    let (autovacuum,): (String,) = sqlx::query_as("SHOW autovacuum")
        .fetch_one(&mut connection)
        .await?;
    let mut commits = CommitCounter::connect(&admin_url()).await?;
    let unusual = commits.unusual_settings().await?;
    assert_eq!(
        unusual.contains(&"autovacuum=off".to_owned()),
        autovacuum == "off",
        "SHOW autovacuum says {autovacuum}, the list {unusual:?}"
    );
    Ok(())
}
