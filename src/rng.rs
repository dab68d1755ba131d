//! graft's one source of determinism: the FNV-1a hash and the SplitMix64 step, and
//! the two streams built on them. Written out here rather than taken from a crate so
//! that every stream stays bit-identical across dependency upgrades and machines:
//! - [`Rng`] (xoshiro256++ seeded through SplitMix64): synthetic datasets and
//!   shuffle orders;
//! - [`SplitMix64`]: initial parameter values, one stream per `(seed, path)`.
//!
//! Both streams are pinned by tests (a change would alter every dataset, every
//! initialised weight and every resume check), which is why both generators stay.

/// FNV-1a prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;
/// FNV-1a offset basis.
const FNV_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
/// The SplitMix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// 64-bit FNV-1a: stable across versions and platforms.
#[derive(Copy, Clone, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a(FNV_BASIS)
    }
}

impl Fnv1a {
    /// The standard offset basis mixed with `seed` (FNV-1a keyed by a seed).
    pub fn seeded(seed: u64) -> Fnv1a {
        Fnv1a(FNV_BASIS ^ seed.wrapping_mul(GOLDEN))
    }

    pub fn write(&mut self, bytes: &[u8]) -> &mut Fnv1a {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(FNV_PRIME);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// 64-bit FNV-1a of the parts, as 16 hex digits: stable across versions and platforms.
pub fn fnv64(parts: &[&[u8]]) -> String {
    let mut h = Fnv1a::default();
    for p in parts {
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h.write(p).write(&[0xff]);
    }
    format!("{:016x}", h.finish())
}

/// A stable 64-bit hash of a string (FNV-1a), for deriving streams from names.
pub fn hash_str(s: &str) -> u64 {
    Fnv1a::default().write(s.as_bytes()).finish()
}

/// One SplitMix64 step: advance `x` and return the next output.
fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(GOLDEN);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64 as a stream: small, and private to each parameter, so initial values
/// depend only on `(seed, path)`.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// The stream of parameter `path` under run seed `seed`.
    pub fn for_param(seed: u64, path: &str) -> SplitMix64 {
        SplitMix64(param_seed(seed, path))
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix(&mut self.0)
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// A 63-bit seed from the run seed and a parameter path (seeded FNV-1a).
pub fn param_seed(seed: u64, path: &str) -> u64 {
    Fnv1a::seeded(seed).write(path.as_bytes()).finish() >> 1
}

/// xoshiro256++.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
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
    fn fingerprints_separate_parts() {
        assert_ne!(fnv64(&[b"ab", b"c"]), fnv64(&[b"a", b"bc"]));
        assert_eq!(fnv64(&[b"x"]).len(), 16);
        // Pinned: run directories record it; a change makes every checkpoint foreign.
        assert_eq!(fnv64(&[b"ab", b"c"]), "20ba9b3025a8b421");
    }

    #[test]
    fn the_parameter_streams_are_pinned() {
        // As graft has always drawn them: a change here changes every initialised
        // weight and every resume check.
        assert_eq!(param_seed(0, "w"), 0x57b1f5264301022b);
        let mut r = SplitMix64::for_param(0, "w");
        assert_eq!((r.next_u64(), r.next_u64()), (0x477df08ce09019f5, 0xe4b0d10a6e4aa1ab));
        assert_eq!(r.normal(), -0.4549593134169451);
        let mut r = SplitMix64::for_param(7, "target.blocks.3.attn.qkv.weight");
        assert_eq!((r.next_u64(), r.next_u64()), (0x059ade1bb41a3e1d, 0x5e5991207b7e2f34));
        assert_eq!(r.normal(), 0.2880349721520159);
    }

    #[test]
    fn fnv1a_is_pinned() {
        assert_eq!(hash_str(""), 0xcbf29ce484222325);
        let mut h = Fnv1a::default();
        h.write(b"graft ir").write(&[0xff]);
        assert_eq!(h.finish(), 0xeaf68def0d924c5d);
    }

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
