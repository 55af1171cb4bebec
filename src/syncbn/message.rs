//! What SyncBN's ranks send each other: one message per layer and direction, a header every
//! rank checks against every other rank's, then the values.
//!
//! Every value is an f64 (integers below 2^53 are exact):
//!
//! | word | holds |
//! |---|---|
//! | 0 | the format version ([`VERSION`]) |
//! | 1 | what the exchange is ([`Kind`]) |
//! | 2 | the module's call counter: exchanges it has joined before this one |
//! | 3 | 0: the rank's call is valid, 1: it is not (the payload is the reason, as text) |
//! | 4 | `num_features` |
//! | 5 | `affine` + 2 `track_running_stats` + 4 `momentum = None` |
//! | 6 | momentum (0 for None) |
//! | 7 | eps |
//! | 8.. | the payload |
//!
//! Payloads: a forward's is the rank's count of values per channel, then its per-channel mean
//! and M2 (`1 + 2C` values); a backward's the rank's count, then its `sum(dz)` and
//! `sum(dz * (x - mean))` per channel (`1 + 2C`); a parameter-gradient sum's the rank's
//! `grad_weight` and `grad_bias` (`2C`, or none without `affine`). A message is therefore
//! `8 * (8 + 1 + 2C)` bytes per rank (C = 2048: 32.8 kB), and every rank receives every rank's.

use crate::batchnorm::BatchNormOptions;
use crate::error::{Error, Result};

/// The message format's version.
pub(crate) const VERSION: f64 = 1.0;

/// Header words before the payload.
pub(crate) const HEADER: usize = 8;

/// What an exchange is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Forward = 1,
    Backward = 2,
    ParamGrads = 3,
}

impl Kind {
    fn name(v: f64) -> &'static str {
        match v as i64 {
            1 => "a forward",
            2 => "a backward",
            3 => "a parameter-gradient sum",
            _ => "an unknown exchange",
        }
    }
}

/// What every rank of a module's group must agree on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Agreement {
    pub kind: Kind,
    pub call: u64,
    pub num_features: usize,
    pub options: BatchNormOptions,
}

/// This rank's message: the header, then `payload` (the values), or the reason its call is
/// invalid.
pub(crate) fn encode(a: &Agreement, payload: std::result::Result<&[f64], &Error>) -> Vec<f64> {
    let o = &a.options;
    let flags = u8::from(o.affine)
        + 2 * u8::from(o.track_running_stats)
        + 4 * u8::from(o.momentum.is_none());
    let mut m = vec![
        VERSION,
        a.kind as u8 as f64,
        a.call as f64,
        f64::from(u8::from(payload.is_err())),
        a.num_features as f64,
        f64::from(flags),
        o.momentum.unwrap_or(0.0),
        o.eps,
    ];
    match payload {
        Ok(values) => m.extend_from_slice(values),
        Err(e) => m.extend(e.to_string().bytes().map(f64::from)),
    }
    m
}

/// Checks every rank's message against rank 0's in rank order, the same way on every rank
/// (each has every message, its own among them): the first offending rank's error, or every
/// rank's payload.
pub(crate) fn check(all: &[Vec<f64>]) -> Result<Vec<&[f64]>> {
    let reason = |rank: usize, reason: String| Error::Rank { rank, reason };
    // A rank's own error first: one with an invalid call names it, whatever else differs.
    for (rank, m) in all.iter().enumerate() {
        if m.len() < HEADER || m[0] != VERSION {
            return Err(reason(
                rank,
                "sent a message of another format (version)".into(),
            ));
        }
        if m[3] != 0.0 {
            let bytes: Vec<u8> = m[HEADER..].iter().map(|&b| b as u8).collect();
            return Err(reason(rank, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let Some(first) = all.first() else {
        return Err(Error::Collective(
            "an all-gather returned no message".into(),
        ));
    };
    for (rank, m) in all.iter().enumerate() {
        let described = |w: &[f64]| {
            format!(
                "num_features {}, affine {}, track_running_stats {}, momentum {}, eps {}",
                w[4],
                w[5] as u8 & 1 != 0,
                w[5] as u8 & 2 != 0,
                if w[5] as u8 & 4 != 0 {
                    "None".to_string()
                } else {
                    w[6].to_string()
                },
                w[7]
            )
        };
        if m[1] != first[1] {
            return Err(reason(
                rank,
                format!(
                    "joined {} while rank 0 joined {}: the ranks' calls are out of step",
                    Kind::name(m[1]),
                    Kind::name(first[1])
                ),
            ));
        }
        if m[2] != first[2] {
            return Err(reason(
                rank,
                format!(
                    "is at call {} of this module, rank 0 at call {}: the ranks' calls are out \
                     of step",
                    m[2], first[2]
                ),
            ));
        }
        if m[4..HEADER] != first[4..HEADER] {
            return Err(reason(
                rank,
                format!(
                    "has a module with {}; rank 0's has {}",
                    described(m),
                    described(first)
                ),
            ));
        }
    }
    Ok(all.iter().map(|m| &m[HEADER..]).collect())
}

/// A payload's `count` then two `[C]` vectors, as sent: (count, first, second). A malformed
/// one is a [`Error::Rank`] naming the rank.
pub(crate) fn count_and_pair(rank: usize, p: &[f64], c: usize) -> Result<(u64, &[f64], &[f64])> {
    if p.len() != 1 + 2 * c || p[0] < 0.0 || p[0] != p[0].trunc() {
        return Err(Error::Rank {
            rank,
            reason: format!("sent {} values for {c} channels", p.len()),
        });
    }
    Ok((p[0] as u64, &p[1..1 + c], &p[1 + c..]))
}
