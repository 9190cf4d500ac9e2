//! `kafka-loadgen`: the librdkafka load generator of `ci/bench.sh kafka` (a
//! benchmark, not a test). Against a bootstrap list it
//!
//! - `produce`: creates the topic with the AdminClient (if absent), waits until
//!   every partition has a leader and a full ISR, then sends N records of S
//!   bytes (acks=all or acks=1, idempotence configurable), as fast as the
//!   client's queue allows or at a fixed rate; reports records/s, MB/s and the
//!   per-record delivery latency (delivery report time - produce call time)
//!   p50/p99/p99.9/max from an HDR histogram;
//! - `consume`: reads the topics from the beginning with an assign-based
//!   consumer (no group) up to the high watermarks it found at start; reports
//!   records/s and MB/s;
//! - `free-ports`: prints bases of runs of free consecutive loopback ports
//!   (for `keel dev --kafka-port-base` etc.).
//!
//! Every figure is one line `RESULT <label> <figure> <value>`; the other lines
//! say what was run with which client settings. MB is 10^6 bytes of record
//! payload. Exit status: 0 done, 1 a record failed or the run stalled.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

#[derive(Parser)]
#[command(about = "librdkafka load generator for Keel's Kafka listener (ci/bench.sh kafka)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the topic if absent, then produce N records and report throughput and latency.
    Produce(ProduceArgs),
    /// Read the topics from the beginning (assign, no group) and report throughput.
    Consume(ConsumeArgs),
    /// Print the first port of each of RUNS runs of COUNT free consecutive 127.0.0.1 ports.
    FreePorts {
        #[arg(long, default_value_t = 3)]
        runs: u16,
        #[arg(long, default_value_t = 3)]
        count: u16,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Acks {
    #[value(name = "all")]
    All,
    #[value(name = "1")]
    One,
}

impl Acks {
    fn config(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::One => "1",
        }
    }
}

#[derive(Parser)]
struct ProduceArgs {
    /// Bootstrap servers, host:port,host:port.
    #[arg(long)]
    bootstrap: String,
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Records to send.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Payload bytes per record (no key).
    #[arg(long, default_value_t = 100)]
    record_bytes: usize,
    #[arg(long, value_enum, default_value_t = Acks::All)]
    acks: Acks,
    /// enable.idempotence (default: true with acks=all, false with acks=1; Kafka allows it only with acks=all).
    #[arg(long)]
    idempotence: Option<bool>,
    /// Records per second, evenly paced; 0 sends as fast as the client's queue takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// linger.ms: how long librdkafka waits to fill a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// batch.num.messages: records per batch (per partition) at most.
    #[arg(long, default_value_t = 10_000)]
    batch_num_messages: u64,
    /// batch.size: bytes per batch at most.
    #[arg(long, default_value_t = 1_000_000)]
    batch_size: u64,
    /// queue.buffering.max.messages: records produced but not yet delivered at most (the client's window).
    #[arg(long, default_value_t = 100_000)]
    queue_max_messages: u64,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[arg(long, default_value_t = 3)]
    replication_factor: i32,
    #[arg(long, default_value_t = 2)]
    min_insync_replicas: u32,
    /// Also print, per this many ms of send time, the records sent and their max latency (to find stalls).
    #[arg(long, default_value_t = 0)]
    timeline_ms: u64,
    /// Label of the RESULT lines (default: produce-acks-all or produce-acks-1).
    #[arg(long)]
    label: Option<String>,
    /// Extra librdkafka producer settings, key=value (repeatable).
    #[arg(long = "set", value_parser = parse_key_value)]
    extra: Vec<(String, String)>,
}

#[derive(Parser)]
struct ConsumeArgs {
    #[arg(long)]
    bootstrap: String,
    /// Topics to read, comma-separated (every partition of each).
    #[arg(long, default_value = "loadgen")]
    topic: String,
    /// Label of the RESULT lines.
    #[arg(long, default_value = "consume")]
    label: String,
    /// Give up when no record arrives for this long.
    #[arg(long, default_value_t = 30)]
    stall_seconds: u64,
    /// Extra librdkafka consumer settings, key=value (repeatable).
    #[arg(long = "set", value_parser = parse_key_value)]
    extra: Vec<(String, String)>,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// Applies `--set key=value` settings; librdkafka logs warnings, and debug
/// lines too when `debug` is set.
fn set_extra(config: &mut ClientConfig, extra: &[(String, String)]) {
    for (key, value) in extra {
        config.set(key, value);
    }
    let debug = extra.iter().any(|(key, _)| key == "debug");
    config.set_log_level(if debug {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new topic gets to have a leader and a full ISR on every partition.
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);

fn result(label: &str, figure: &str, value: impl std::fmt::Display) {
    println!("RESULT {label} {figure} {value}");
}

fn main() -> ExitCode {
    LOG_CLOCK.get_or_init(Instant::now);
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Produce(args) => produce(&args),
        Command::Consume(args) => consume(&args),
        Command::FreePorts { runs, count } => free_ports(runs, count),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("kafka-loadgen: {message}");
            ExitCode::from(1)
        }
    }
}

fn free_ports(runs: u16, count: u16) -> Result<(), String> {
    let mut taken: Vec<u16> = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..1000 {
        if bases.len() == usize::from(runs) {
            break;
        }
        let base = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("bind: {e}"))?
            .port();
        let Some(last) = base.checked_add(count - 1) else {
            continue;
        };
        let ports: Vec<u16> = (base..=last).collect();
        if ports.iter().any(|p| taken.contains(p)) {
            continue;
        }
        if ports
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            taken.extend(&ports);
            bases.push(base);
        }
    }
    if bases.len() != usize::from(runs) {
        return Err(format!(
            "found {} of {runs} runs of {count} free ports",
            bases.len()
        ));
    }
    println!(
        "{}",
        bases
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(())
}

