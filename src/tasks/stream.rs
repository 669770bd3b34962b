//! Seeded random streams for the tasks: one ChaCha key per (seed, purpose), one stream per index.
//!
//! Every batch is drawn from its own stream, so batch `index` is a pure function of
//! (seed, index, batch size) and a resumed run sees what an uninterrupted one would.
//! Purposes get different keys, so the evaluation data can never coincide with
//! the stream of any training batch, whatever its index.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; each purpose has its own key.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Purpose {
    /// Synthetic training batches, one stream per batch index.
    Train = 1,
    /// The synthetic held-out set (stream 0).
    Eval = 2,
    /// The order of the training images in one epoch, one stream per epoch.
    Shuffle = 3,
    /// The fixed pixel permutation of the "permuted" pixel tasks (stream 0).
    Permutation = 4,
    /// The language model's frozen word embedding (stream 0).
    Embedding = 5,
}

/// The stream `stream` of the key derived from (`seed`, `purpose`).
pub(crate) fn rng(seed: u64, purpose: Purpose, stream: u64) -> ChaCha8Rng {
    // The key is written out rather than hashed: ChaCha is a PRF, so distinct keys
    // give independent streams, and the derivation stays readable and portable.
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// A uniform shuffle of `0..n` (Fisher–Yates), written out so the order depends only
/// on the stream, not on how a library version implements shuffling.
pub(crate) fn shuffled(n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    use rand::Rng;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn purposes_and_streams_differ() {
        let draw = |p, s| rng(7, p, s).random::<u64>();
        assert_ne!(draw(Purpose::Train, 0), draw(Purpose::Eval, 0));
        assert_ne!(draw(Purpose::Train, 0), draw(Purpose::Train, 1));
        assert_eq!(draw(Purpose::Train, 5), draw(Purpose::Train, 5));
        assert_ne!(
            rng(7, Purpose::Train, 0).random::<u64>(),
            rng(8, Purpose::Train, 0).random::<u64>()
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut order = shuffled(100, &mut rng(1, Purpose::Shuffle, 0));
        assert_ne!(order, (0..100).collect::<Vec<_>>());
        order.sort_unstable();
        assert_eq!(order, (0..100).collect::<Vec<_>>());
        assert!(shuffled(0, &mut rng(1, Purpose::Shuffle, 0)).is_empty());
    }
}
