//! The data-parallel GRPO learner: N replicas of the policy, each minibatch's rollouts split
//! across them, gradients all-reduced, then AdamW — every replica stepping the whole state, or
//! (ZeRO-1, `shard_optimizer`) each replica the moments of 1/N of the parameters, the updated
//! shards all-gathered (docs/DESIGN.md, "Data-parallel learning").
//!
//! The split does not change the objective. Advantages, the padded length, the minibatches and
//! the aggregation weights (`loss_agg`: per-sequence or per-token means, Dr. GRPO's normaliser)
//! are computed over the global batch exactly as [`GrpoLearner::step_with`] computes them, and
//! each replica trains on its rows with their global weights: its gradient is its rows' share
//! of the global loss's gradient, and the all-reduced sum is the global gradient. Clipping then
//! sees the global norm. Only the order of floating-point additions differs from one learner
//! (per-replica GEMMs, the sum over replicas), so N replicas reach the single learner's weights
//! within float tolerance, and one replica reaches them bit for bit.
//!
//! Replicas here are threads of this process, exchanging through
//! [`r1_kernels::collective::InProcessCollective`], whose sums run in rank order: the same seed
//! gives the same bits whatever the threads' timing. GPU replicas with `all_reduce = Nccl` sum
//! their gradients on the devices instead ([`NcclCollective`], one communicator per GPU made at
//! once); the in-process group still carries everything else, and a barrier on it before each
//! NCCL call keeps a rank that failed from leaving the others waiting inside NCCL. A checkpoint holds replica 0's weights and
//! the moments gathered from every shard, so it is a single learner's checkpoint: it resumes
//! into a single learner or into any number of replicas, sharded or not.

use std::ops::Range;
use std::path::Path;

use r1_kernels::collective::nccl::NcclCollective;
use r1_kernels::collective::{in_process_group, Collective, CollectiveError, InProcessCollective};
use r1_kernels::device::{AllReduce, Device, TrainEngine};
use r1_kernels::model::limits::MemoryPlan;
use r1_kernels::model::Model;
use r1_kernels::train::grpo::{aggregation_weights, zero_std_groups};
use r1_kernels::train::{AdamW, GrpoObjective, SequenceTerm};

use crate::keeper::{self, Checkpoint, CheckpointError, SavedCheckpoint, TrainerState};
use crate::learner::{
    pad_rollouts, GrpoLearner, GrpoStepStats, LearnerConfig, LearnerError, LearnerPhases,
    PaddedBatch, Rollout,
};
use r1_kernels::device::memory::MemoryPart;

/// How the learner is spread: what the job config's `[devices] learners` and `shard_optimizer`
/// become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataParallelConfig {
    /// Learner replicas (≥ 1); each minibatch's rollouts are split across them.
    pub replicas: usize,
    /// ZeRO-1: each replica keeps the AdamW moments of 1/`replicas` of the parameters only.
    pub shard_optimizer: bool,
    /// How the gradients are summed: `Nccl` on the GPUs (every replica on a CUDA device of its
    /// own), else through host memory (`Auto` is host memory here: the placement resolves it).
    pub all_reduce: AllReduce,
}

impl DataParallelConfig {
    /// One learner: no replicas to split across or sum.
    pub fn single() -> Self {
        DataParallelConfig {
            replicas: 1,
            shard_optimizer: false,
            all_reduce: AllReduce::Host,
        }
    }

    /// What a run's resolved `[devices]` table asks for: a replica per learner device.
    pub fn of(placement: &r1_kernels::device::Placement) -> Self {
        DataParallelConfig {
            replicas: placement.learners.len().max(1),
            shard_optimizer: placement.shard_optimizer,
            all_reduce: placement.all_reduce,
        }
    }
}

/// N learner replicas that train as one learner on the whole batch.
pub struct DataParallelLearner {
    /// Replica 0 first; all hold the same weights, reference and counters between steps.
    replicas: Vec<GrpoLearner>,
    /// Per replica, the parameters whose moments it owns: the whole layout each without
    /// sharding, consecutive ranges of `shard_len` (the last one shorter) with.
    owned: Vec<Range<usize>>,
    /// Values per ZeRO-1 shard as the all-gather moves them (the last shard padded); 0 without
    /// sharding.
    shard_len: usize,
    /// One NCCL rank per replica when the gradients are summed on the GPUs.
    nccl: Option<Vec<NcclCollective>>,
}

