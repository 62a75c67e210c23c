//! The G completions of a GRPO group share their prompt, and the learner need not compute it G
//! times. A batch of rollouts is laid out for the engine as rows of groups (`SharedGroup`): one
//! copy of the prompt, then each completion as a branch that attends to the prompt and to itself
//! (`cpu::Activations::set_layout`). Each branch starts with the prompt's last token, whose
//! hidden state predicts the completion's first token, so every engine position predicts one
//! target and the LM head is unchanged.
//!
//! The batch the objective sees stays the padded one ([B, T], one rollout per row): the layout
//! maps each engine token to the batch tokens it stands for (a prompt token to the same position
//! of every rollout of its group, a completion token to its own), the objective is asked through
//! that map (`Remapped`), and the head's outputs are scattered back (`SharedRows::scatter`). The
//! arithmetic is the padded batch's, summed in a different order.
//!
//! How many completions share one copy of a prompt is chosen per batch: more branches per row
//! compute fewer prompt tokens but lengthen the rows, whose attention grows with the square of
//! their length. The plan takes the layout with the fewest estimated FLOPs whose arena is no
//! larger than the padded batch's, and none when no layout beats one rollout per row.

use r1_kernels::cpu::SharedGroup;
use r1_kernels::model::Model;
use r1_kernels::train::head::{HeadOutput, TokenLoss, TokenObjective};

/// The batch tokens one engine token stands for: position `pos` of rows `rows` (empty: padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Source {
    pos: u32,
    rows: (u32, u32),
}

impl Source {
    const PADDING: Source = Source {
        pos: 0,
        rows: (0, 0),
    };

    fn indices(self, t: usize) -> impl Iterator<Item = usize> {
        (self.rows.0 as usize..self.rows.1 as usize).map(move |r| r * t + self.pos as usize)
    }
}

/// A padded batch laid out with shared prompts: the engine's rows and what each token stands for.
#[derive(Debug, Clone)]
pub struct SharedRows {
    /// Engine rows.
    pub b: usize,
    /// Positions per engine row.
    pub t: usize,
    /// The groups of each engine row.
    pub rows: Vec<Vec<SharedGroup>>,
    /// Input and target ids, [b, t] each.
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
    /// Per engine token, the batch tokens it stands for.
    sources: Vec<Source>,
    /// Positions per row of the padded batch.
    batch_t: usize,
}

/// Per-token cost factors of a model, in FLOPs of a forward pass: the products per token and
/// the attention per (row length)².
fn cost_factors(model: &Model) -> (f64, f64) {
    let cfg = &model.config;
    let (c, l) = (cfg.hidden_size as f64, cfg.num_layers as f64);
    let (qkv, qd, i) = (
        cfg.qkv_dim() as f64,
        cfg.q_dim() as f64,
        cfg.intermediate_size as f64,
    );
    let per_token = 2.0 * l * (c * qkv + qd * c + 3.0 * c * i);
    // Scores and the weighted sum, each about half of T² · QD multiply-adds under the causal
    // blocks.
    let per_square = 2.0 * l * qd;
    (per_token, per_square)
}

/// Plans the shared-prompt layout of a padded batch of `t` positions per row whose row r holds
/// `prompts[r]` followed by `completions[r]` (each row's inputs are its ids but the last).
/// Consecutive rows with equal prompts form a group. `None` when one rollout per row is as
/// cheap (no two consecutive rows share a prompt, or the rows would grow too long). Arenas are
/// compared as the engine plans them: `arena(rows, positions)` is its arena's size (its
/// `TrainEngine::arena_bytes_for`).
pub fn plan(
    model: &Model,
    t: usize,
    prompts: &[&[u32]],
    completions: &[&[u32]],
    arena: &dyn Fn(usize, usize) -> f64,
) -> Option<SharedRows> {
    let b = prompts.len();
    if b < 2 || completions.len() != b {
        return None;
    }
    // Runs of consecutive rows with one prompt (of at least two tokens: a shared prompt of
    // prompt − 1 tokens must hold one).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for r in 0..b {
        match runs.last_mut() {
            Some((start, end)) if prompts[*start] == prompts[r] && prompts[r].len() > 1 => {
                *end = r + 1
            }
            _ => runs.push((r, r + 1)),
        }
    }
    let widest = runs.iter().map(|(s, e)| e - s).max().unwrap_or(1);
    if widest < 2 {
        return None;
    }
    let (per_token, per_square) = cost_factors(model);
    let cost = |rows: usize, len: usize| {
        rows as f64 * (len as f64 * per_token + (len * len) as f64 * per_square)
    };
    let (plain_cost, plain_arena) = (cost(b, t), arena(b, t));
    let mut best: Option<(f64, Vec<Group>)> = None;
    for k in 2..=widest {
        let groups = groups(&runs, prompts, completions, k);
        let (rows, len) = shape_of(&groups);
        let c = cost(rows, len);
        if c < plain_cost
            && arena(rows, len) <= plain_arena
            && best.as_ref().is_none_or(|(bc, _)| c < *bc)
        {
            best = Some((c, groups));
        }
    }
    let (_, groups) = best?;
    Some(lay_out(&groups, prompts, completions, t))
}

