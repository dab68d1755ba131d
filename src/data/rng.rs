//! A small deterministic random number generator (xoshiro256++ seeded through
//! SplitMix64). Written out here rather than taken from a crate so that synthetic
//! datasets and shuffle orders stay byte-identical across dependency upgrades: the
//! same seed gives the same data on every machine and every version of graft.

/// xoshiro256++.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a), for deriving streams from names.
pub fn hash_str(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

impl Rng {
    /// A generator from one seed.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        Rng { s: [splitmix(&mut x), splitmix(&mut x), splitmix(&mut x), splitmix(&mut x)] }
    }

    /// An independent stream for a tuple of keys (seed, purpose, index, …).
    pub fn derive(keys: &[u64]) -> Rng {
        let mut h = 0x6A09_E667_F3BC_C908u64;
        for &k in keys {
            let mut x = h ^ k;
            h = splitmix(&mut x);
        }
        Rng::new(h)
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)`, 24 bits.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let n = n.max(1);
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// Fill `out` with uniform values in `[-amp, amp)`: four 16-bit draws per call,
    /// plenty for pixel noise and several times cheaper than one draw per value.
    pub fn fill_noise(&mut self, out: &mut [f32], amp: f32) {
        let scale = 2.0 * amp / 65536.0;
        for chunk in out.chunks_mut(4) {
            let mut x = self.next_u64();
            for v in chunk {
                *v = (x & 0xFFFF) as f32 * scale - amp;
                x >>= 16;
            }
        }
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            xs.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(&[1, 2]).next_u64()).collect();
        assert!(a.iter().all(|&x| x == a[0]));
        assert_ne!(Rng::derive(&[1, 2]).next_u64(), Rng::derive(&[2, 1]).next_u64());
        // Pinned: a change here changes every synthetic dataset.
        assert_eq!(Rng::new(0).next_u64(), 0x53175D61490B23DF);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = Rng::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..5000 {
            let f = r.f32();
            assert!((0.0..1.0).contains(&f));
            counts[r.below(5) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
        let mut v = vec![0.0f32; 1001];
        r.fill_noise(&mut v, 0.5);
        assert!(v.iter().all(|x| (-0.5..0.5).contains(x)));
        let mut p: Vec<u32> = (0..100).collect();
        r.shuffle(&mut p);
        let mut q = p.clone();
        q.sort();
        assert_eq!(q, (0..100).collect::<Vec<_>>());
        assert_ne!(p, q);
    }
}
