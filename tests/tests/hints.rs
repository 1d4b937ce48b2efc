//! `SET pgrepl.route`: a session-wide read hint, answered by the proxy; writes ignore it.

use std::time::Duration;

use pgrepl_tests::roles::DATABASE;
use pgrepl_tests::suite::raw::{self, RawClient};
use pgrepl_tests::suite::{
    bounded, client, last_first, node_of_read, shared_proxy, sqlstate, PRIMARY, REPLICA,
};

#[tokio::test]
async fn set_route_sends_reads_where_it_says_until_reset() {
    let client = client().await;
    assert_eq!(node_of_read(&client).await, REPLICA);
    client
        .simple_query("SET pgrepl.route = 'primary'")
        .await
        .unwrap();
    assert_eq!(node_of_read(&client).await, PRIMARY);
    client
        .simple_query("SET pgrepl.route TO replica")
        .await
        .unwrap();
    assert_eq!(node_of_read(&client).await, REPLICA);
    client
        .simple_query("SET pgrepl.route = 'primary'")
        .await
        .unwrap();
    client.simple_query("RESET pgrepl.route").await.unwrap();
    assert_eq!(node_of_read(&client).await, REPLICA);
}

#[tokio::test]
async fn a_replica_hint_does_not_move_writes() {
    let client = client().await;
    client
        .simple_query("SET pgrepl.route = 'replica'")
        .await
        .unwrap();
    let rows = client
        .simple_query("CREATE TEMP TABLE hint_w (a int); INSERT INTO hint_w VALUES (1) RETURNING current_setting('cluster_name')")
        .await
        .expect("a write with a replica hint must still go to the primary");
    assert_eq!(last_first(&rows).as_deref(), Some(PRIMARY));
}

#[tokio::test]
async fn a_bad_value_is_refused_with_22023_and_changes_nothing() {
    let client = client().await;
    client
        .simple_query("SET pgrepl.route = 'primary'")
        .await
        .unwrap();
    let err = client
        .simple_query("SET pgrepl.route = 'nearest'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"), "{err}");
    assert_eq!(node_of_read(&client).await, PRIMARY);
}

#[tokio::test]
async fn in_an_aborted_transaction_the_hint_is_refused_like_any_statement() {
    let client = client().await;
    client.simple_query("BEGIN").await.unwrap();
    client.simple_query("SELECT 1/0").await.unwrap_err();
    let err = client
        .simple_query("SET pgrepl.route = 'primary'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("25P02"), "{err}");
    client.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(node_of_read(&client).await, REPLICA);
}

/// `SET pgrepl.route` sent while an extended batch is open (Flush, no Sync yet) is answered in
/// order, after the batch's own answers, and still sets the hint; it does not wait for a Sync
/// the client will not send first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hint_inside_an_open_extended_batch_is_answered_in_order() {
    bounded(async {
        let mut client = RawClient::login_trust(shared_proxy(), "trustuser", DATABASE)
            .await
            .unwrap();
        let mut batch = raw::message(b'P', b"\0SELECT 1\0\0\0");
        batch.extend(raw::message(b'B', b"\0\0\0\0\0\0\0\0"));
        batch.extend(raw::message(b'E', b"\0\0\0\0\0"));
        batch.extend(raw::message(b'H', b""));
        client.send(&batch).await.unwrap();
        let answers = client.recv_until(b'C').await.unwrap();
        assert!(answers.iter().any(|m| m.ty == b'D'), "the batch's row came");
        client
            .send(&raw::query("SET pgrepl.route = 'primary'"))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), client.recv_until(b'Z'))
            .await
            .expect("the SET is answered, not left waiting for the batch's Sync")
            .unwrap();
        assert!(
            answer
                .iter()
                .any(|m| m.ty == b'C' && m.body.starts_with(b"SET")),
            "CommandComplete SET among {:?}",
            answer.iter().map(|m| m.ty as char).collect::<String>()
        );
        client
            .send(&raw::query("SELECT current_setting('cluster_name')"))
            .await
            .unwrap();
        let read = client.recv_until(b'Z').await.unwrap();
        let row = read.iter().find(|m| m.ty == b'D').expect("a row");
        assert!(
            String::from_utf8_lossy(&row.body).contains(PRIMARY),
            "the hint took effect: {:?}",
            String::from_utf8_lossy(&row.body)
        );
    })
    .await
}
