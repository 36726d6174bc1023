//! The one seeded random generator of losskit: the conformance kit's random cases, the
//! examples' generated data, shuffles and splits, and a training run's initial weights all draw
//! from it, never from a backend's process-wide generator, so a run is a function of its seed
//! whatever else the process does at the same time.

/// A small deterministic generator (SplitMix64, Steele et al. 2014): 64 bits of state, a full
/// period, and good statistical quality for data generation and shuffling (not cryptographic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    ///
    /// The seed is mixed with a constant so that seed 0 does not start from state 0. The
    /// streams that existing runs depend on (generated data, splits, epoch orders) were made
    /// with exactly this constructor: changing it would change every checkpointed run's data.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// An independent stream of `seed` for one purpose (`"init"`, `"augment"`, ...): the
    /// label is hashed into the seed, so two purposes of one run never share draws and adding a
    /// purpose leaves the others' streams unchanged.
    pub fn stream(seed: u64, label: &str) -> Self {
        // FNV-1a over the label, then one SplitMix step to spread it over all bits.
        let hash = label.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01B3)
        });
        let mut mixer = Self(hash);
        Self::new(seed ^ mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform float in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform()
    }

    /// A uniform index below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-12);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Shuffles in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_of_a_seed_is_fixed() {
        // Generated data and epoch orders of existing checkpoints depend on these exact bits.
        let mut rng = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        let mut again = Rng::new(42);
        assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
        assert_eq!(first[0], 0x021A_94BB_B760_1313, "{:#X}", first[0]);
    }

    #[test]
    fn streams_differ_by_label_and_seed() {
        let draw = |mut rng: Rng| rng.next_u64();
        assert_ne!(
            draw(Rng::stream(1, "init")),
            draw(Rng::stream(1, "augment"))
        );
        assert_ne!(draw(Rng::stream(1, "init")), draw(Rng::stream(2, "init")));
        assert_eq!(draw(Rng::stream(1, "init")), draw(Rng::stream(1, "init")));
        assert_ne!(draw(Rng::stream(1, "init")), draw(Rng::new(1)));
    }

    #[test]
    fn draws_stay_in_range_and_shuffles_permute() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            assert!(rng.below(5) < 5);
            let r = rng.range(-2.0, 3.0);
            assert!((-2.0..3.0).contains(&r));
        }
        assert_eq!(rng.below(0), 0);
        let mut items: Vec<usize> = (0..50).collect();
        rng.shuffle(&mut items);
        assert_ne!(items, (0..50).collect::<Vec<_>>());
        items.sort_unstable();
        assert_eq!(items, (0..50).collect::<Vec<_>>());
    }
}
