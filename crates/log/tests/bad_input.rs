//! Bad input: directories written by something else and corrupt segment
//! headers give a clear error naming the file and byte offset, never a panic
//! and never a silent skip of durable records.

use keel_io::{Disk, NodeRng, RealDisk, SimDisk};
use keel_log::{Log, LogConfig, LogError};

async fn log_with_records(disk: &Disk, dir: &str, config: LogConfig, count: usize) {
    let mut log = Log::open(disk.clone(), dir, config).await.expect("open");
    for n in 0..count {
        log.append(format!("record {n}").as_bytes()).await.expect("append");
    }
    log.flush().await.expect("flush");
}

#[tokio::test]
async fn foreign_file_in_log_dir_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    std::fs::write(dir.path().join("log/notes.txt"), b"hello").expect("write");
    let error = Log::open(Disk::Real(RealDisk::new(dir.path())), "log", LogConfig::default()).await.expect_err("foreign");
    assert!(matches!(error, LogError::Foreign { .. }), "{error}");
    assert!(error.to_string().contains("log/notes.txt"), "{error}");
}

#[tokio::test]
async fn segment_written_by_something_else_is_refused_at_byte_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    std::fs::write(dir.path().join("log/00000000000000000000.log"), b"PK\x03\x04 not a keel segment").expect("write");
    let error = Log::open(Disk::Real(RealDisk::new(dir.path())), "log", LogConfig::default()).await.expect_err("foreign");
    assert!(matches!(error, LogError::Foreign { .. }), "{error}");
    assert!(error.to_string().contains("00000000000000000000.log"), "{error}");
}

#[tokio::test]
async fn corrupt_segment_header_is_an_error_naming_file_and_offset() {
    let sim = SimDisk::new(NodeRng::new(9, 0, 0));
    let disk = Disk::Sim(sim.clone());
    log_with_records(&disk, "log", LogConfig::default(), 3).await;
    assert!(sim.corrupt_durably("log/00000000000000000000.log", 17, &[0xff]));
    let error = Log::open(disk, "log", LogConfig::default()).await.expect_err("corrupt header");
    match &error {
        LogError::Corrupt { file, position, .. } => {
            assert_eq!(file, "log/00000000000000000000.log");
            assert_eq!(*position, 0);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[tokio::test]
async fn corruption_inside_a_sealed_segment_is_an_error_not_a_silent_truncation() {
    let sim = SimDisk::new(NodeRng::new(10, 0, 0));
    let disk = Disk::Sim(sim.clone());
    let config = LogConfig { segment_bytes_max: 200, ..LogConfig::default() };
    log_with_records(&disk, "log", config.clone(), 20).await;
    let files = sim.files();
    let sealed = files.iter().find(|(path, _)| path.ends_with(".log")).expect("a segment").0.clone();
    let index = sealed.replace(".log", ".index");
    // Damage the first record's payload (bytes 48..) in the sealed
    // segment, and its index so recovery must rescan the segment.
    assert!(sim.corrupt_durably(&sealed, 50, &[0xff, 0xff]));
    assert!(sim.corrupt_durably(&index, 0, b"XXXX"));
    let Err(error) = Log::open(disk, "log", config).await else { panic!("damaged sealed segment must not open") };
    match &error {
        LogError::Corrupt { file, position, .. } => {
            assert_eq!(file, &sealed);
            assert_eq!(*position, 32, "the first frame starts after the 32-byte header");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[tokio::test]
async fn bad_calls_are_errors_and_leave_the_log_usable() {
    let disk = Disk::Sim(SimDisk::new(NodeRng::new(11, 0, 0)));
    let config = LogConfig { record_bytes_max: 16, ..LogConfig::default() };
    let mut log = Log::open(disk, "log", config).await.expect("open");
    log.append(b"ok").await.expect("append");
    assert!(matches!(log.append(&[0u8; 17]).await, Err(LogError::RecordTooLarge { len: 17, max: 16 })));
    assert!(matches!(log.read_from(5, 100).await, Err(LogError::OffsetOutOfRange { offset: 5, .. })));
    assert!(matches!(log.truncate(9).await, Err(LogError::OffsetOutOfRange { offset: 9, .. })));
    assert_eq!(log.append(b"still fine").await.expect("append after bad calls"), 1);
    let bad_config = LogConfig { segment_bytes_max: 10, ..LogConfig::default() };
    let disk = Disk::Sim(SimDisk::new(NodeRng::new(12, 0, 0)));
    assert!(matches!(Log::open(disk, "log", bad_config).await, Err(LogError::Config(_))));
}

/// A process that exits after the first fsync of a new segment failed (EIO)
/// leaves the file with no header; the sim found brokers that could then
/// never restart. Such a file holds no record and is made again.
#[tokio::test]
async fn a_segment_whose_creation_was_cut_short_is_made_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    std::fs::write(dir.path().join("log/00000000000000000007.log"), b"KEELS").expect("write a header prefix");
    let disk = Disk::Real(RealDisk::new(dir.path()));
    let mut log = Log::open(disk.clone(), "log", LogConfig::default()).await.expect("an unfinished creation is redone");
    assert_eq!(log.start_offset(), 7);
    assert_eq!(log.append(b"after").await.expect("append"), 7);
    log.flush().await.expect("flush");
    drop(log);
    let log = Log::open(disk, "log", LogConfig::default()).await.expect("reopen");
    assert_eq!(log.read(7).await.expect("read").expect("record").payload, b"after");
}

#[tokio::test]
async fn a_short_segment_that_is_not_a_header_prefix_is_still_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("log")).expect("mkdir");
    std::fs::write(dir.path().join("log/00000000000000000000.log"), b"KEELSEG1\x02").expect("write");
    let error = Log::open(Disk::Real(RealDisk::new(dir.path())), "log", LogConfig::default()).await.expect_err("short header");
    assert!(matches!(error, LogError::Corrupt { .. }), "{error}");
}

/// A crash mid-write leaves the first bytes of a frame after the last whole
/// one: opening cuts them off, says how many, and keeps every whole record.
#[tokio::test]
async fn a_torn_tail_is_cut_off_at_open_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = Disk::Real(RealDisk::new(dir.path()));
    log_with_records(&disk, "log", LogConfig::default(), 3).await;
    let whole = Log::open(disk.clone(), "log", LogConfig::default()).await.expect("reopen");
    assert_eq!(whole.torn_tail_bytes_dropped(), 0);
    drop(whole);
    let segment = dir.path().join("log/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).expect("read the segment");
    bytes.extend_from_slice(&[0x00, 0x00, 0x00, 0x40, 0x07, 0x01, 0x02]);
    std::fs::write(&segment, &bytes).expect("write a torn frame");
    let log = Log::open(disk, "log", LogConfig::default()).await.expect("a torn tail is recovered");
    assert_eq!(log.torn_tail_bytes_dropped(), 7);
    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.read(2).await.expect("read").expect("record").payload, b"record 2");
}
