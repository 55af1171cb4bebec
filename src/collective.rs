//! The collectives SyncBN needs, behind one trait: a rank, a group size, and an all-gather of a
//! small f64 message. [`LocalGroup`] runs a group of threads in one process (no dependency);
//! `MpiGroup` (cargo feature `mpi`) wraps any rsmpi communicator the caller passes in, for
//! groups of processes on one host or many. The crate never initialises MPI itself.
//!
//! ```
//! use wgpu_batchnorm::collective::{Collective, LocalGroup};
//! let ranks = LocalGroup::new(3);
//! let gathered: Vec<Vec<Vec<f64>>> = std::thread::scope(|s| {
//!     let runs: Vec<_> = ranks
//!         .iter()
//!         .map(|g| s.spawn(move || g.all_gather(&[g.rank() as f64; 2]).unwrap()))
//!         .collect();
//!     runs.into_iter().map(|r| r.join().unwrap()).collect()
//! });
//! // Every rank gets every rank's message, in rank order.
//! assert!(gathered.iter().all(|all| all == &vec![vec![0.0; 2], vec![1.0; 2], vec![2.0; 2]]));
//! ```

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// A group of ranks that exchange messages collectively: every rank calls each operation, in
/// the same order.
pub trait Collective {
    /// This rank, `0..size()`.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn size(&self) -> usize;

    /// Every rank's `message`, in rank order (messages may differ in length). Blocks until
    /// every rank has called it.
    fn all_gather(&self, message: &[f64]) -> Result<Vec<Vec<f64>>>;
}

/// A group behind a pointer (`Rc`, `Arc`, `Box`, `&`) is the group: one group can serve
/// several modules (each SyncBatchNorm takes its group by value).
impl<P> Collective for P
where
    P: std::ops::Deref,
    P::Target: Collective,
{
    fn rank(&self) -> usize {
        (**self).rank()
    }

    fn size(&self) -> usize {
        (**self).size()
    }

    fn all_gather(&self, message: &[f64]) -> Result<Vec<Vec<f64>>> {
        (**self).all_gather(message)
    }
}

/// How long a [`LocalGroup`] rank waits for the others by default before it fails with
/// [`Error::Collective`] (a rank that never calls is a bug no message can detect).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(300);

/// One rank of a group of threads in this process (see [`LocalGroup::new`]).
#[derive(Debug)]
pub struct LocalGroup {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    timeout: Duration,
    state: Mutex<Round>,
    changed: Condvar,
}

/// One all-gather at a time: ranks fill their slots, the last one publishes the round, every
/// rank takes its copy, and the last reader opens the next round.
#[derive(Debug, Default)]
struct Round {
    slots: Vec<Option<Vec<f64>>>,
    arrived: usize,
    published: Option<Arc<Vec<Vec<f64>>>>,
    readers_left: usize,
    /// A rank gave up waiting: the group's rounds can no longer be trusted.
    broken: bool,
}

impl LocalGroup {
    /// A group of `size` ranks, one handle per rank (hand each to its own thread).
    pub fn new(size: usize) -> Vec<LocalGroup> {
        Self::with_timeout(size, LOCAL_TIMEOUT)
    }

