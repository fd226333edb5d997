use axum::extract::ConnectInfo;

use super::*;

fn settings(header_read_timeout: Duration, idle_timeout: Duration) -> EdgeSettings {
    EdgeSettings {
        max_connections: 1,
        max_connections_per_client: 1,
        header_read_timeout,
        idle_timeout,
        body_read_timeout: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(1),
    }
}

/// The deadline, which must lie between `before + timeout` and now + `timeout`.
fn assert_deadline(clock: &ConnectionClock, before: Instant, timeout: Duration, reason: &str) {
    let (at, why) = clock.deadline();
    assert!(at >= before + timeout && at <= Instant::now() + timeout);
    assert_eq!(why, Some(reason));
}

#[test]
fn the_clock_tells_a_slow_head_from_an_idle_connection() {
    let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
    let before = Instant::now();
    let clock = Arc::new(ConnectionClock::new(settings.clone()));
    let first_head = "no complete request head within header_read_timeout";
    assert_deadline(&clock, before, Duration::from_secs(10), first_head);
    // Bytes of the first head do not move the deadline set at the accept.
    clock.bytes_read();
    assert_deadline(&clock, before, Duration::from_secs(10), first_head);

    // A request being answered has no deadline, and its body bytes change nothing.
    let guard = clock.request_started(None);
    assert_eq!(clock.deadline().1, None);
    clock.bytes_read();
    assert_eq!(clock.deadline().1, None);

    // Two at once (pipelining): busy until both are done.
    let second = clock.request_started(None);
    drop(guard);
    assert_eq!(clock.deadline().1, None);

    // Answered: idle, for idle_timeout, looked at every header_read_timeout meanwhile.
    let before = Instant::now();
    drop(second);
    let (at, why) = clock.deadline();
    assert!(
        at >= before + Duration::from_secs(10) && at <= Instant::now() + Duration::from_secs(10)
    );
    assert_eq!(why, None);
    let short_idle = Arc::new(ConnectionClock::new(self::settings(
        Duration::from_secs(10),
        Duration::from_secs(5),
    )));
    drop(short_idle.request_started(None));
    assert_eq!(short_idle.deadline().1, Some("idle for idle_timeout"));

    // The first byte of the next head starts the header clock.
    let before = Instant::now();
    clock.bytes_read();
    let slow = "request head not complete within header_read_timeout";
    assert_deadline(&clock, before, Duration::from_secs(10), slow);
}

#[test]
fn a_stalled_body_or_write_gets_idle_timeout() {
    let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
    let clock = Arc::new(ConnectionClock::new(settings.clone()));
    let _request = clock.request_started(None);
    // Progress clears a stall; a stall keeps its start however often it is seen.
    clock.body_stalled(true);
    clock.body_stalled(false);
    assert_eq!(clock.deadline().1, None);
    let before = Instant::now();
    clock.body_stalled(true);
    let body = "request body stalled for idle_timeout";
    assert_deadline(&clock, before, Duration::from_secs(60), body);
    std::thread::sleep(Duration::from_millis(5));
    clock.body_stalled(true);
    assert_deadline(&clock, before, Duration::from_secs(60), body);
    // The earlier of two stalls counts.
    clock.write_stalled(true);
    assert_deadline(&clock, before, Duration::from_secs(60), body);
    clock.body_stalled(false);
    let write = "client not reading for idle_timeout";
    assert_eq!(clock.deadline().1, Some(write));
    clock.write_stalled(false);
    assert_eq!(clock.deadline().1, None);
}

#[test]
fn a_body_has_a_deadline_until_it_is_complete() {
    let short_idle = settings(Duration::from_secs(10), Duration::from_secs(5));
    let settings = settings(Duration::from_secs(10), Duration::from_secs(60));
    let clock = Arc::new(ConnectionClock::new(settings.clone()));
    let before = Instant::now();
    let _request = clock.request_started(Some(before + Duration::from_secs(30)));
    // Before the idle stall's look, and whatever bytes arrive.
    clock.body_stalled(true);
    clock.body_stalled(false);
    let (at, why) = clock.deadline();
    assert_eq!(
        at,
        before + Duration::from_secs(30) + BODY_TIMEOUT_ANSWER_GRACE
    );
    assert_eq!(
        why,
        Some("request body not complete within body_read_timeout")
    );
    // A stall that would end sooner comes first.
    let short_idle_clock = Arc::new(ConnectionClock::new(short_idle));
    let _short_request = short_idle_clock.request_started(Some(before + Duration::from_secs(30)));
    short_idle_clock.body_stalled(true);
    assert_eq!(
        short_idle_clock.deadline().1,
        Some("request body stalled for idle_timeout")
    );
    clock.body_stalled(true);
    clock.body_stalled(false);
    clock.body_finished();
    assert_eq!(clock.deadline().1, None);
}