/// One engine row: the padded batch's rows it holds, and their group.
type Group = (std::ops::Range<usize>, SharedGroup);

/// The engine rows when each run is cut into groups of at most `k` branches.
fn groups(
    runs: &[(usize, usize)],
    prompts: &[&[u32]],
    completions: &[&[u32]],
    k: usize,
) -> Vec<Group> {
    runs.iter()
        .flat_map(|&(start, end)| {
            (start..end).step_by(k).map(move |chunk| {
                let members = chunk..(chunk + k).min(end);
                (members.clone(), group_of(prompts, completions, members))
            })
        })
        .collect()
}

/// Engine rows and positions per row of a layout.
fn shape_of(groups: &[Group]) -> (usize, usize) {
    let len = groups.iter().map(|(_, g)| g.len()).max().unwrap_or(1);
    (groups.len(), len.max(1))
}

/// The group of rows `members` (one prompt): the prompt but its last token, then per row that
/// token and the completion but its last token.
fn group_of(
    prompts: &[&[u32]],
    completions: &[&[u32]],
    members: std::ops::Range<usize>,
) -> SharedGroup {
    let prompt = prompts[members.start].len();
    if members.len() == 1 {
        // One rollout: its row as the padded batch has it.
        let r = members.start;
        return SharedGroup {
            prompt: prompt + completions[r].len() - 1,
            branches: Vec::new(),
        };
    }
    SharedGroup {
        prompt: prompt - 1,
        branches: members.map(|r| completions[r].len()).collect(),
    }
}

fn lay_out(
    groups: &[Group],
    prompts: &[&[u32]],
    completions: &[&[u32]],
    batch_t: usize,
) -> SharedRows {
    let (b, t) = shape_of(groups);
    let mut out = SharedRows {
        b,
        t,
        rows: Vec::with_capacity(b),
        inputs: vec![0; b * t],
        targets: vec![0; b * t],
        sources: vec![Source::PADDING; b * t],
        batch_t,
    };
    let ids = |r: usize, i: usize| {
        let p = prompts[r];
        if i < p.len() {
            p[i]
        } else {
            completions[r][i - p.len()]
        }
    };
    for (row, (members, group)) in groups.iter().enumerate() {
        let base = row * t;
        let mut at = 0;
        let mut put = |pos: usize, rows: (usize, usize)| {
            out.inputs[base + at] = ids(rows.0, pos);
            out.targets[base + at] = ids(rows.0, pos + 1);
            out.sources[base + at] = Source {
                pos: pos as u32,
                rows: (rows.0 as u32, rows.1 as u32),
            };
            at += 1;
        };
        for pos in 0..group.prompt {
            put(pos, (members.start, members.end));
        }
        if !group.branches.is_empty() {
            for r in members.clone() {
                let first = prompts[r].len() - 1;
                for pos in first..first + completions[r].len() {
                    put(pos, (r, r + 1));
                }
            }
        }
        out.rows.push(vec![group.clone()]);
    }
    out
}

impl SharedRows {
    /// Engine tokens computed (padding included), against the padded batch's `b · t`.
    pub fn tokens(&self) -> usize {
        self.b * self.t
    }

    /// The objective of the padded batch, asked through the layout.
    pub fn objective<'a>(&'a self, inner: &'a dyn TokenObjective) -> Remapped<'a> {
        Remapped { inner, rows: self }
    }

    /// The head's per-token outputs over the engine's rows, moved to the padded batch of `b`
    /// rows: a shared prompt token's values go to every rollout of its group, as each would
    /// have computed them; padding stays 0.
    pub fn scatter(&self, out: HeadOutput, b: usize) -> HeadOutput {
        let n = b * self.batch_t;
        let mut logp = vec![0.0; n];
        let mut entropy = vec![0.0; if out.entropy.is_empty() { 0 } else { n }];
        for (i, source) in self.sources.iter().enumerate() {
            for j in source.indices(self.batch_t) {
                logp[j] = out.logp[i];
                if !entropy.is_empty() {
                    entropy[j] = out.entropy[i];
                }
            }
        }
        HeadOutput {
            logp,
            entropy,
            loss: out.loss,
        }
    }
}

/// A token objective of the padded batch asked at the engine's tokens: an engine token counts
/// where one of the batch tokens it stands for does, and its loss and gradients are theirs
/// summed (a shared token's logits serve every rollout of its group).
pub struct Remapped<'a> {
    inner: &'a dyn TokenObjective,
    rows: &'a SharedRows,
}

