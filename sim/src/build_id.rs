//! The running binary's build id: the crate version and a hash of the
//! executable's bytes.
//!
//! A seed replays exactly only on the binary that recorded it: any change to
//! the code moves the RNG streams. Traces record the id and replay lines pass
//! it back with `--build`, so a replay on another binary says so instead of
//! silently diverging. Two builds of identical source may get different ids
//! (a linker may lay out bytes differently); two different binaries never
//! share one.

use std::sync::OnceLock;

/// This binary's build id, `VERSION-HASH` (16 hex digits), computed once.
/// A binary that cannot read itself gets `VERSION-unknown`, which never
/// matches a recorded id.
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let hash = std::env::current_exe().and_then(std::fs::read).map(|bytes| format!("{:016x}", executable_hash(&bytes)));
        format!("{}-{}", env!("CARGO_PKG_VERSION"), hash.as_deref().unwrap_or("unknown"))
    })
}

/// A fast 64-bit hash of a whole executable (tens of megabytes), eight bytes
/// at a time on four independent lanes. It is no cryptographic hash: it
/// tells binaries apart, nobody forges one.
pub fn executable_hash(bytes: &[u8]) -> u64 {
    const MULTIPLIERS: [u64; 4] = [0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f, 0x1656_67b1_9e37_79f9, 0x85eb_ca77_c2b2_ae63];
    let mut lanes: [u64; 4] = [0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, (word, multiplier)) in lanes.iter_mut().zip(block.chunks_exact(8).zip(MULTIPLIERS)) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            *lane = (*lane ^ word).wrapping_mul(multiplier).rotate_left(31);
        }
    }
    let mut tail = [0u8; 32];
    tail[..blocks.remainder().len()].copy_from_slice(blocks.remainder());
    let mut hash = bytes.len() as u64;
    for (lane, (word, multiplier)) in lanes.iter().zip(tail.chunks_exact(8).zip(MULTIPLIERS)) {
        let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        hash = mix(hash ^ mix(*lane ^ word.wrapping_mul(multiplier)));
    }
    hash
}

/// The murmur3 finalizer: every input bit moves about half the output bits.
fn mix(mut value: u64) -> u64 {
    value ^= value >> 33;
    value = value.wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^= value >> 33;
    value = value.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    value ^ (value >> 33)
}

/// Checks a replay's `--build` against this binary's id: the message to print
/// (exit 2) when they differ.
pub fn check_recorded(seed: u64, recorded: &str, current: &str) -> Result<(), String> {
    if recorded == current {
        return Ok(());
    }
    Err(format!(
        "seed {seed} was recorded by build {recorded}; this binary is build {current}, so the run may diverge from the recording. \
         Rebuild at the recorded commit, or drop --build to run anyway."
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_on_the_recording_build_runs() {
        assert_eq!(check_recorded(7, "0.1.0-00000000000000aa", "0.1.0-00000000000000aa"), Ok(()));
    }

    #[test]
    fn a_replay_on_another_build_names_both_builds_and_the_way_out() {
        let message = check_recorded(7, "0.1.0-00000000000000aa", "0.1.0-00000000000000bb").expect_err("different builds");
        assert!(message.contains("seed 7 was recorded by build 0.1.0-00000000000000aa"), "{message}");
        assert!(message.contains("this binary is build 0.1.0-00000000000000bb"), "{message}");
        assert!(message.contains("drop --build"), "{message}");
    }

    #[test]
    fn this_binarys_id_is_its_version_and_the_hash_of_its_bytes() {
        let id = build_id();
        let bytes = std::fs::read(std::env::current_exe().expect("current exe")).expect("read own executable");
        assert_eq!(id, format!("{}-{:016x}", env!("CARGO_PKG_VERSION"), executable_hash(&bytes)));
        assert_eq!(build_id(), id, "computed once, the same every call");
    }

    /// Binaries that differ in one byte anywhere (or only in length) get
    /// different hashes: a rebuilt binary never passes for the recording one.
    #[test]
    fn one_changed_byte_anywhere_or_a_changed_length_changes_the_hash() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let original = executable_hash(&bytes);
        for at in [0, 7, 8, 31, 32, 500, 991, 992, 999] {
            let mut changed = bytes.clone();
            changed[at] ^= 1;
            assert_ne!(executable_hash(&changed), original, "flipping a bit of byte {at}");
        }
        assert_ne!(executable_hash(&bytes[..999]), original);
        let mut padded = bytes.clone();
        padded.push(0);
        assert_ne!(executable_hash(&padded), original, "a trailing zero byte");
        assert_eq!(executable_hash(&bytes), original, "the same bytes, the same hash");
    }
}