#[test]
fn one_client_holds_at_most_its_share_of_connections() {
    let clients = Arc::new(ClientConnections::new(2));
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let other: IpAddr = "10.0.0.7".parse().unwrap();
    let first = clients.admit(loopback).expect("first");
    let second = clients
        .admit(mapped)
        .expect("second, the same client over IPv6");
    assert!(clients.admit(loopback).is_none(), "a third is refused");
    assert!(clients.admit(mapped).is_none(), "and again (logged once)");
    let elsewhere = clients
        .admit(other)
        .expect("another client is not affected");
    assert_eq!(clients.open(loopback), 2);
    drop(first);
    assert_eq!(clients.open(loopback), 1);
    let third = clients.admit(loopback).expect("a slot is free again");
    drop((second, third, elsewhere));
    assert_eq!(clients.open(loopback), 0);
    assert!(
        clients.state().open.is_empty(),
        "no entry outlives its connections"
    );
    assert_eq!(clients.state().refusal_logged.len(), 1);
}

#[tokio::test]
async fn the_watcher_sleeps_through_a_request_and_wakes_when_it_ends() {
    let settings = settings(Duration::from_secs(10), Duration::from_millis(50));
    let clock = Arc::new(ConnectionClock::new(settings.clone()));
    let guard = clock.request_started(None);
    let watcher = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.expired().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!watcher.is_finished(), "no deadline while a request runs");
    drop(guard);
    let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the idle deadline passes")
        .unwrap();
    assert_eq!(reason, "idle for idle_timeout");
}

#[tokio::test]
async fn a_stall_in_the_first_request_is_seen_before_the_head_deadline() {
    // The watcher of a new connection sleeps until the head's deadline, an hour away.
    let settings = settings(Duration::from_secs(3600), Duration::from_millis(50));
    let clock = Arc::new(ConnectionClock::new(settings));
    let watcher = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.expired().await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _request = clock.request_started(None);
    clock.body_stalled(true);
    let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the stall is looked at within idle_timeout")
        .unwrap();
    assert_eq!(reason, "request body stalled for idle_timeout");
}

#[tokio::test]
async fn a_head_started_while_idle_is_held_to_header_read_timeout() {
    // The idle deadline is an hour away; the head's is 50 ms after its first byte.
    let settings = settings(Duration::from_millis(50), Duration::from_secs(3600));
    let clock = Arc::new(ConnectionClock::new(settings));
    drop(clock.request_started(None));
    let watcher = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.expired().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!watcher.is_finished(), "idle, with an hour to go");
    clock.bytes_read();
    let reason = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher sees the head's deadline")
        .unwrap();
    assert_eq!(
        reason,
        "request head not complete within header_read_timeout"
    );
}

#[tokio::test]
async fn handlers_see_the_peer_address_and_shutdown_closes_the_port() {
    use axum::routing::get;
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        app,
        settings(Duration::from_secs(5), Duration::from_secs(5)),
        None,
        async {
            let _ = stopped.await;
        },
    ));
    let mut stream = TcpStream::connect(address).await.unwrap();
    let client = stream.local_addr().unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with(&client.to_string()), "{response}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server stops")
        .unwrap();
    assert!(TcpStream::connect(address).await.is_err());
}

#[test]
fn tls_files_that_do_not_parse_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let err = TlsCertificates::load(&cert, &key).unwrap_err().to_string();
    assert!(err.starts_with("cannot read certificate chain"), "{err}");
    assert!(err.contains("cert.pem"), "{err}");
    std::fs::write(&cert, "not pem\n").unwrap();
    let err = TlsCertificates::load(&cert, &key).unwrap_err().to_string();
    assert!(err.contains("no PEM certificate"), "{err}");
}
