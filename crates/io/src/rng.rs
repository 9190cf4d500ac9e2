//! The node's random number generator.
//!
//! In simulation every node's randomness derives from (seed, node id,
//! incarnation), so a restarted node draws different numbers than before its
//! crash, yet the whole run still replays exactly from the seed. In production
//! the seed comes from OS entropy. Nothing in Keel may use `thread_rng`: madsim
//! cannot intercept it on Linux, which made raft elections irreproducible.

use rand::{Error, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ChaCha8 seeded per node and incarnation. Implements `rand::RngCore`.
#[derive(Clone, Debug)]
pub struct NodeRng {
    rng: ChaCha8Rng,
}

impl NodeRng {
    /// Deterministic: the same (seed, node_id, incarnation) always yields the
    /// same stream, and differing inputs yield unrelated streams.
    pub fn new(seed: u64, node_id: u64, incarnation: u64) -> Self {
        let mut key = [0u8; 32];
        key[0..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&node_id.to_le_bytes());
        key[16..24].copy_from_slice(&incarnation.to_le_bytes());
        key[24..32].copy_from_slice(b"keel-rng");
        NodeRng { rng: ChaCha8Rng::from_seed(key) }
    }

    /// Production: seeded from OS entropy, so no two processes share a stream.
    pub fn from_entropy() -> Self {
        NodeRng { rng: ChaCha8Rng::from_entropy() }
    }

    /// An independent child stream (e.g. one for the SimDisk, one for raft),
    /// so adding draws in one component does not shift another's numbers.
    pub fn fork(&mut self, stream: u64) -> NodeRng {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        key[0..8].iter_mut().zip(stream.to_le_bytes()).for_each(|(k, s)| *k ^= s);
        NodeRng { rng: ChaCha8Rng::from_seed(key) }
    }
}

impl RngCore for NodeRng {
    fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.rng.try_fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream_different_inputs_different_streams() {
        let draw = |seed, node, incarnation| {
            let mut rng = NodeRng::new(seed, node, incarnation);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1, 0), draw(7, 1, 0));
        assert_ne!(draw(7, 1, 0), draw(7, 2, 0));
        assert_ne!(draw(7, 1, 0), draw(7, 1, 1));
        assert_ne!(draw(7, 1, 0), draw(8, 1, 0));
    }
}