/// One replica's contiguous share of `rows` rows: the first `rows % replicas` replicas take one
/// row more.
fn share(rows: usize, replicas: usize, rank: usize) -> Range<usize> {
    let (base, extra) = (rows / replicas, rows % replicas);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// One minibatch of the global batch: its rows, its padded layout and aggregation weights.
struct Minibatch {
    /// Rows of the rollout batch it covers.
    rows: Range<usize>,
    /// The whole minibatch padded (its mask drives the weights and the statistics).
    global: PaddedBatch,
    /// Aggregation weights over the whole minibatch, [rows, T].
    weights: Vec<f64>,
    /// Per replica, its rows padded.
    shares: Vec<PaddedBatch>,
}

/// What a replica brings back from a step for the statistics: per minibatch, its rows' share.
#[derive(Default)]
struct ReplicaOutput {
    /// π_old of its rows per minibatch (empty on-policy).
    old: Vec<Vec<f32>>,
    /// π_ref of its rows per minibatch (empty when β = 0).
    refs: Vec<Vec<f32>>,
    /// Entropies of its rows per minibatch: of the π_old pass, or of the training pass on-policy.
    entropy: Vec<Vec<f32>>,
    /// Of the last epoch, per minibatch: its rows' loss, log-probs and GSPO sequence terms.
    loss: Vec<f64>,
    logp: Vec<Vec<f32>>,
    sequence: Vec<Vec<SequenceTerm>>,
    /// Per optimizer step: (norm before clipping, lr); the same on every replica.
    updates: Vec<(f64, f64)>,
}

/// Replica `i`'s device: `devices[i]`, the CPU past its end.
fn device_of(devices: &[Device], i: usize) -> Device {
    devices.get(i).copied().unwrap_or(Device::Cpu)
}

impl DataParallelLearner {
    /// `config.replicas` replicas of a learner starting from `policy` (its reference a copy of
    /// it). Memory for every replica is checked first and the refusal names the figures.
    pub fn try_new(
        policy: Model,
        learner: LearnerConfig,
        config: DataParallelConfig,
    ) -> Result<Self, LearnerError> {
        Self::try_new_on(&[], policy, learner, config)
    }

    /// [`DataParallelLearner::try_new`] with replica `i` on `devices[i]` (`[devices]`'s
    /// learners, one per replica); replicas past the end of `devices` share the CPU.
    pub fn try_new_on(
        devices: &[Device],
        policy: Model,
        learner: LearnerConfig,
        config: DataParallelConfig,
    ) -> Result<Self, LearnerError> {
        Self::check(&config)?;
        let first = GrpoLearner::try_new_on(device_of(devices, 0), policy, learner)?;
        Self::from_first(first, config, devices)
    }

    /// Continues from a checkpoint (a single learner's or a data-parallel run's: they are the
    /// same) with `config.replicas` replicas; the moments are split again when sharding. A run
    /// resumed this way continues bit-identically to the data-parallel run that never stopped.
    pub fn try_resume(
        checkpoint: Checkpoint,
        learner: LearnerConfig,
        config: DataParallelConfig,
    ) -> Result<Self, LearnerError> {
        Self::try_resume_on(&[], checkpoint, learner, config)
    }

    /// [`DataParallelLearner::try_resume`] with replica `i` on `devices[i]`.
    pub fn try_resume_on(
        devices: &[Device],
        checkpoint: Checkpoint,
        learner: LearnerConfig,
        config: DataParallelConfig,
    ) -> Result<Self, LearnerError> {
        Self::check(&config)?;
        let first = GrpoLearner::try_resume_on(device_of(devices, 0), checkpoint, learner)?;
        Self::from_first(first, config, devices)
    }

    fn check(config: &DataParallelConfig) -> Result<(), LearnerError> {
        if config.replicas == 0 {
            return Err(LearnerError::Batch(
                "a data-parallel learner needs at least one replica (learners = 0)".into(),
            ));
        }
        Ok(())
    }

    /// The replicas, all copies of `first`.
    fn from_first(
        first: GrpoLearner,
        config: DataParallelConfig,
        devices: &[Device],
    ) -> Result<Self, LearnerError> {
        let n = config.replicas;
        let total = first.policy.layout.total;
        let p = total as f64 * 4.0;
        let mut plan = MemoryPlan::default();
        plan.add(
            format!("{} more policy replicas", n - 1),
            (n - 1) as f64 * p,
        )
        .add("their gradients", (n - 1) as f64 * p);
        if first.reference.is_some() {
            plan.add("their reference models", (n - 1) as f64 * p);
        }
        if !config.shard_optimizer {
            plan.add("their AdamW moments", (n - 1) as f64 * 2.0 * p);
        }
        plan.check(&format!("{n} learner replicas"))?;
        let (owned, shard_len) = if config.shard_optimizer {
            let len = total.div_ceil(n);
            let owned = (0..n)
                .map(|r| (r * len).min(total)..((r + 1) * len).min(total))
                .collect();
            (owned, len)
        } else {
            (vec![0..total; n], 0)
        };
        let moments = |range: &Range<usize>| AdamW {
            config: first.optimizer.config,
            m: first.optimizer.m[range.clone()].to_vec(),
            v: first.optimizer.v[range.clone()].to_vec(),
            step: first.optimizer.step,
        };
        let mut replicas: Vec<GrpoLearner> = owned[1..]
            .iter()
            .enumerate()
            .map(|(i, range)| first.replica(moments(range), device_of(devices, i + 1)))
            .collect::<Result<_, _>>()?;
        let nccl = if config.all_reduce == AllReduce::Nccl && n > 1 {
            let ordinals = (0..n)
                .map(|i| match device_of(devices, i) {
                    Device::Cuda(k) => Ok(k),
                    Device::Cpu => Err(LearnerError::Collective(CollectiveError::Unavailable(
                        format!("learner replica {i} is on the CPU: NCCL needs a GPU per replica"),
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(NcclCollective::group(&ordinals)?)
        } else {
            None
        };
        let own_shard = config.shard_optimizer.then(|| moments(&owned[0]));
        let mut first = first;
        if let Some(shard) = own_shard {
            first.optimizer = shard;
        }
        replicas.insert(0, first);
        Ok(DataParallelLearner {
            replicas,
            owned,
            shard_len,
            nccl,
        })
    }

    /// These replicas computing through engines of the caller's (`engine(replica)` for each;
    /// the tests use `device::resident::ResidentCpuEngine`).
    pub fn with_engines(
        self,
        mut engine: impl FnMut(&GrpoLearner) -> Result<Box<dyn TrainEngine>, LearnerError>,
    ) -> Result<Self, LearnerError> {
        let replicas = self
            .replicas
            .into_iter()
            .map(|replica| {
                let e = engine(&replica)?;
                replica.with_engine(e)
            })
            .collect::<Result<_, _>>()?;
        Ok(DataParallelLearner { replicas, ..self })
    }

    /// Replicas.
    pub fn replicas(&self) -> usize {
        self.replicas.len()
    }

    /// Whether each replica keeps only its shard of the moments (ZeRO-1).
    pub fn shard_optimizer(&self) -> bool {
        self.shard_len > 0
    }

    /// The policy (replica 0's; every replica holds the same weights between steps).
    pub fn policy(&self) -> &Model {
        &self.replicas[0].policy
    }

    /// A sampler on `device` generating with the policy as the replicas' engines hold it
    /// ([`GrpoLearner::sampler`] of one replica): the replica on `device` decodes its own weights
    /// in place; with none there, replica 0's are copied device to device (or read in place on
    /// the CPU). Every replica holds the same weights between steps, so any one samples as the
    /// single learner would.
    pub fn sampler(
        &mut self,
        device: Device,
        precision: r1_kernels::device::Precision,
        max_batch: usize,
    ) -> Result<r1_kernels::sample::Sampler<'_>, LearnerError> {
        let at = self
            .replicas
            .iter()
            .position(|r| r.device() == device)
            .unwrap_or(0);
        self.replicas[at].sampler(device, precision, max_batch)
    }

    /// What every replica holds, summed by category ([`GrpoLearner::memory_parts`]).
    pub fn memory_parts(&self) -> Vec<MemoryPart> {
        let mut parts: Vec<MemoryPart> = Vec::new();
        for part in self.replicas.iter().flat_map(GrpoLearner::memory_parts) {
            match parts.iter_mut().find(|p| p.category == part.category) {
                Some(p) => p.bytes += part.bytes,
                None => parts.push(part),
            }
        }
        parts
    }

    /// The frozen reference, when β ≠ 0.
    pub fn reference(&self) -> Option<&Model> {
        self.replicas[0].reference.as_ref()
    }

    /// GRPO steps taken.
    pub fn step_count(&self) -> u64 {
        self.replicas[0].step
    }

    /// Optimizer steps taken (the schedule's clock).
    pub fn optimizer_step(&self) -> u64 {
        self.replicas[0].optimizer_step
    }

    /// The settings every replica trains under.
    pub fn config(&self) -> &LearnerConfig {
        &self.replicas[0].config
    }

    /// The whole optimizer state: the moments gathered from every replica's shard (or replica
    /// 0's when not sharded), in the flat layout a single learner keeps.
    pub fn optimizer_state(&self) -> Result<AdamW, r1_kernels::EngineError> {
        if !self.shard_optimizer() {
            return self.replicas[0].optimizer_state();
        }
        // Sharded moments are stepped on the host (`AdamW::update_range`): they are current.
        let first = &self.replicas[0].optimizer;
        let mut gathered = AdamW {
            config: first.config,
            m: Vec::with_capacity(self.policy().layout.total),
            v: Vec::with_capacity(self.policy().layout.total),
            step: first.step,
        };
        for replica in &self.replicas {
            gathered.m.extend_from_slice(&replica.optimizer.m);
            gathered.v.extend_from_slice(&replica.optimizer.v);
        }
        Ok(gathered)
    }

    /// Writes a checkpoint under `root` with `state` ([`keeper::write_checkpoint`]): replica 0's
    /// weights and reference, the gathered moments. It loads into a single learner as well.
    pub fn write_checkpoint(
        &self,
        root: &Path,
        state: &TrainerState,
        keep_last: usize,
    ) -> Result<SavedCheckpoint, CheckpointError> {
        let optimizer = self.optimizer_state()?;
        keeper::write_checkpoint(
            root,
            self.policy(),
            self.reference(),
            &optimizer,
            state,
            keep_last,
            None,
        )
    }

    /// One GRPO step over a rollout batch of whole groups: what [`GrpoLearner::step`] does on
    /// the same batch, the work split across the replicas.
    pub fn step(&mut self, rollouts: &[Rollout]) -> Result<GrpoStepStats, LearnerError> {
        let cfg = self.config().clone();
        let g = cfg.group_size.max(1);
        crate::learner::check_rollouts(rollouts, g)?;
        for replica in &mut self.replicas {
            replica.prepare_engine()?;
        }
        let n = self.replicas.len();
        let on_policy = self.replicas[0].on_policy(rollouts.len());
        let rewards: Vec<f64> = rollouts.iter().map(|r| r.reward).collect();
        let (advantages, t, per) = crate::learner::step_shape(rollouts, &rewards, &cfg);
        let batches: Vec<Minibatch> = (0..rollouts.len())
            .step_by(per)
            .map(|start| {
                let rows = start..(start + per).min(rollouts.len());
                let all: Vec<&Rollout> = rollouts[rows.clone()].iter().collect();
                let global = pad_rollouts(&all, t, cfg.mask_truncated);
                let weights = aggregation_weights(&global.mask, t, &cfg.grpo);
                let shares = (0..n)
                    .map(|r| {
                        let mine = share(all.len(), n, r);
                        let mut padded = pad_rollouts(&all[mine.clone()], t, cfg.mask_truncated);
                        self.replicas[r].share_prompts(&mut padded, &all[mine]);
                        padded
                    })
                    .collect();
                Minibatch {
                    rows,
                    global,
                    weights,
                    shares,
                }
            })
            .collect();

        let group = in_process_group(n);
        let (owned, shard_len) = (&self.owned, self.shard_len);
        let mut nccl: Vec<Option<&mut NcclCollective>> = match self.nccl.as_mut() {
            Some(ranks) => ranks.iter_mut().map(Some).collect(),
            None => (0..n).map(|_| None).collect(),
        };
        let outputs: Vec<Result<ReplicaOutput, LearnerError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .replicas
                .iter_mut()
                .zip(&group)
                .zip(nccl.iter_mut().map(Option::take))
                .map(|((replica, collective), nccl)| {
                    let work = ReplicaStep {
                        batches: &batches,
                        advantages: &advantages,
                        on_policy,
                        owned: owned[collective.rank()].clone(),
                        shard_len,
                        sharded: shard_len > 0,
                    };
                    scope.spawn(move || work.run(replica, collective, nccl))
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(rank, handle)| {
                    handle.join().unwrap_or_else(|_| {
                        Err(LearnerError::Batch(format!(
                            "learner replica {rank} panicked (a bug in r1)"
                        )))
                    })
                })
                .collect()
        });
        let mut done = Vec::with_capacity(n);
        let mut errors = Vec::new();
        for output in outputs {
            match output {
                Ok(output) => done.push(output),
                Err(e) => errors.push(e),
            }
        }
        // Replicas on a GPU updated their weights there: the host copies (the sampler's weights,
        // the reference refresh, checkpoints) follow once per step, also after a failed one.
        for replica in &mut self.replicas {
            if let Err(e) = replica.sync_policy() {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            // The cause, not the replicas that only saw another one give up. Every replica
            // stopped at the same collective, so they still agree: as with one learner, the
            // minibatches updated before the failure stay updated and the step is not counted.
            let cause = errors
                .iter()
                .position(|e| {
                    !matches!(e, LearnerError::Collective(CollectiveError::Aborted { .. }))
                })
                .unwrap_or(0);
            return Err(errors.swap_remove(cause));
        }

        for replica in &mut self.replicas {
            replica.step += 1;
            // Uploaded again too: a GPU replica's π_ref lives on its device.
            replica.refresh_reference_when_due()?;
        }
        Ok(self.statistics(rollouts, &rewards, &advantages, &batches, &done, on_policy))
    }

    /// The step's statistics from the replicas' shares, assembled per minibatch in row order so
    /// that they are computed as [`GrpoLearner::step_with`] computes them on the whole batch.
    fn statistics(
        &self,
        rollouts: &[Rollout],
        rewards: &[f64],
        advantages: &[f64],
        batches: &[Minibatch],
        done: &[ReplicaOutput],
        on_policy: bool,
    ) -> GrpoStepStats {
        let cfg = self.config();
        let g = cfg.group_size.max(1);
        let joined = |k: usize, part: fn(&ReplicaOutput) -> &Vec<Vec<f32>>| -> Vec<f32> {
            done.iter()
                .flat_map(|o| part(o).get(k).into_iter().flatten().copied())
                .collect()
        };
        let (mut entropy_sum, mut entropy_n) = (0.0, 0.0);
        let (mut loss_sum, mut kl_sum, mut low_sum, mut high_sum) = (0.0, 0.0, 0.0, 0.0);
        let mut mismatch = Vec::new();
        for (k, batch) in batches.iter().enumerate() {
            for (e, m) in joined(k, |o| &o.entropy).iter().zip(&batch.global.mask) {
                entropy_sum += (*e * *m) as f64;
                entropy_n += *m as f64;
            }
            let old = joined(k, |o| &o.old);
            let refs = joined(k, |o| &o.refs);
            let logp = joined(k, |o| &o.logp);
            let objective = GrpoObjective {
                config: cfg.grpo,
                old_logp: (!on_policy).then_some(old.as_slice()),
                ref_logp: &refs,
                advantages: &advantages[batch.rows.clone()],
                weights: &batch.weights,
                t: batch.global.t,
                sequence: done
                    .iter()
                    .flat_map(|o| o.sequence.get(k).into_iter().flatten().copied())
                    .collect(),
                sampler_logp: batch.global.sampler(),
                sampler_sequence: Vec::new(),
            };
            let token_stats = objective.stats(&logp);
            mismatch.extend(objective.sampler_mismatch(&logp));
            let mut loss = 0.0;
            for output in done {
                loss += output.loss[k];
            }
            loss_sum += loss;
            kl_sum += token_stats.kl_mean;
            low_sum += token_stats.clip_low_fraction;
            high_sum += token_stats.clip_high_fraction;
        }
        let updates = &done[0].updates;
        let n = rollouts.len() as f64;
        let nb = batches.len() as f64;
        let lens: Vec<usize> = rollouts.iter().map(|r| r.completion_ids.len()).collect();
        let mean = rewards.iter().sum::<f64>() / n;
        GrpoStepStats {
            step: self.step_count(),
            loss: loss_sum / nb,
            reward_mean: mean,
            reward_std: (rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt(),
            frac_zero_std: zero_std_groups(rewards, g) as f64 / (rollouts.len() / g) as f64,
            kl: if self.reference().is_some() {
                kl_sum / nb
            } else {
                0.0
            },
            entropy: if entropy_n > 0.0 {
                entropy_sum / entropy_n
            } else {
                0.0
            },
            clip_low_fraction: low_sum / nb,
            clip_high_fraction: high_sum / nb,
            grad_norm: updates.iter().map(|u| u.0).sum::<f64>() / updates.len().max(1) as f64,
            lr: updates.last().map_or(0.0, |u| u.1),
            completion_len_mean: lens.iter().sum::<usize>() as f64 / n,
            completion_len_max: lens.iter().copied().max().unwrap_or(0),
            truncated_fraction: rollouts.iter().filter(|r| r.truncated).count() as f64 / n,
            sampler: r1_kernels::train::SamplerMismatch::combine(&mismatch),
            memory: self.memory_parts(),
            optimizer_steps: updates.len(),
            tokens_trained: rollouts
                .iter()
                .filter(|r| !(cfg.mask_truncated && r.truncated))
                .map(|r| r.completion_ids.len())
                .sum(),
        }
    }
}

/// What one replica's thread needs for a step besides its learner and its rank.
struct ReplicaStep<'a> {
    batches: &'a [Minibatch],
    /// Advantages of the whole batch.
    advantages: &'a [f64],
    on_policy: bool,
    /// The parameters whose moments this replica owns.
    owned: Range<usize>,
    /// Values per shard in the all-gather (0 without sharding).
    shard_len: usize,
    sharded: bool,
}

/// Tells the other replicas to stop waiting if this one leaves a step early, by error or panic.
struct AbortOnExit<'a> {
    collective: &'a InProcessCollective,
    reason: Option<String>,
}

impl Drop for AbortOnExit<'_> {
    fn drop(&mut self) {
        if let Some(reason) = &self.reason {
            self.collective.abort(reason);
        }
    }
}

impl ReplicaStep<'_> {
    /// The replica's part of the step: π_old and π_ref of its rows, then per epoch and
    /// minibatch its gradient, the all-reduce, the update (and the all-gather of the shards).
    fn run(
        self,
        replica: &mut GrpoLearner,
        collective: &InProcessCollective,
        nccl: Option<&mut NcclCollective>,
    ) -> Result<ReplicaOutput, LearnerError> {
        let mut guard = AbortOnExit {
            collective,
            reason: Some("a learner replica stopped in the middle of a step".into()),
        };
        let result = self.train(replica, collective, nccl.as_deref());
        match &result {
            Ok(_) => guard.reason = None,
            // Another replica's failure: it has told the group already.
            Err(LearnerError::Collective(_)) => guard.reason = None,
            Err(e) => {
                guard.reason = Some(format!("learner replica {}: {e}", collective.rank()));
            }
        }
        result
    }

    fn train(
        &self,
        replica: &mut GrpoLearner,
        collective: &InProcessCollective,
        nccl: Option<&NcclCollective>,
    ) -> Result<ReplicaOutput, LearnerError> {
        let rank = collective.rank();
        let world = collective.world_size();
        let cfg = replica.config.clone();
        let mut out = ReplicaOutput::default();
        let mut phases = LearnerPhases::default();
        for batch in self.batches {
            let mine = &batch.shares[rank];
            if !self.on_policy {
                let (lp, entropy) = if mine.b > 0 {
                    replica.policy_logprobs(mine, true)?
                } else {
                    (Vec::new(), Vec::new())
                };
                out.old.push(lp);
                out.entropy.push(entropy);
            }
            out.refs.push(if mine.b > 0 {
                replica.reference_logprobs(mine)?
            } else {
                Vec::new()
            });
        }
        // Host memory for the gradients only when they are summed there.
        let mut grads = vec![
            0.0f32;
            if nccl.is_some() {
                0
            } else {
                replica.policy.layout.total
            }
        ];
        let mut shard = vec![0.0f32; self.shard_len];
        let mut gathered = vec![0.0f32; self.shard_len * world];
        let epochs = cfg.epochs.max(1);
        for epoch in 0..epochs {
            for (k, batch) in self.batches.iter().enumerate() {
                let mine = &batch.shares[rank];
                let rows = share(batch.global.b, world, rank);
                let t = batch.global.t;
                let mut objective = GrpoObjective {
                    config: cfg.grpo,
                    old_logp: out.old.get(k).map(Vec::as_slice),
                    ref_logp: &out.refs[k],
                    advantages: &self.advantages
                        [batch.rows.start + rows.start..batch.rows.start + rows.end],
                    weights: &batch.weights[rows.start * t..rows.end * t],
                    t,
                    sequence: Vec::new(),
                    sampler_logp: mine.sampler(),
                    sampler_sequence: Vec::new(),
                };
                let head = if mine.b > 0 {
                    Some(replica.accumulate_gradients(
                        mine,
                        &mut objective,
                        self.on_policy,
                        &mut phases,
                    )?)
                } else {
                    replica.zero_gradients()?;
                    None
                };
                match nccl {
                    Some(nccl) => {
                        // Every rank arrives here healthy before any enters NCCL: a rank that
                        // failed before has aborted the in-process group, so this barrier
                        // returns its error and nobody waits inside NCCL for it.
                        collective.all_reduce_sum(&mut [0.0])?;
                        replica.all_reduce_gradients(nccl)?;
                    }
                    None => {
                        replica.download_gradients(&mut grads)?;
                        collective.all_reduce_sum(&mut grads)?;
                        replica.load_gradients(&grads)?;
                    }
                }
                let owned = self.sharded.then(|| self.owned.clone());
                let update = replica.apply_update(owned, &mut phases)?;
                if self.sharded {
                    let params = &mut replica.policy.params;
                    let len = self.owned.len();
                    shard[..len].copy_from_slice(&params[self.owned.clone()]);
                    collective.all_gather(&shard, &mut gathered)?;
                    for (r, from) in gathered.chunks(self.shard_len).enumerate() {
                        let start = (r * self.shard_len).min(params.len());
                        let end = (start + self.shard_len).min(params.len());
                        params[start..end].copy_from_slice(&from[..end - start]);
                    }
                    replica.upload_policy()?;
                }
                out.updates.push(update);
                if self.on_policy {
                    out.entropy
                        .push(head.as_ref().map(|h| h.entropy.clone()).unwrap_or_default());
                }
                if epoch + 1 == epochs {
                    let (loss, logp) = head.map_or((0.0, Vec::new()), |h| (h.loss, h.logp));
                    out.loss.push(loss);
                    out.logp.push(logp);
                    out.sequence.push(objective.sequence);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_the_rows_in_order_and_differ_by_at_most_one() {
        for rows in 0..12 {
            for replicas in 1..5 {
                let shares: Vec<_> = (0..replicas).map(|r| share(rows, replicas, r)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[replicas - 1].end, rows);
                for w in shares.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() <= w[1].len() + 1);
                }
            }
        }
    }
}
