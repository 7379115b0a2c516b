//! `contoso dlq` as an operator runs it: the real binary against a private `nats-server` whose
//! dead letters were captured by a consumer through the JetStream adapter, as process-svc
//! captures them.

use std::time::Duration;

use bytes::Bytes;
use contoso_bus::{
    Bus, ConsumerSpec, Deliveries, Delivery, Envelope, NatsBus, NatsSettings, Topic,
};
use contoso_testkit::NatsServer;
use futures::StreamExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(30);

/// Runs `contoso dlq <args> --nats-url <server>`; returns stdout, panicking on a failure.
async fn dlq(server: &NatsServer, args: &[&str]) -> String {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_contoso"))
        .arg("dlq")
        .args(args)
        .args(["--nats-url", &server.url()])
        .env_remove("NATS_URL")
        .env_remove("NATS_STREAM")
        .env_remove("NATS_DLQ_STREAM")
        .env_remove("NATS_SUBJECT_PREFIX")
        .output()
        .await
        .expect("running contoso dlq");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 output");
    assert!(
        output.status.success(),
        "contoso dlq {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn next(deliveries: &mut Deliveries) -> Delivery {
    timeout(WAIT, deliveries.next())
        .await
        .expect("a delivery before the deadline")
        .expect("the delivery stream stays open")
        .expect("a delivery, not an error")
}

async fn nothing_within(deliveries: &mut Deliveries, window: Duration) {
    if let Ok(Some(extra)) = timeout(window, deliveries.next()).await {
        panic!("expected no delivery, got {extra:?}");
    }
}

/// Publishes `id` and dead-letters it from the `process-svc` group.
async fn dead_letter(bus: &NatsBus, group: &mut Deliveries, id: &str) {
    bus.publish(Envelope {
        topic: Topic::OrderAccepted,
        message_id: id.to_owned(),
        payload: Bytes::from(format!("payload of {id}")),
    })
    .await
    .expect("publishing");
    let delivery = next(group).await;
    assert_eq!(delivery.message_id.as_deref(), Some(id));
    delivery
        .dead_letter(&format!("{id} cannot be processed"))
        .await
        .expect("dead-lettering");
}

/// The table's rows (without the header) as columns, the reason joined back into one.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with('('))
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let mut row: Vec<String> = cells[..5].iter().map(|c| (*c).to_owned()).collect();
            row.push(cells[5..].join(" "));
            row
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_replay_and_purge_operate_the_dead_letters_and_a_second_replay_publishes_nothing()
{
    let server = NatsServer::start();
    let bus = NatsBus::connect(NatsSettings {
        url: server.url(),
        ..NatsSettings::default()
    })
    .await
    .expect("connecting as the services do");
    let mut spec = ConsumerSpec::new("process-svc", [Topic::OrderAccepted]);
    spec.ack_wait = Duration::from_secs(1);
    let mut group = bus.consume(&spec).await.expect("the process-svc group");
    for id in ["a", "b", "c"] {
        dead_letter(&bus, &mut group, id).await;
    }

    let table = dlq(&server, &["list"]).await;
    assert!(
        table.starts_with("ID  "),
        "the table starts with its header: {table}"
    );
    let listed = rows(&table);
    assert_eq!(listed.len(), 3, "{table}");
    for (row, id) in listed.iter().zip(["a", "b", "c"]) {
        assert_eq!(
            row[2..],
            [
                "orders.accepted".to_owned(),
                "process-svc".to_owned(),
                "1".to_owned(),
                format!("{id} cannot be processed")
            ]
        );
    }
    let [a, b, c] = [0, 1, 2].map(|i| listed[i][0].clone());

    let shown = dlq(&server, &["show", &a]).await;
    assert!(shown.contains("message id:   a\n"), "{shown}");
    assert!(shown.contains("subject:      orders.accepted\n"), "{shown}");
    assert!(
        shown.contains(&format!("replay id:    a:replay:{a}\n")),
        "{shown}"
    );

    // Replaying twice: one redelivery to the group, with its own message id.
    let first = dlq(&server, &["replay", &a]).await;
    assert!(first.starts_with(&format!("replayed {a} ")), "{first}");
    let second = dlq(&server, &["replay", &a]).await;
    assert!(second.starts_with("nothing to replay"), "{second}");
    let replayed = next(&mut group).await;
    assert_eq!(replayed.message_id, Some(format!("a:replay:{a}")));
    assert_eq!(replayed.payload, Bytes::from_static(b"payload of a"));
    assert_eq!(replayed.attempt, 1);
    replayed.ack().await.expect("ack");
    nothing_within(&mut group, spec.ack_wait * 2).await;

    // Purged: gone without a delivery.
    assert_eq!(dlq(&server, &["purge", &c]).await, format!("purged {c}\n"));
    let left = rows(&dlq(&server, &["list"]).await);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0][0], b);

    // Everything left, once.
    let all = dlq(&server, &["replay", "--all"]).await;
    assert!(all.ends_with("1 replayed\n"), "{all}");
    let replayed = next(&mut group).await;
    assert_eq!(replayed.message_id, Some(format!("b:replay:{b}")));
    replayed.ack().await.expect("ack");
    nothing_within(&mut group, spec.ack_wait * 2).await;
    let empty = dlq(&server, &["list"]).await;
    assert!(empty.contains("(no dead letters)"), "{empty}");
}