    /// [`LocalGroup::new`] whose waits fail after `timeout`.
    pub fn with_timeout(size: usize, timeout: Duration) -> Vec<LocalGroup> {
        let shared = Arc::new(Shared {
            size,
            timeout,
            state: Mutex::new(Round {
                slots: vec![None; size],
                ..Round::default()
            }),
            changed: Condvar::new(),
        });
        (0..size)
            .map(|rank| LocalGroup {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }
}

impl Collective for LocalGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_gather(&self, message: &[f64]) -> Result<Vec<Vec<f64>>> {
        let s = &*self.shared;
        let broken = || Error::Collective("a rank of this local group timed out earlier".into());
        let mut round = s
            .state
            .lock()
            .map_err(|_| Error::Collective("a rank panicked inside an all-gather".into()))?;
        // Wait for the previous round to be read by every rank.
        round = wait(s, round, |r| r.published.is_some() && !r.broken)?;
        if round.broken {
            return Err(broken());
        }
        round.slots[self.rank] = Some(message.to_vec());
        round.arrived += 1;
        if round.arrived == s.size {
            let all = round.slots.iter_mut().map(|m| m.take().unwrap_or_default());
            round.published = Some(Arc::new(all.collect()));
            round.readers_left = s.size;
            s.changed.notify_all();
        }
        round = wait(s, round, |r| r.published.is_none() && !r.broken)?;
        if round.broken {
            return Err(broken());
        }
        let all = round.published.clone().unwrap_or_default();
        round.readers_left -= 1;
        if round.readers_left == 0 {
            round.published = None;
            round.arrived = 0;
            s.changed.notify_all();
        }
        Ok(all.as_ref().clone())
    }
}

/// Waits while `blocked` holds; a timeout breaks the group for every rank.
fn wait<'a>(
    s: &Shared,
    round: std::sync::MutexGuard<'a, Round>,
    blocked: impl FnMut(&mut Round) -> bool,
) -> Result<std::sync::MutexGuard<'a, Round>> {
    let (mut round, timeout) = s
        .changed
        .wait_timeout_while(round, s.timeout, blocked)
        .map_err(|_| Error::Collective("a rank panicked inside an all-gather".into()))?;
    if timeout.timed_out() {
        round.broken = true;
        s.changed.notify_all();
        return Err(Error::Collective(format!(
            "the other ranks did not join the all-gather within {:?}",
            s.timeout
        )));
    }
    Ok(round)
}

/// An rsmpi communicator as a [`Collective`]: the world, or a sub-communicator from
/// `split_by_color` in the part of PyTorch's `process_group`. The program initialises MPI
/// (`mpi::initialize()`) and keeps its `Universe` alive; this crate never does either.
///
/// An all-gather is two MPI collectives: the lengths (one count per rank), then the messages
/// (`MPI_Allgatherv`), so ranks whose messages differ in length (a rank with another channel
/// count, or an error to report) still complete it.
#[cfg(feature = "mpi")]
pub struct MpiGroup<C: mpi::traits::Communicator> {
    comm: C,
}

#[cfg(feature = "mpi")]
impl<C: mpi::traits::Communicator> MpiGroup<C> {
    /// Wraps `comm`.
    pub fn new(comm: C) -> Self {
        MpiGroup { comm }
    }

    /// The communicator.
    pub fn communicator(&self) -> &C {
        &self.comm
    }
}

#[cfg(feature = "mpi")]
impl<C: mpi::traits::Communicator> Collective for MpiGroup<C> {
    fn rank(&self) -> usize {
        self.comm.rank() as usize
    }

    fn size(&self) -> usize {
        self.comm.size() as usize
    }

    fn all_gather(&self, message: &[f64]) -> Result<Vec<Vec<f64>>> {
        use mpi::datatype::PartitionMut;
        use mpi::traits::CommunicatorCollectives;
        let size = self.size();
        let len = mpi::Count::try_from(message.len())
            .map_err(|_| Error::Collective(format!("a message of {} values", message.len())))?;
        let mut lens = vec![0 as mpi::Count; size];
        self.comm.all_gather_into(&len, &mut lens[..]);
        let mut displs = Vec::with_capacity(size);
        let mut total: mpi::Count = 0;
        for &l in &lens {
            displs.push(total);
            total = total
                .checked_add(l)
                .ok_or_else(|| Error::Collective("the messages exceed an MPI count".into()))?;
        }
        let mut flat = vec![0.0f64; total as usize];
        {
            let mut parts = PartitionMut::new(&mut flat[..], &lens[..], &displs[..]);
            self.comm.all_gather_varcount_into(message, &mut parts);
        }
        Ok(lens
            .iter()
            .zip(&displs)
            .map(|(&l, &d)| flat[d as usize..(d + l) as usize].to_vec())
            .collect())
    }
}
