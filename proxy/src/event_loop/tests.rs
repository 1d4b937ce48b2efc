use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tcp::LoopTcp;
use super::*;

/// Long enough for a loaded machine; a lost wake-up shows as this timeout, not a hang.
const WITHIN: Duration = Duration::from_secs(30);

struct OnAThread {
    remote: Arc<Remote>,
    thread: Option<JoinHandle<()>>,
}

impl OnAThread {
    fn start() -> OnAThread {
        let event_loop = EventLoop::new(Arc::default()).unwrap();
        let remote = event_loop.remote();
        let thread = std::thread::spawn(move || event_loop.run());
        OnAThread {
            remote,
            thread: Some(thread),
        }
    }

    /// Runs `job` on the loop and returns what it sends.
    fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(mpsc::Sender<T>) -> Job,
    ) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel();
        self.remote.spawn(job(tx));
        rx
    }
}

impl Drop for OnAThread {
    fn drop(&mut self) {
        self.remote.stop();
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

#[test]
fn a_spawned_job_runs_on_the_loop_thread() {
    let running = OnAThread::start();
    let caller = std::thread::current().id();
    let rx = running.run(|tx| {
        Box::pin(async move {
            tx.send(std::thread::current().id()).unwrap();
        })
    });
    let ran_on = rx.recv_timeout(WITHIN).unwrap();
    assert_ne!(ran_on, caller);
}

#[test]
fn a_task_woken_from_another_thread_runs_again() {
    let running = OnAThread::start();
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<u32>();
    let rx = running.run(|tx| {
        Box::pin(async move {
            tx.send(wake_rx.await.unwrap()).unwrap();
        })
    });
    std::thread::sleep(Duration::from_millis(20));
    wake_tx.send(7).unwrap();
    assert_eq!(rx.recv_timeout(WITHIN).unwrap(), 7);
}

#[test]
fn a_socket_echoes_a_megabyte_through_full_buffers() {
    let running = OnAThread::start();
    let (mut client, server) = pair();
    let rx = running.run(move |tx| {
        Box::pin(async move {
            let socket = LoopTcp::from_std(server).unwrap();
            let (mut rd, mut wr) = socket.into_split();
            let mut buf = vec![0u8; 5000];
            let mut echoed = 0usize;
            loop {
                let n = rd.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                wr.write_all(&buf[..n]).await.unwrap();
                echoed += n;
            }
            tx.send(echoed).unwrap();
        })
    });
    let sent: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    // A lost wake-up fails the test within the bound instead of hanging it.
    client.set_read_timeout(Some(WITHIN)).unwrap();
    client.set_write_timeout(Some(WITHIN)).unwrap();
    let mut reader = client.try_clone().unwrap();
    let expected = sent.clone();
    let reading = std::thread::spawn(move || {
        let mut got = vec![0u8; expected.len()];
        reader.read_exact(&mut got).unwrap();
        got == expected
    });
    // Written all at once: the loop's socket fills while the reader has not read yet.
    client.write_all(&sent).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(
        reading.join().unwrap(),
        "the echo differs from what was sent"
    );
    assert_eq!(rx.recv_timeout(WITHIN).unwrap(), sent.len());
}

#[test]
fn a_ping_pong_of_small_messages_loses_no_wake_up() {
    let running = OnAThread::start();
    let (mut client, server) = pair();
    let rounds = 5000u32;
    let rx = running.run(move |tx| {
        Box::pin(async move {
            let mut socket = LoopTcp::from_std(server).unwrap();
            let mut word = [0u8; 4];
            for _ in 0..rounds {
                socket.read_exact(&mut word).await.unwrap();
                let next = u32::from_be_bytes(word) + 1;
                socket.write_all(&next.to_be_bytes()).await.unwrap();
            }
            tx.send(()).unwrap();
        })
    });
    client.set_read_timeout(Some(WITHIN)).unwrap();
    let mut word = [0u8; 4];
    for i in 0..rounds {
        client.write_all(&(i * 2).to_be_bytes()).unwrap();
        client.read_exact(&mut word).unwrap();
        assert_eq!(u32::from_be_bytes(word), i * 2 + 1);
    }
    rx.recv_timeout(WITHIN).unwrap();
}

#[test]
fn a_socket_of_one_loop_is_read_by_a_task_of_another() {
    let home = OnAThread::start();
    let other = OnAThread::start();
    let (mut client, server) = pair();
    // Registered on `home`, then handed to a task on `other`.
    let registered = home.run(move |tx| {
        Box::pin(async move {
            tx.send(LoopTcp::from_std(server).unwrap()).unwrap();
        })
    });
    let mut socket = registered.recv_timeout(WITHIN).unwrap();
    let rx = other.run(move |tx| {
        Box::pin(async move {
            let mut got = vec![0u8; 3];
            socket.read_exact(&mut got).await.unwrap();
            tx.send(got).unwrap();
        })
    });
    std::thread::sleep(Duration::from_millis(20));
    client.write_all(b"abc").unwrap();
    assert_eq!(rx.recv_timeout(WITHIN).unwrap(), b"abc");
}

#[test]
fn a_panicking_task_leaves_the_others_running() {
    let running = OnAThread::start();
    let (wake_tx, wake_rx) = tokio::sync::oneshot::channel::<()>();
    let waiting = running.run(|tx| {
        Box::pin(async move {
            wake_rx.await.unwrap();
            tx.send("woken").unwrap();
        })
    });
    running
        .remote
        .spawn(Box::pin(async { panic!("a task's bug") }));
    let after = running.run(|tx| Box::pin(async move { tx.send("ran").unwrap() }));
    assert_eq!(after.recv_timeout(WITHIN).unwrap(), "ran");
    wake_tx.send(()).unwrap();
    assert_eq!(waiting.recv_timeout(WITHIN).unwrap(), "woken");
}

#[test]
fn stopping_drops_the_tasks_left_on_the_loop_thread() {
    struct Dropped(mpsc::Sender<std::thread::ThreadId>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            let _ = self.0.send(std::thread::current().id());
        }
    }
    let running = OnAThread::start();
    let (tx, rx) = mpsc::channel();
    let (started_tx, started) = mpsc::channel();
    running.remote.spawn(Box::pin(async move {
        let _dropped = Dropped(tx);
        started_tx.send(std::thread::current().id()).unwrap();
        std::future::pending::<()>().await;
    }));
    let loop_thread = started.recv_timeout(WITHIN).unwrap();
    drop(running);
    assert_eq!(rx.recv_timeout(WITHIN).unwrap(), loop_thread);
}

#[test]
fn registering_off_a_loop_is_an_error() {
    let (_client, server) = pair();
    assert!(!LoopTcp::can_register_here());
    assert!(LoopTcp::from_std(server).is_err());
}

#[test]
fn a_socket_leaves_its_loop_and_keeps_its_data() {
    let running = OnAThread::start();
    let (mut client, server) = pair();
    client.write_all(b"kept").unwrap();
    let rx = running.run(move |tx| {
        Box::pin(async move {
            let socket = LoopTcp::from_std(server).unwrap();
            tx.send(socket.into_std()).unwrap();
        })
    });
    let mut back = rx.recv_timeout(WITHIN).unwrap();
    back.set_nonblocking(false).unwrap();
    let mut got = [0u8; 4];
    back.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"kept");
}