impl TokenObjective for Remapped<'_> {
    fn token(&self, index: usize, logp: f32, entropy: f32) -> TokenLoss {
        let mut indices = self.rows.sources[index].indices(self.rows.batch_t);
        let Some(first) = indices.next() else {
            return TokenLoss::default();
        };
        let mut total = self.inner.token(first, logp, entropy);
        for j in indices {
            let more = self.inner.token(j, logp, entropy);
            total.loss += more.loss;
            total.d_logp += more.d_logp;
            total.d_entropy += more.d_entropy;
        }
        total
    }

    fn uses_entropy(&self) -> bool {
        self.inner.uses_entropy()
    }

    fn counts(&self, index: usize) -> bool {
        self.rows.sources[index]
            .indices(self.rows.batch_t)
            .any(|j| self.inner.counts(j))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use r1_kernels::bench::builtin_config;

    fn model() -> Model {
        Model::random(builtin_config("tiny-qwen2").unwrap(), 1, 0.05)
    }

    /// The CPU engine's arena for `model`, without checkpointing.
    fn on_cpu(model: &Model) -> impl Fn(usize, usize) -> f64 + '_ {
        |rows, len| 4.0 * r1_kernels::cpu::arena_floats(model, rows, len, false) as f64
    }

    /// The padded batch's inputs and targets: row r is its prompt then completion, next-token.
    fn padded(prompts: &[&[u32]], completions: &[&[u32]], t: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut inputs, mut targets) = (vec![0; prompts.len() * t], vec![0; prompts.len() * t]);
        for (r, (p, c)) in prompts.iter().zip(completions).enumerate() {
            let ids: Vec<u32> = p.iter().chain(c.iter()).copied().collect();
            inputs[r * t..r * t + ids.len() - 1].copy_from_slice(&ids[..ids.len() - 1]);
            targets[r * t..r * t + ids.len() - 1].copy_from_slice(&ids[1..]);
        }
        (inputs, targets)
    }

    #[test]
    fn every_position_of_the_padded_batch_is_computed_once_with_its_ids() {
        let (pa, pb): (Vec<u32>, Vec<u32>) = ((1..30).collect(), (50..62).collect());
        let completions: Vec<Vec<u32>> = (0..7u32)
            .map(|i| (0..3 + i % 4).map(|k| 100 + 10 * i + k).collect())
            .collect();
        // Four rows of one prompt, three of another (a group cut by a minibatch).
        let prompts: Vec<&[u32]> = vec![&pa, &pa, &pa, &pa, &pb, &pb, &pb];
        let completions: Vec<&[u32]> = completions.iter().map(Vec::as_slice).collect();
        let t = (0..7)
            .map(|r| prompts[r].len() + completions[r].len() - 1)
            .max()
            .unwrap();
        let model = model();
        let rows = plan(&model, t, &prompts, &completions, &on_cpu(&model)).expect("shared");
        // The engine's arena bounds the layouts: one where every layout but one rollout per
        // row is larger takes none.
        let plain_only = |r: usize, l: usize| if (r, l) == (7, t) { 1.0 } else { 2.0 };
        assert!(plan(&model, t, &prompts, &completions, &plain_only).is_none());
        assert!(
            rows.tokens() < 7 * t,
            "{} positions for {}",
            rows.tokens(),
            7 * t
        );
        let (inputs, targets) = padded(&prompts, &completions, t);
        let mut seen = vec![0; 7 * t];
        for (i, source) in rows.sources.iter().enumerate() {
            for j in source.indices(t) {
                seen[j] += 1;
                assert_eq!(
                    (rows.inputs[i], rows.targets[i]),
                    (inputs[j], targets[j]),
                    "engine token {i}, batch token {j}"
                );
            }
        }
        for r in 0..7 {
            let n = prompts[r].len() + completions[r].len() - 1;
            assert!(seen[r * t..r * t + n].iter().all(|&s| s == 1), "row {r}");
            assert!(
                seen[r * t + n..(r + 1) * t].iter().all(|&s| s == 0),
                "row {r}"
            );
        }
        // The head's outputs come back to every rollout of a shared token.
        let out = HeadOutput {
            logp: (0..rows.tokens()).map(|i| -(i as f32)).collect(),
            entropy: Vec::new(),
            loss: 2.5,
        };
        let back = rows.scatter(out, 7);
        assert_eq!(back.logp.len(), 7 * t);
        assert_eq!(back.logp[0], back.logp[3 * t]);
        assert_eq!(back.loss, 2.5);
    }

    #[test]
    fn a_layout_that_computes_no_less_is_not_taken() {
        let model = model();
        // Different prompts: nothing to share.
        let (a, b, c): (Vec<u32>, Vec<u32>, Vec<u32>) = (vec![1, 2, 3], vec![4, 5, 6], vec![7, 8]);
        assert!(plan(&model, 4, &[&a, &b], &[&c, &c], &on_cpu(&model)).is_none());
        // A two-token prompt before long completions: one shared token saved per branch, rows
        // four times longer.
        let long: Vec<u32> = (0..200).map(|k| 10 + k % 200).collect();
        let prompts: Vec<&[u32]> = vec![&a[..2]; 4];
        let longs = [&long[..], &long, &long, &long];
        assert!(plan(&model, 201, &prompts, &longs, &on_cpu(&model)).is_none());
    }
}