/// Creates the topic unless it exists, then waits until every partition has
/// a leader and `replication_factor` in-sync replicas.
fn create_topic(args: &ProduceArgs) -> Result<(), String> {
    let admin: AdminClient<LogContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.bootstrap)
        .create_with_context(LogContext)
        .map_err(|e| format!("admin client: {e}"))?;
    let min_insync = args.min_insync_replicas.to_string();
    let topic = NewTopic::new(
        &args.topic,
        args.partitions,
        TopicReplication::Fixed(args.replication_factor),
    )
    .set("min.insync.replicas", &min_insync);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let answers = runtime
        .block_on(admin.create_topics([&topic], &options))
        .map_err(|e| format!("CreateTopics: {e}"))?;
    for answer in answers {
        match answer {
            Ok(name) => println!("created topic {name}: {} partitions, replication factor {}, min.insync.replicas {min_insync}", args.partitions, args.replication_factor),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => println!("topic {name} exists; producing to it"),
            Err((name, code)) => return Err(format!("CreateTopics {name}: {code}")),
        }
    }
    let started = Instant::now();
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(&args.topic), METADATA_TIMEOUT)
            .map_err(|e| format!("Metadata: {e}"))?;
        let ready = metadata
            .topics()
            .iter()
            .find(|t| t.name() == args.topic)
            .is_some_and(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| {
                        p.error().is_none()
                            && p.leader() >= 0
                            && p.isr().len() >= args.replication_factor as usize
                    })
            });
        if ready {
            return Ok(());
        }
        if started.elapsed() > TOPIC_READY_TIMEOUT {
            return Err(format!("topic {} has no leader or a short ISR on some partition after {TOPIC_READY_TIMEOUT:?}", args.topic));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the delivery callbacks (on the producer's polling thread) gather.
struct Deliveries {
    latency_us: Histogram<u64>,
    delivered: u64,
    failed: u64,
    first_error: Option<String>,
    /// Since the run's start, when the last delivery report arrived.
    last_report: Duration,
    per_partition: BTreeMap<i32, u64>,
    /// With --timeline-ms: per bucket of send time, (records, max latency µs).
    timeline: Vec<(u64, u64)>,
    timeline_ns: u64,
    /// Since the context's start, when the measured run started (timeline buckets count from here).
    origin_ns: u64,
}

struct LoadContext {
    started: Instant,
    deliveries: Mutex<Deliveries>,
}

/// librdkafka's log lines (warnings, errors, and whatever `--set debug=...` asks for) go to stderr.
fn log_to_stderr(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let since_start = LOG_CLOCK.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("librdkafka {since_start:.3}s {level:?} {facility}: {message}");
}

static LOG_CLOCK: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

impl ClientContext for LoadContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_stderr(level, facility, message);
    }
}

/// The consumer's and admin client's context: librdkafka logs to stderr.
struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_to_stderr(level, facility, message);
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

impl ProducerContext for LoadContext {
    /// Nanoseconds from the run's start to the produce call.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_ns: usize) {
        let now = self.started.elapsed();
        let latency_us = (now.as_nanos() as u64).saturating_sub(sent_ns as u64) / 1000;
        let mut d = self.deliveries.lock().expect("deliveries lock");
        d.last_report = now;
        match result {
            Ok(message) => {
                d.delivered += 1;
                d.latency_us.saturating_record(latency_us.max(1));
                *d.per_partition.entry(message.partition()).or_default() += 1;
                let since_origin = (sent_ns as u64).saturating_sub(d.origin_ns);
                if let Some(bucket) = since_origin.checked_div(d.timeline_ns) {
                    let bucket = bucket as usize;
                    if d.timeline.len() <= bucket {
                        d.timeline.resize(bucket + 1, (0, 0));
                    }
                    d.timeline[bucket].0 += 1;
                    d.timeline[bucket].1 = d.timeline[bucket].1.max(latency_us);
                }
            }
            Err((error, _)) => {
                d.failed += 1;
                if d.first_error.is_none() {
                    d.first_error = Some(error.to_string());
                }
            }
        }
    }
}

