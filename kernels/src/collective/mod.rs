//! Collectives between the replicas of a data-parallel learner: all-reduce (sum) of f32 buffers,
//! broadcast, and all-gather (ZeRO-1's parameter shards).
//!
//! Two implementations of one interface, [`Collective`]:
//! - [`InProcessCollective`]: CPU replicas on threads of one process. Each rank publishes its
//!   buffer, and every element is summed in rank order (`((b₀ + b₁) + b₂) + …`) whatever the
//!   threads' timing, so the result is the same bits on every rank and in every run.
//! - [`nccl::NcclCollective`]: one rank per GPU through NCCL (cudarc's bindings, opened at run
//!   time like the rest of the CUDA backend). On a machine without a driver, a device or
//!   `libnccl.so.2`, creating the group is an error that says which, never a panic.
//!
//! Every rank calls the same collectives in the same order with buffers of the same length (as
//! with NCCL); a rank that fails calls [`Collective::abort`], and the others' pending and later
//! calls return [`CollectiveError::Aborted`] instead of waiting for it forever.

pub mod nccl;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// Why a collective did not complete.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectiveError {
    /// Another rank gave up (its own error is in `reason`); this rank's call was abandoned.
    #[error("collective abandoned: {reason}")]
    Aborted {
        /// What the rank that aborted said.
        reason: String,
    },
    /// The ranks disagreed about a call (buffer lengths, root): a bug in the caller.
    #[error("{op} on rank {rank}: {message}")]
    Mismatch {
        /// The collective (`all_reduce_sum`, `broadcast`, `all_gather`).
        op: &'static str,
        /// The rank that noticed.
        rank: usize,
        /// What did not match.
        message: String,
    },
    /// The group cannot be created here: no driver, no such device, no NCCL library.
    #[error("NCCL is not available: {0}")]
    Unavailable(String),
    /// An NCCL or CUDA call failed.
    #[error("NCCL: {context}: {message}")]
    Nccl {
        /// The call and the rank.
        context: String,
        /// The library's status.
        message: String,
    },
}

/// One rank's view of a group of replicas. `Buffer` is where the values live: host memory for
/// CPU replicas, device memory for GPUs.
pub trait Collective: Send {
    /// Host slice or device buffer of f32 values.
    type Buffer: ?Sized;

    /// This rank, 0-based.
    fn rank(&self) -> usize;

    /// Ranks in the group.
    fn world_size(&self) -> usize;

    /// Replaces `buffer` on every rank by the element-wise sum of all ranks' buffers.
    fn all_reduce_sum(&self, buffer: &mut Self::Buffer) -> Result<(), CollectiveError>;

    /// Replaces `buffer` on every rank by rank `root`'s.
    fn broadcast(&self, buffer: &mut Self::Buffer, root: usize) -> Result<(), CollectiveError>;

    /// Writes every rank's `shard` into `gathered`, rank `r`'s at `r × shard.len()`;
    /// `gathered` holds `world_size × shard.len()` values.
    fn all_gather(
        &self,
        shard: &Self::Buffer,
        gathered: &mut Self::Buffer,
    ) -> Result<(), CollectiveError>;

    /// Tells the other ranks this one will not take part any more (`reason` is passed on), so
    /// none of them waits for it.
    fn abort(&self, reason: &str);
}

/// What the ranks of one in-process group share: a rendezvous and one published buffer per rank.
struct Shared {
    world: usize,
    round: Mutex<Round>,
    arrived: Condvar,
    /// Rank `r`'s contribution to the collective in progress.
    slots: Vec<RwLock<Vec<f32>>>,
}

/// The barrier's state.
struct Round {
    /// Ranks waiting at the current barrier.
    waiting: usize,
    /// Barriers completed: a rank waits until it changes.
    generation: u64,
    /// Set by [`Collective::abort`]: every wait from then on fails with it.
    aborted: Option<String>,
}

