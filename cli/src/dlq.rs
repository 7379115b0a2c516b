//! `contoso dlq`: the dead letters of a deployment's JetStream, for an operator.
//!
//! - `list` prints a table: id, time, subject, consumer, deliveries, reason.
//! - `show ID` prints one entry: its metadata, the original headers and the payload (decoded when
//!   it is one of the order events).
//! - `replay ID` publishes the original payload and headers again on the original subject, under a
//!   message id of its own (`<original>:replay:<id>`), then removes the entry; `replay --all`
//!   does so for every entry there when it starts. Replaying an entry that is gone does nothing,
//!   so running a replay twice publishes once; the consumers are idempotent in any case
//!   (process-svc records a correlation id once).
//! - `purge ID` removes an entry without replaying it.
//!
//! It connects with the same `NATS_*` settings as the services but never creates or changes
//! their streams.

use std::io::Write;

use anyhow::Context;
use clap::Subcommand;
use contoso_bus::{DeadLetter, DeadLetters, NatsArgs, Topic};
use contoso_proto::events::v1 as ev;
use prost::Message;

/// Entries `list` prints unless told otherwise.
const DEFAULT_LIST_LIMIT: usize = 100;
/// Characters of a reason shown in the table (`show` prints all of it).
const TABLE_REASON_CHARS: usize = 80;

#[derive(Debug, clap::Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    command: DlqSubcommand,
}

/// The subcommands as parsed; each takes the broker settings after its name.
#[derive(Debug, Subcommand)]
enum DlqSubcommand {
    /// List the dead letters, oldest first.
    List {
        /// Most entries to print.
        #[arg(long, default_value_t = DEFAULT_LIST_LIMIT)]
        limit: usize,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Print one dead letter with its headers and payload.
    Show {
        id: u64,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Publish a dead letter again on its original subject, then remove it.
    Replay {
        /// The entry to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        /// Replay every entry there is when the command starts.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        nats: NatsArgs,
    },
    /// Remove a dead letter without replaying it.
    Purge {
        id: u64,
        #[command(flatten)]
        nats: NatsArgs,
    },
}

/// What to do with the dead letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DlqCommand {
    List {
        limit: usize,
    },
    Show {
        id: u64,
    },
    /// One entry, or (`None`) every entry there is.
    Replay {
        id: Option<u64>,
    },
    Purge {
        id: u64,
    },
}

pub(crate) async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let (command, nats) = match args.command {
        DlqSubcommand::List { limit, nats } => (DlqCommand::List { limit }, nats),
        DlqSubcommand::Show { id, nats } => (DlqCommand::Show { id }, nats),
        DlqSubcommand::Replay { id, nats, .. } => (DlqCommand::Replay { id }, nats),
        DlqSubcommand::Purge { id, nats } => (DlqCommand::Purge { id }, nats),
    };
    let bus = nats.connect_to_existing().await?;
    let mut out = std::io::stdout().lock();
    execute(&bus, &command, &mut out).await
}

/// Runs `command` against `dead` and writes what it did to `out`.
pub(crate) async fn execute(
    dead: &dyn DeadLetters,
    command: &DlqCommand,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit } => {
            let letters = dead.list(*limit).await.context("listing dead letters")?;
            write_table(&letters, out)?;
        }
        DlqCommand::Show { id } => {
            let letter = dead
                .get(*id)
                .await
                .with_context(|| format!("reading dead letter {id}"))?
                .with_context(|| format!("there is no dead letter {id}"))?;
            write_details(&letter, out)?;
        }
        DlqCommand::Replay { id: Some(id) } => replay(dead, *id, out).await?,
        DlqCommand::Replay { id: None } => {
            let ids: Vec<u64> = dead
                .list(usize::MAX)
                .await
                .context("listing dead letters")?
                .iter()
                .map(|letter| letter.id)
                .collect();
            // Only the entries there now: one dead-lettered again meanwhile waits for the next
            // run instead of going round in circles.
            for id in &ids {
                replay(dead, *id, out).await?;
            }
            writeln!(out, "{} replayed", ids.len())?;
        }
        DlqCommand::Purge { id } => {
            if dead
                .purge(*id)
                .await
                .with_context(|| format!("purging dead letter {id}"))?
            {
                writeln!(out, "purged {id}")?;
            } else {
                writeln!(out, "nothing to purge: there is no dead letter {id}")?;
            }
        }
    }
    Ok(())
}