fn produce(args: &ProduceArgs) -> Result<(), String> {
    create_topic(args)?;
    let idempotence = args.idempotence.unwrap_or(args.acks == Acks::All);
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| format!("produce-acks-{}", args.acks.config()));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("acks", args.acks.config())
        .set("enable.idempotence", idempotence.to_string())
        .set("linger.ms", args.linger_ms.to_string())
        .set("batch.num.messages", args.batch_num_messages.to_string())
        .set("batch.size", args.batch_size.to_string())
        .set(
            "queue.buffering.max.messages",
            args.queue_max_messages.to_string(),
        )
        .set("queue.buffering.max.kbytes", "1048576")
        .set("compression.type", "none")
        .set("message.timeout.ms", "120000");
    set_extra(&mut config, &args.extra);
    let settings = [
        "acks",
        "enable.idempotence",
        "linger.ms",
        "batch.num.messages",
        "batch.size",
        "queue.buffering.max.messages",
        "max.in.flight.requests.per.connection",
        "compression.type",
        "partitioner",
        "sticky.partitioning.linger.ms",
    ];
    let native = config
        .create_native_config()
        .map_err(|e| format!("producer settings: {e}"))?;
    let effective: Vec<String> = settings
        .iter()
        .map(|key| format!("{key}={}", native.get(key).unwrap_or_else(|_| "?".into())))
        .collect();
    let histogram =
        Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))?;
    let deliveries = Deliveries {
        latency_us: histogram,
        delivered: 0,
        failed: 0,
        first_error: None,
        last_report: Duration::ZERO,
        per_partition: BTreeMap::new(),
        timeline: Vec::new(),
        timeline_ns: args.timeline_ms * 1_000_000,
        origin_ns: 0,
    };
    let context = LoadContext {
        started: Instant::now(),
        deliveries: Mutex::new(deliveries),
    };
    let producer: ThreadedProducer<LoadContext> = config
        .create_with_context(context)
        .map_err(|e| format!("producer: {e}"))?;
    println!(
        "{label}: topic {}, {} records of {} bytes, rate {}; librdkafka {}: {}",
        args.topic,
        args.records,
        args.record_bytes,
        if args.rate == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", args.rate)
        },
        rdkafka::util::get_rdkafka_version().1,
        effective.join(" ")
    );
    let payload = vec![b'k'; args.record_bytes];
    // Warm-up, not measured: one record to each partition, so that the
    // producer has its connections to every leader and (idempotent) its
    // producer id before the clock starts. librdkafka asks for the producer
    // id on a timer (up to 500 ms after start), which would otherwise show
    // up as a start-up stall in the latency figures.
    for partition in 0..args.partitions {
        let record: BaseRecord<'_, (), [u8], usize> = BaseRecord::with_opaque_to(&args.topic, 0)
            .partition(partition)
            .payload(&payload[..]);
        producer
            .send(record)
            .map_err(|(error, _)| format!("warm-up record to partition {partition}: {error}"))?;
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("warm-up flush: {e}"))?;
    {
        let mut d = producer
            .context()
            .deliveries
            .lock()
            .expect("deliveries lock");
        if d.failed > 0 {
            return Err(format!(
                "warm-up: {} records failed (first error: {})",
                d.failed,
                d.first_error.as_deref().unwrap_or("none reported")
            ));
        }
        println!(
            "{label}: warm-up: {} records (one per partition) delivered, not counted",
            d.delivered
        );
        d.latency_us.reset();
        d.delivered = 0;
        d.per_partition.clear();
        d.timeline.clear();
    }
    // The clock starts at the first produce call.
    let run_started = producer.context().started.elapsed();
    producer
        .context()
        .deliveries
        .lock()
        .expect("deliveries lock")
        .origin_ns = run_started.as_nanos() as u64;
    let mut queue_full_waits = 0u64;
    for i in 0..args.records {
        if let Some(due_ns) = i.saturating_mul(1_000_000_000).checked_div(args.rate) {
            let due = run_started + Duration::from_nanos(due_ns);
            let now = producer.context().started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        loop {
            let sent_ns = producer.context().started.elapsed().as_nanos() as usize;
            let record: BaseRecord<'_, (), [u8], usize> =
                BaseRecord::with_opaque_to(&args.topic, sent_ns).payload(&payload[..]);
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    queue_full_waits += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((error, _)) => return Err(format!("produce record {i}: {error}")),
            }
        }
    }
    producer
        .flush(Duration::from_secs(180))
        .map_err(|e| format!("flush: {e}"))?;
    let d = producer
        .context()
        .deliveries
        .lock()
        .expect("deliveries lock");
    let seconds = (d.last_report.saturating_sub(run_started))
        .as_secs_f64()
        .max(1e-9);
    let ms = |q: f64| d.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let partitions: Vec<String> = d
        .per_partition
        .iter()
        .map(|(p, n)| format!("{p}:{n}"))
        .collect();
    println!(
        "{label}: {} delivered, {} failed in {seconds:.2} s; records per partition {}; {queue_full_waits} waits on a full client queue",
        d.delivered,
        d.failed,
        partitions.join(" ")
    );
    for (bucket, (records, max_us)) in d.timeline.iter().enumerate() {
        println!(
            "timeline {label} sent_at_ms {} records {records} max_latency_ms {:.2}",
            bucket as u64 * args.timeline_ms,
            *max_us as f64 / 1000.0
        );
    }
    result(&label, "records", d.delivered);
    result(&label, "seconds", format!("{seconds:.2}"));
    result(
        &label,
        "records_per_s",
        format!("{:.0}", d.delivered as f64 / seconds),
    );
    result(
        &label,
        "mb_per_s",
        format!(
            "{:.2}",
            d.delivered as f64 * args.record_bytes as f64 / seconds / 1e6
        ),
    );
    result(&label, "latency_p50_ms", format!("{:.2}", ms(0.5)));
    result(&label, "latency_p99_ms", format!("{:.2}", ms(0.99)));
    result(&label, "latency_p999_ms", format!("{:.2}", ms(0.999)));
    result(
        &label,
        "latency_max_ms",
        format!("{:.2}", d.latency_us.max() as f64 / 1000.0),
    );
    result(&label, "failed", d.failed);
    if d.failed > 0 || d.delivered != args.records {
        return Err(format!(
            "{} of {} records failed (first error: {})",
            args.records - d.delivered,
            args.records,
            d.first_error.as_deref().unwrap_or("none reported")
        ));
    }
    Ok(())
}

