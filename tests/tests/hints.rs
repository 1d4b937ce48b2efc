//! `SET pgrepl.route`: a session-wide read hint, answered by the proxy; writes ignore it.

use pgrepl_tests::suite::{client, last_first, node_of_read, sqlstate, PRIMARY, REPLICA};

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
