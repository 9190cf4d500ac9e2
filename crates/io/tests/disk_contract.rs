//! The Disk contract, checked on both backends, and SimDisk's crash model.

use keel_io::disk::SECTOR_BYTES;
use keel_io::{Disk, DiskErrorKind, NodeRng, RealDisk, SimDisk, SimDiskFaults};

/// One sequence of operations; returns what each observable step saw.
async fn exercise(disk: &Disk) -> Vec<String> {
    let mut seen = Vec::new();
    disk.create_dir_all("a/b").await.expect("mkdir");
    let file = disk.create("a/b/f.log").await.expect("create");
    seen.push(format!("{:?}", disk.create("a/b/f.log").await.map(|_| ()).map_err(|e| e.kind)));
    file.write_at(0, b"hello").await.expect("write");
    file.write_at(10, b"world").await.expect("write past end");
    seen.push(format!("{:?}", file.read_at(0, 100).await.expect("read")));
    seen.push(format!("len {}", file.len().await.expect("len")));
    file.truncate(3).await.expect("truncate");
    file.sync().await.expect("sync");
    seen.push(format!("{:?}", file.read_at(0, 100).await.expect("read")));
    disk.rename("a/b/f.log", "a/b/g.log").await.expect("rename");
    disk.sync_dir("a/b").await.expect("sync dir");
    seen.push(format!("{:?}", disk.list("a/b").await.expect("list")));
    seen.push(format!("{:?}", disk.open("a/b/f.log").await.map(|_| ()).map_err(|e| e.kind)));
    seen.push(format!("{:?}", disk.open("../escape").await.map(|_| ()).map_err(|e| e.kind)));
    disk.remove("a/b/g.log").await.expect("remove");
    seen.push(format!("{:?}", disk.remove("a/b/g.log").await.map_err(|e| e.kind)));
    seen.push(format!("{:?}", disk.list("a/b").await.expect("list")));
    seen
}

#[tokio::test]
async fn real_and_sim_backends_obey_one_contract() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = exercise(&Disk::Real(RealDisk::new(dir.path()))).await;
    let sim = exercise(&Disk::Sim(SimDisk::new(NodeRng::new(1, 0, 0)))).await;
    assert_eq!(real, sim);
    assert_eq!(real[0], format!("{:?}", Err::<(), _>(DiskErrorKind::AlreadyExists)));
    assert_eq!(real[1], format!("{:?}", b"hello\0\0\0\0\0world".to_vec()));
}

#[tokio::test]
async fn crash_drops_unsynced_bytes_and_unsynced_directory_entries() {
    let sim = SimDisk::new(NodeRng::new(2, 0, 0));
    let disk = Disk::Sim(sim.clone());
    disk.create_dir_all("d").await.expect("mkdir");
    let synced = disk.create("d/synced").await.expect("create");
    synced.write_at(0, b"durable").await.expect("write");
    synced.sync().await.expect("sync");
    disk.sync_dir("d").await.expect("sync dir");
    synced.write_at(7, b"+pending").await.expect("write");
    let unlisted = disk.create("d/unlisted").await.expect("create");
    unlisted.write_at(0, b"synced data, unsynced entry").await.expect("write");
    unlisted.sync().await.expect("sync");
    sim.crash();
    assert_eq!(disk.list("d").await.expect("list"), vec!["synced".to_string()]);
    let reopened = disk.open("d/synced").await.expect("open");
    assert_eq!(reopened.read_at(0, 100).await.expect("read"), b"durable".to_vec());
    let stale = synced.read_at(0, 1).await.expect_err("handle from before the crash");
    assert_eq!(stale.kind, DiskErrorKind::StaleHandle);
}

#[tokio::test]
async fn removal_is_undone_by_a_crash_until_the_directory_is_synced() {
    let sim = SimDisk::new(NodeRng::new(3, 0, 0));
    let disk = Disk::Sim(sim.clone());
    disk.create_dir_all("d").await.expect("mkdir");
    let file = disk.create("d/f").await.expect("create");
    file.write_at(0, b"x").await.expect("write");
    file.sync().await.expect("sync");
    disk.sync_dir("d").await.expect("sync dir");
    disk.remove("d/f").await.expect("remove");
    sim.crash();
    assert_eq!(disk.list("d").await.expect("list"), vec!["f".to_string()]);
    disk.remove("d/f").await.expect("remove");
    disk.sync_dir("d").await.expect("sync dir");
    sim.crash();
    assert!(disk.list("d").await.expect("list").is_empty());
}