#[test]
fn jobs_count_as_running_until_they_end_or_panic() {
    let running_jobs = Arc::new(Running::default());
    let event_loop = EventLoop::new(running_jobs.clone()).unwrap();
    let remote = event_loop.remote();
    let thread = std::thread::spawn(move || event_loop.run());
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    remote.spawn(Box::pin(async move {
        let _ = released.await;
    }));
    remote.spawn(Box::pin(async { panic!("a task's bug") }));
    assert!(running_jobs.count() >= 1);
    release.send(()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime
        .block_on(async { tokio::time::timeout(WITHIN, running_jobs.all_ended()).await })
        .expect("the jobs end");
    assert_eq!(running_jobs.count(), 0);
    // One left when the loop stops is dropped, and counted out.
    remote.spawn(Box::pin(std::future::pending()));
    assert_eq!(running_jobs.count(), 1);
    remote.stop();
    thread.join().unwrap();
    assert_eq!(running_jobs.count(), 0);
}

#[test]
fn the_end_that_came_with_the_last_data_is_read_after_it() {
    let running = OnAThread::start();
    let (mut client, server) = pair();
    // The data and the FIN arrive together: one event says both.
    client.write_all(b"abc").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let (go, gone) = tokio::sync::oneshot::channel::<()>();
    let rx = running.run(move |tx| {
        Box::pin(async move {
            let mut socket = LoopTcp::from_std(server).unwrap();
            // Woken through the inbox, after the loop's wait has taken the socket's event.
            gone.await.unwrap();
            let mut buf = [0u8; 64];
            let first = socket.read(&mut buf).await.unwrap();
            let second = socket.read(&mut buf).await.unwrap();
            tx.send((first, second)).unwrap();
        })
    });
    std::thread::sleep(Duration::from_millis(50));
    go.send(()).unwrap();
    assert_eq!(rx.recv_timeout(WITHIN).unwrap(), (3, 0));
}

#[test]
fn a_try_read_answers_from_readiness_and_peek_now_from_the_socket() {
    let running = OnAThread::start();
    let (mut client, server) = pair();
    let watcher = server.try_clone().unwrap();
    let (found_empty_tx, found_empty) = mpsc::channel::<()>();
    let (arrived_tx, arrived) = mpsc::channel::<()>();
    let (got_data_tx, got_data) = mpsc::channel::<()>();
    let rx = running.run(move |tx| {
        Box::pin(async move {
            let (rd, _wr) = LoopTcp::from_std(server).unwrap().into_split();
            let mut buf = [0u8; 16];
            // A new socket may be ready: asked, found empty, known not ready from now on.
            let empty = rd.try_read(&mut buf).map_err(|e| e.kind());
            found_empty_tx.send(()).unwrap();
            // Still in this poll, so the loop cannot take the data's event meanwhile.
            arrived.recv_timeout(WITHIN).unwrap();
            let unseen = rd.try_read(&mut buf).map_err(|e| e.kind());
            let peeked = rd.peek_now(&mut buf).map_err(|e| e.kind());
            let data = until_not_blocked(|| rd.try_read(&mut buf)).await;
            got_data_tx.send(()).unwrap();
            let end = until_not_blocked(|| rd.try_read(&mut buf)).await;
            tx.send((empty, unseen, peeked, data, end)).unwrap();
        })
    });
    found_empty.recv_timeout(WITHIN).unwrap();
    client.write_all(b"xy").unwrap();
    // The data is in the loop's socket (a peek at its other descriptor sees it).
    let deadline = std::time::Instant::now() + WITHIN;
    while !matches!(watcher.peek(&mut [0u8; 2]), Ok(2)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the data never arrived"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    arrived_tx.send(()).unwrap();
    got_data.recv_timeout(WITHIN).unwrap();
    drop(client);
    let would_block = Err(std::io::ErrorKind::WouldBlock);
    assert_eq!(
        rx.recv_timeout(WITHIN).unwrap(),
        (would_block, would_block, Ok(2), Ok(2), Ok(0))
    );
}

/// Tries `attempt` until it does not find the socket not ready, yielding between tries (the
/// loop takes its sockets' events between turns); TimedOut after [`WITHIN`].
async fn until_not_blocked(
    mut attempt: impl FnMut() -> std::io::Result<usize>,
) -> Result<usize, std::io::ErrorKind> {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        match attempt() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            done => return done.map_err(|e| e.kind()),
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::ErrorKind::TimedOut);
        }
        yield_once().await;
    }
}

/// Pending once, woken at once: the task is queued again, and after a turn's worth of polls
/// the loop looks at its sockets (without waiting) before it polls it again.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
