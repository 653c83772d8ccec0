//! The stable bucket of a user: a number in `0..100` from a hash of `(salt, user)`.
//!
//! A percentage rollout includes a user iff `bucket(salt, user) < percentage`, which gives the
//! two properties rollouts need: the same user always lands in the same bucket (in every process,
//! after every restart, on every machine), and raising the percentage only adds users (a user in
//! at 10% has a bucket below 10, so is below 20 too). Two flags with different salts put the same
//! user in independent buckets, so two 25% rollouts share about 6.25% of users, not 25%.
//!
//! The hash is MurmurHash3 (x86, 32-bit) of `"{salt}:{user}"` with seed 0, the scheme of
//! Unleash's clients (`normalizedValue`): a published function with published test vectors, stable
//! by definition, unlike `std`'s `DefaultHasher`, whose algorithm may change between Rust
//! releases and would then move every user to another bucket. The seed guide's `hash % 100` over
//! the user id alone is the same for every flag, which is why its flags pick the same users.

/// The number of buckets: percentages are whole numbers, so a bucket is one percent of users.
pub const BUCKETS: u32 = 100;

/// The bucket of `user` under `salt`, in `0..BUCKETS`.
pub fn bucket(salt: &str, user: &str) -> u32 {
    let mut h = Murmur3::new(0);
    h.write(salt.as_bytes());
    h.write(b":");
    h.write(user.as_bytes());
    h.finish() % BUCKETS
}

/// Whether `user` is within the first `percentage` buckets under `salt`.
pub fn in_rollout(salt: &str, user: &str, percentage: u8) -> bool {
    bucket(salt, user) < u32::from(percentage)
}

/// MurmurHash3_x86_32, fed in pieces so `salt:user` needs no joined string.
struct Murmur3 {
    h: u32,
    /// Bytes not yet forming a whole 4-byte block.
    tail: [u8; 4],
    tail_len: usize,
    len: u32,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

impl Murmur3 {
    fn new(seed: u32) -> Self {
        Self {
            h: seed,
            tail: [0; 4],
            tail_len: 0,
            len: 0,
        }
    }

    fn mix(k: u32) -> u32 {
        k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
    }

    fn block(&mut self, block: [u8; 4]) {
        self.h ^= Self::mix(u32::from_le_bytes(block));
        self.h = self
            .h
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }

    fn write(&mut self, bytes: &[u8]) {
        // The reference hashes a length modulo 2^32; so do we.
        self.len = self.len.wrapping_add(bytes.len() as u32);
        for &b in bytes {
            self.tail[self.tail_len] = b;
            self.tail_len += 1;
            if self.tail_len == 4 {
                self.block(self.tail);
                self.tail_len = 0;
            }
        }
    }

    fn finish(mut self) -> u32 {
        if self.tail_len > 0 {
            let mut k = [0u8; 4];
            k[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            self.h ^= Self::mix(u32::from_le_bytes(k));
        }
        let mut h = self.h ^ self.len;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
fn murmur3(bytes: &[u8], seed: u32) -> u32 {
    let mut h = Murmur3::new(seed);
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_published_test_vectors() {
        // From the reference implementation's test suite (SMHasher) and its widely quoted checks.
        assert_eq!(murmur3(b"", 0), 0);
        assert_eq!(murmur3(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3(&[0, 0, 0, 0], 0), 0x2362_f9de);
        assert_eq!(murmur3(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3(b"abc", 0), 0xb3dd_93fa);
        assert_eq!(murmur3(b"Hello, world!", 0x9747_b28c), 0x2488_4cba);
        assert_eq!(
            murmur3(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn feeding_in_pieces_hashes_like_one_string() {
        let mut h = Murmur3::new(0);
        h.write(b"new-");
        h.write(b"ui:");
        h.write(b"alice");
        assert_eq!(h.finish(), murmur3(b"new-ui:alice", 0));
    }

    #[test]
    fn buckets_are_spread_evenly() {
        let mut counts = [0u32; BUCKETS as usize];
        for i in 0..100_000 {
            counts[bucket("spread", &format!("user-{i}")) as usize] += 1;
        }
        // 1,000 expected per bucket; a fair hash stays within about 4 standard deviations (~126).
        for (b, n) in counts.iter().enumerate() {
            assert!((850..=1150).contains(n), "bucket {b} has {n} of 100,000");
        }
    }

    #[test]
    fn raising_the_percentage_only_adds_users() {
        for i in 0..2_000 {
            let user = format!("u{i}");
            let first_in = (0..=100u8).find(|p| in_rollout("nest", &user, *p));
            if let Some(p) = first_in {
                assert!(
                    (p..=100).all(|q| in_rollout("nest", &user, q)),
                    "{user} is in at {p}% but out at a higher percentage"
                );
            }
            assert!(!in_rollout("nest", &user, 0), "nobody is in at 0%");
            assert!(in_rollout("nest", &user, 100), "everybody is in at 100%");
        }
    }
}

/// Property tests: nesting and range for any salt, user and pair of percentages.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::prop::config())]

        /// In at `low` means in at every `high >= low`; the bucket is in range and the same twice.
        #[test]
        fn prop_a_user_in_at_a_percentage_is_in_at_every_higher_one(
            salt in ".{0,20}", user in ".{0,40}", a in 0u8..=100, b in 0u8..=100,
        ) {
            let (low, high) = (a.min(b), a.max(b));
            let bucket_now = bucket(&salt, &user);
            prop_assert!(bucket_now < BUCKETS);
            prop_assert_eq!(bucket_now, bucket(&salt, &user));
            if in_rollout(&salt, &user, low) {
                prop_assert!(in_rollout(&salt, &user, high));
            }
        }
    }
}