fn consume(args: &ConsumeArgs) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        // librdkafka's assign() needs a group.id; with assign() the consumer
        // never joins the group and, with auto commit off, never commits.
        .set("group.id", "kafka-loadgen")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    set_extra(&mut config, &args.extra);
    let consumer: BaseConsumer<LogContext> = config
        .create_with_context(LogContext)
        .map_err(|e| format!("consumer: {e}"))?;
    let mut assignment = TopicPartitionList::new();
    let mut expected = 0u64;
    for name in args.topic.split(',') {
        let metadata = consumer
            .fetch_metadata(Some(name), METADATA_TIMEOUT)
            .map_err(|e| format!("Metadata: {e}"))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| format!("no topic {name}"))?;
        if let Some(error) = topic.error() {
            return Err(format!("topic {name}: {:?}", RDKafkaErrorCode::from(error)));
        }
        for partition in topic.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(name, partition.id(), METADATA_TIMEOUT)
                .map_err(|e| format!("ListOffsets {name} {}: {e}", partition.id()))?;
            expected += (high - low).max(0) as u64;
            assignment
                .add_partition_offset(name, partition.id(), Offset::Beginning)
                .map_err(|e| format!("assignment: {e}"))?;
        }
    }
    println!(
        "{}: topics {}, {} partitions from the beginning (assign, no group), {expected} records up to the high watermarks; librdkafka {}",
        args.label,
        args.topic,
        assignment.count(),
        rdkafka::util::get_rdkafka_version().1
    );
    let started = Instant::now();
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assign: {e}"))?;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut last_record = started;
    while records < expected {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                records += 1;
                bytes += message.payload_len() as u64;
                last_record = Instant::now();
            }
            Some(Err(error)) => return Err(format!("consume: {error}")),
            None => {
                if last_record.elapsed() > Duration::from_secs(args.stall_seconds) {
                    return Err(format!(
                        "no record for {} s after {records} of {expected}",
                        args.stall_seconds
                    ));
                }
            }
        }
    }
    let seconds = last_record.duration_since(started).as_secs_f64().max(1e-9);
    println!(
        "{}: {records} records, {bytes} payload bytes in {seconds:.2} s",
        args.label
    );
    result(&args.label, "records", records);
    result(&args.label, "seconds", format!("{seconds:.2}"));
    result(
        &args.label,
        "records_per_s",
        format!("{:.0}", records as f64 / seconds),
    );
    result(
        &args.label,
        "mb_per_s",
        format!("{:.2}", bytes as f64 / seconds / 1e6),
    );
    Ok(())
}