#[tokio::test]
async fn failed_fsync_loses_the_pending_data() {
    let sim = SimDisk::new(NodeRng::new(4, 0, 0));
    let disk = Disk::Sim(sim.clone());
    let file = disk.create("f").await.expect("create");
    file.write_at(0, b"kept").await.expect("write");
    file.sync().await.expect("sync");
    sim.set_faults(SimDiskFaults { sync_eio_probability: 1.0, ..SimDiskFaults::default() });
    file.write_at(4, b"-lost").await.expect("write");
    let error = file.sync().await.expect_err("EIO");
    assert!(matches!(error.kind, DiskErrorKind::Io(_)));
    assert_eq!(file.read_at(0, 100).await.expect("read"), b"kept".to_vec());
}

#[tokio::test]
async fn torn_writes_keep_only_whole_sectors_of_the_torn_write() {
    let mut saw_tear = false;
    for seed in 0..64 {
        let sim = SimDisk::new(NodeRng::new(seed, 0, 0));
        let disk = Disk::Sim(sim.clone());
        let file = disk.create("f").await.expect("create");
        file.sync().await.expect("sync");
        disk.sync_dir("").await.expect("sync dir");
        sim.set_faults(SimDiskFaults { torn_write_on_crash_probability: 1.0, ..SimDiskFaults::default() });
        let data = vec![0xab_u8; 3 * SECTOR_BYTES as usize];
        file.write_at(0, &data).await.expect("write");
        sim.crash();
        let content = disk.open("f").await.expect("open").read_at(0, data.len()).await.expect("read");
        let kept = content.iter().take_while(|b| **b == 0xab).count() as u64;
        assert_eq!(kept % SECTOR_BYTES, 0, "seed {seed}: tear inside a sector");
        assert!(content[kept as usize..].iter().all(|b| *b == 0), "seed {seed}: bytes after the tear");
        saw_tear |= kept > 0;
    }
    assert!(saw_tear, "no seed kept a torn prefix");
}

#[tokio::test]
async fn power_cut_freezes_the_disk_until_the_crash() {
    let sim = SimDisk::new(NodeRng::new(5, 0, 0));
    let disk = Disk::Sim(sim.clone());
    sim.freeze_after_ops(1);
    disk.create("a").await.expect("first op runs");
    assert!(disk.create("b").await.is_err());
    assert!(sim.is_frozen());
    assert!(disk.list("").await.is_err());
    sim.crash();
    assert!(!sim.is_frozen());
    assert!(disk.list("").await.expect("list").is_empty());
}

/// Two openers of one disk: the second is refused (naming the holder) until
/// the first lets go; on both backends.
async fn lock_sequence(disk: &Disk) -> Vec<String> {
    let mut seen = Vec::new();
    let first = disk.lock_exclusive(1).await.expect("first opener locks");
    let refused = disk.lock_exclusive(2).await.expect_err("second opener is refused");
    seen.push(format!("{}", refused.op));
    seen.push(refused.path.to_string());
    let DiskErrorKind::Locked { holder } = refused.kind else { panic!("refused as Locked, got {refused:?}") };
    seen.push(holder.contains("node 1").to_string());
    drop(first);
    let second = disk.lock_exclusive(2).await.expect("free once the holder let go");
    drop(second);
    seen
}

#[tokio::test]
async fn a_locked_disk_refuses_a_second_opener_on_both_backends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let real = lock_sequence(&Disk::Real(RealDisk::new(dir.path()))).await;
    let sim = lock_sequence(&Disk::Sim(SimDisk::new(NodeRng::new(7, 0, 0)))).await;
    assert_eq!(real, sim);
    assert_eq!(real, vec!["lock".to_string(), keel_io::disk::LOCK_FILE.to_string(), "true".to_string()]);
    let written = std::fs::read_to_string(dir.path().join(keel_io::disk::LOCK_FILE)).expect("lock file");
    assert!(written.contains(&format!("pid={}", std::process::id())), "the holder writes its pid: {written:?}");
}

#[tokio::test]
async fn a_crash_releases_the_sim_lock_and_the_dead_holders_guard_releases_nothing() {
    let sim = SimDisk::new(NodeRng::new(8, 0, 0));
    let disk = Disk::Sim(sim.clone());
    let dead = disk.lock_exclusive(1).await.expect("lock");
    sim.crash();
    assert_eq!(sim.lock_holder(), None);
    let live = disk.lock_exclusive(2).await.expect("the crash released the lock");
    drop(dead);
    assert_eq!(sim.lock_holder(), Some(2), "a guard from before the crash must not release the new holder's lock");
    drop(live);
    assert_eq!(sim.lock_holder(), None);
}