async fn replay(dead: &dyn DeadLetters, id: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let letter = dead
        .get(id)
        .await
        .with_context(|| format!("reading dead letter {id}"))?;
    let replayed = dead
        .replay(id)
        .await
        .with_context(|| format!("replaying dead letter {id}"))?;
    match letter.filter(|_| replayed) {
        Some(letter) => writeln!(
            out,
            "replayed {id} on {} as {}",
            letter.subject,
            letter.replay_message_id()
        )?,
        None => writeln!(
            out,
            "nothing to replay: there is no dead letter {id} (already replayed or purged)"
        )?,
    }
    Ok(())
}

fn write_table(letters: &[DeadLetter], out: &mut dyn Write) -> std::io::Result<()> {
    let header = ["ID", "TIME", "SUBJECT", "CONSUMER", "DELIVERIES", "REASON"];
    let rows: Vec<[String; 6]> = letters
        .iter()
        .map(|letter| {
            [
                letter.id.to_string(),
                letter.dead_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                letter.subject.clone(),
                letter.consumer.clone(),
                letter.deliveries.to_string(),
                shorten(&letter.reason, TABLE_REASON_CHARS),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text
    };
    writeln!(out, "{}", line(&header))?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    if letters.is_empty() {
        writeln!(out, "(no dead letters)")?;
    }
    Ok(())
}

fn write_details(letter: &DeadLetter, out: &mut dyn Write) -> std::io::Result<()> {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    writeln!(out, "id:           {}", letter.id)?;
    writeln!(out, "time:         {}", letter.dead_at.to_rfc3339())?;
    writeln!(out, "subject:      {}", letter.subject)?;
    writeln!(out, "consumer:     {}", letter.consumer)?;
    writeln!(out, "deliveries:   {}", letter.deliveries)?;
    writeln!(out, "reason:       {}", letter.reason)?;
    writeln!(out, "message id:   {}", or_dash(letter.message_id.clone()))?;
    writeln!(
        out,
        "stream seq:   {}",
        or_dash(letter.stream_sequence.map(|seq| seq.to_string()))
    )?;
    writeln!(out, "replay id:    {}", letter.replay_message_id())?;
    writeln!(out, "headers:      {}", letter.headers.len())?;
    for (name, value) in &letter.headers {
        writeln!(out, "  {name}: {value}")?;
    }
    writeln!(out, "payload:      {} bytes", letter.payload.len())?;
    match decoded(letter) {
        Some(text) => writeln!(out, "{text}")?,
        None => writeln!(out, "  (not a readable order event)")?,
    }
    for chunk in letter.payload.chunks(32) {
        let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(out, "  {hex}")?;
    }
    Ok(())
}

/// The payload as the event its topic carries, when it decodes as one.
fn decoded(letter: &DeadLetter) -> Option<String> {
    let payload = letter.payload.as_ref();
    let text = match letter.topic? {
        Topic::OrderAccepted => format!("{:#?}", ev::OrderAccepted::decode(payload).ok()?),
        Topic::OrderProcessing | Topic::OrderFailed => {
            format!("{:#?}", ev::OrderStatusChanged::decode(payload).ok()?)
        }
        Topic::OrderProcessed => format!("{:#?}", ev::OrderProcessed::decode(payload).ok()?),
        Topic::EntitlementsGranted => {
            format!("{:#?}", ev::EntitlementsGranted::decode(payload).ok()?)
        }
    };
    Some(text)
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use contoso_bus::{Bus, ConsumerSpec, Envelope, MemoryBus};
    use futures::StreamExt;

    use super::*;

    async fn run(bus: &MemoryBus, command: DlqCommand) -> String {
        let mut out = Vec::new();
        execute(bus, &command, &mut out).await.expect("the command");
        String::from_utf8(out).expect("utf-8")
    }

    /// Publishes `ids` and dead-letters each on its first delivery to `process-svc`.
    async fn dead_letters(bus: &MemoryBus, ids: &[&str]) {
        let mut deliveries = bus
            .consume(&ConsumerSpec::new("process-svc", [Topic::OrderAccepted]))
            .await
            .expect("consume");
        for id in ids {
            bus.publish(Envelope {
                topic: Topic::OrderAccepted,
                message_id: (*id).to_owned(),
                payload: Bytes::from_static(&[0xff, 0x01]),
            })
            .await
            .expect("publish");
            let delivery = tokio::time::timeout(Duration::from_secs(5), deliveries.next())
                .await
                .expect("a delivery")
                .expect("open")
                .expect("delivery");
            delivery
                .dead_letter(&format!("payload of {id} is not an OrderAccepted"))
                .await
                .expect("dead-lettered");
        }
    }

    #[tokio::test]
    async fn list_prints_a_row_per_dead_letter_under_its_header() {
        let bus = MemoryBus::new();
        dead_letters(&bus, &["a", "b"]).await;

        let table = run(&bus, DlqCommand::List { limit: 10 }).await;
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["ID", "TIME", "SUBJECT", "CONSUMER", "DELIVERIES", "REASON"]
        );
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(first[0], "1");
        assert_eq!(&first[2..5], ["accepted", "process-svc", "1"]);
        assert_eq!(first[5..].join(" "), "payload of a is not an OrderAccepted");
        assert!(lines[2].starts_with("2 "), "{table}");
    }

    #[tokio::test]
    async fn an_empty_list_says_so() {
        let table = run(&MemoryBus::new(), DlqCommand::List { limit: 10 }).await;
        assert!(table.contains("(no dead letters)"), "{table}");
    }

    #[tokio::test]
    async fn show_prints_the_metadata_and_the_payload() {
        let bus = MemoryBus::new();
        dead_letters(&bus, &["a"]).await;
        let shown = run(&bus, DlqCommand::Show { id: 1 }).await;
        assert!(shown.contains("consumer:     process-svc"), "{shown}");
        assert!(shown.contains("message id:   a"), "{shown}");
        assert!(shown.contains("replay id:    a:replay:1"), "{shown}");
        assert!(shown.contains("payload:      2 bytes"), "{shown}");
        assert!(shown.contains("  ff01"), "{shown}");

        let mut out = Vec::new();
        let missing = execute(&bus, &DlqCommand::Show { id: 9 }, &mut out).await;
        assert!(missing.is_err());
    }

    #[tokio::test]
    async fn replay_all_replays_each_entry_once_and_empties_the_list() {
        let bus = MemoryBus::new();
        dead_letters(&bus, &["a", "b"]).await;
        let mut observer = bus
            .consume(&ConsumerSpec::new("observer", [Topic::OrderAccepted]))
            .await
            .expect("observer");

        let printed = run(&bus, DlqCommand::Replay { id: None }).await;
        assert!(
            printed.contains("replayed 1 on accepted as a:replay:1"),
            "{printed}"
        );
        assert!(printed.ends_with("2 replayed\n"), "{printed}");
        assert!(bus.list(10).await.unwrap().is_empty());
        let again = run(&bus, DlqCommand::Replay { id: Some(1) }).await;
        assert!(again.starts_with("nothing to replay"), "{again}");

        let mut ids = Vec::new();
        for _ in 0..4 {
            let delivery = observer.next().await.expect("open").expect("delivery");
            delivery.ack().await.unwrap();
            ids.push(delivery.message_id.unwrap_or_default());
        }
        assert_eq!(ids, ["a", "b", "a:replay:1", "b:replay:2"]);
    }

    #[tokio::test]
    async fn purge_removes_an_entry_and_a_second_purge_does_nothing() {
        let bus = MemoryBus::new();
        dead_letters(&bus, &["a"]).await;
        assert_eq!(run(&bus, DlqCommand::Purge { id: 1 }).await, "purged 1\n");
        assert!(
            run(&bus, DlqCommand::Purge { id: 1 })
                .await
                .starts_with("nothing to purge")
        );
        assert!(bus.list(10).await.unwrap().is_empty());
    }

    #[test]
    fn replay_takes_an_id_or_all_but_not_both_nor_neither() {
        use clap::Parser;

        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            dlq: DlqArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["dlq"].iter().chain(args).chain(&["--nats-url", "n"]))
                .map(|cli| cli.dlq.command)
        };
        assert!(matches!(
            parse(&["replay", "7"]),
            Ok(DlqSubcommand::Replay {
                id: Some(7),
                all: false,
                ..
            })
        ));
        assert!(matches!(
            parse(&["replay", "--all"]),
            Ok(DlqSubcommand::Replay {
                id: None,
                all: true,
                ..
            })
        ));
        assert!(parse(&["replay"]).is_err());
        assert!(parse(&["replay", "7", "--all"]).is_err());
    }

    #[test]
    fn long_reasons_are_shortened_in_the_table() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