impl Shared {
    fn round(&self) -> MutexGuard<'_, Round> {
        // A rank that panicked while holding the lock cannot leave `Round` half-updated (each
        // update is a single assignment), so the state is still good.
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every rank has arrived, or fails if one aborted.
    fn barrier(&self) -> Result<(), CollectiveError> {
        let mut round = self.round();
        if let Some(reason) = &round.aborted {
            return Err(CollectiveError::Aborted {
                reason: reason.clone(),
            });
        }
        round.waiting += 1;
        if round.waiting == self.world {
            round.waiting = 0;
            round.generation += 1;
            self.arrived.notify_all();
            return Ok(());
        }
        let generation = round.generation;
        while round.generation == generation && round.aborted.is_none() {
            round = self.arrived.wait(round).unwrap_or_else(|e| e.into_inner());
        }
        match &round.aborted {
            // The barrier was passed before the abort: this rank's collective completed.
            _ if round.generation != generation => Ok(()),
            Some(reason) => Err(CollectiveError::Aborted {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn publish(&self, rank: usize, values: &[f32]) {
        let mut slot = self.slots[rank].write().unwrap_or_else(|e| e.into_inner());
        slot.clear();
        slot.extend_from_slice(values);
    }
}

/// One rank of a group of CPU replicas in this process (threads). Made by [`in_process_group`].
pub struct InProcessCollective {
    rank: usize,
    shared: Arc<Shared>,
}

/// The `world` ranks of a new in-process group, rank 0 first; give each to its replica's thread.
pub fn in_process_group(world: usize) -> Vec<InProcessCollective> {
    let world = world.max(1);
    let shared = Arc::new(Shared {
        world,
        round: Mutex::new(Round {
            waiting: 0,
            generation: 0,
            aborted: None,
        }),
        arrived: Condvar::new(),
        slots: (0..world).map(|_| RwLock::new(Vec::new())).collect(),
    });
    (0..world)
        .map(|rank| InProcessCollective {
            rank,
            shared: Arc::clone(&shared),
        })
        .collect()
}

impl InProcessCollective {
    fn mismatch(&self, op: &'static str, message: String) -> CollectiveError {
        let error = CollectiveError::Mismatch {
            op,
            rank: self.rank,
            message,
        };
        self.abort(&error.to_string());
        error
    }

    /// Every published slot has `len` values, or the error naming the first that does not.
    fn check_slots(&self, op: &'static str, len: usize) -> Result<(), CollectiveError> {
        for (r, slot) in self.shared.slots.iter().enumerate() {
            let got = slot.read().unwrap_or_else(|e| e.into_inner()).len();
            if got != len {
                return Err(
                    self.mismatch(op, format!("rank {r} passed {got} values, this rank {len}"))
                );
            }
        }
        Ok(())
    }
}

impl Collective for InProcessCollective {
    type Buffer = [f32];

    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, buffer: &mut [f32]) -> Result<(), CollectiveError> {
        let shared = &self.shared;
        shared.publish(self.rank, buffer);
        shared.barrier()?;
        self.check_slots("all_reduce_sum", buffer.len())?;
        {
            // Rank order, element by element: the same additions on every rank, in every run.
            let slots: Vec<_> = shared
                .slots
                .iter()
                .map(|s| s.read().unwrap_or_else(|e| e.into_inner()))
                .collect();
            buffer.copy_from_slice(&slots[0]);
            for slot in &slots[1..] {
                for (b, &x) in buffer.iter_mut().zip(slot.iter()) {
                    *b += x;
                }
            }
        }
        // Nobody publishes the next collective's buffer before everyone has read this one's.
        shared.barrier()
    }

    fn broadcast(&self, buffer: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        let shared = &self.shared;
        if root >= shared.world {
            return Err(self.mismatch(
                "broadcast",
                format!("root {root} in a group of {}", shared.world),
            ));
        }
        if self.rank == root {
            shared.publish(root, buffer);
        }
        shared.barrier()?;
        if self.rank != root {
            let slot = shared.slots[root].read().unwrap_or_else(|e| e.into_inner());
            if slot.len() != buffer.len() {
                let message = format!(
                    "root {root} sent {} values, this rank expects {}",
                    slot.len(),
                    buffer.len()
                );
                drop(slot);
                return Err(self.mismatch("broadcast", message));
            }
            buffer.copy_from_slice(&slot);
        }
        shared.barrier()
    }

    fn all_gather(&self, shard: &[f32], gathered: &mut [f32]) -> Result<(), CollectiveError> {
        let shared = &self.shared;
        if gathered.len() != shard.len() * shared.world {
            return Err(self.mismatch(
                "all_gather",
                format!(
                    "{} values to gather {} shards of {}",
                    gathered.len(),
                    shared.world,
                    shard.len()
                ),
            ));
        }
        shared.publish(self.rank, shard);
        shared.barrier()?;
        self.check_slots("all_gather", shard.len())?;
        for (out, slot) in gathered.chunks_mut(shard.len().max(1)).zip(&shared.slots) {
            out.copy_from_slice(&slot.read().unwrap_or_else(|e| e.into_inner()));
        }
        shared.barrier()
    }

    fn abort(&self, reason: &str) {
        let mut round = self.shared.round();
        if round.aborted.is_none() {
            round.aborted = Some(format!("rank {}: {reason}", self.rank));
        }
        self.shared.arrived.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` on every rank of a group of `world`, one thread each; results in rank order.
    fn on_ranks<T: Send>(world: usize, body: impl Fn(&InProcessCollective) -> T + Sync) -> Vec<T> {
        let ranks = in_process_group(world);
        let body = &body;
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranks
                .iter()
                .map(|rank| scope.spawn(move || body(rank)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("rank thread"))
                .collect()
        })
    }

    /// Values whose sum depends on the order of the additions in f32.
    fn buffer(rank: usize, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let scale = [1e8f32, 1.0, -1e8, 3.25e-3][rank % 4];
                scale * (1.0 + (i * 7 + rank) as f32 * 1e-3)
            })
            .collect()
    }

    #[test]
    fn all_reduce_sums_in_rank_order_whatever_the_timing() {
        let (world, len) = (4, 1000);
        // The reference: ((b0 + b1) + b2) + b3, sequentially.
        let mut want = buffer(0, len);
        for r in 1..world {
            for (w, x) in want.iter_mut().zip(buffer(r, len)) {
                *w += x;
            }
        }
        // Another order gives other bits for these values: the test can tell orders apart.
        let mut reversed = buffer(world - 1, len);
        for r in (0..world - 1).rev() {
            for (w, x) in reversed.iter_mut().zip(buffer(r, len)) {
                *w += x;
            }
        }
        assert_ne!(want, reversed);
        for trial in 0..8 {
            let got = on_ranks(world, |c| {
                // Ranks arrive in a different order each trial.
                let delay = (c.rank() * 3 + trial) % world;
                std::thread::sleep(std::time::Duration::from_millis(delay as u64 * 2));
                let mut b = buffer(c.rank(), len);
                c.all_reduce_sum(&mut b).map(|()| b)
            });
            for b in got {
                assert_eq!(b.expect("all-reduce"), want, "trial {trial}");
            }
        }
    }

    #[test]
    fn broadcast_and_all_gather_move_every_value() {
        let got = on_ranks(3, |c| {
            let mut b = if c.rank() == 2 {
                vec![5.0, 6.0]
            } else {
                vec![0.0; 2]
            };
            c.broadcast(&mut b, 2).expect("broadcast");
            let shard = vec![c.rank() as f32; 2];
            let mut all = vec![0.0; 6];
            c.all_gather(&shard, &mut all).expect("all-gather");
            (b, all)
        });
        for (b, all) in got {
            assert_eq!(b, vec![5.0, 6.0]);
            assert_eq!(all, vec![0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
        }
    }

    #[test]
    fn one_rank_failing_releases_the_others() {
        let got = on_ranks(3, |c| {
            if c.rank() == 1 {
                c.abort("token 9999 is out of the vocabulary");
                return Err(CollectiveError::Aborted {
                    reason: "this rank".into(),
                });
            }
            let mut b = vec![1.0; 4];
            c.all_reduce_sum(&mut b)
        });
        for (rank, result) in got.iter().enumerate() {
            match result {
                Err(CollectiveError::Aborted { reason }) if rank != 1 => {
                    assert!(reason.contains("rank 1") && reason.contains("token 9999"));
                }
                Err(_) if rank == 1 => {}
                other => panic!("rank {rank}: {other:?}"),
            }
        }
    }

    #[test]
    fn mismatched_lengths_are_an_error_on_every_rank() {
        let got = on_ranks(2, |c| {
            let mut b = vec![1.0; 3 + c.rank()];
            c.all_reduce_sum(&mut b)
        });
        for result in got {
            let message = result.expect_err("lengths differ").to_string();
            assert!(message.contains("values"), "{message}");
        }
    }
}
