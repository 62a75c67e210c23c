//! The flat parameter layout: every parameter of the model lives in one `Vec<f32>`, and so do its
//! gradients and both AdamW moments, at the same offsets (llm.c style). AdamW, clipping and
//! zeroing are then single loops, and a checkpoint is four contiguous buffers.
//!
//! Tensors that are multiplied together are stored adjacently so that one GEMM serves them:
//! q|k|v projections form one [(NH + 2·NKV)·HS, C] matrix (and their biases one vector), gate|up
//! one [2·I, C] matrix.

use super::config::ModelConfig;

/// One Hugging Face tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSlot {
    /// Its Hugging Face name, used for loading, saving and gradient checks.
    pub name: String,
    /// Its shape, row-major as in PyTorch.
    pub shape: Vec<usize>,
    /// Where it starts in the flat buffer.
    pub offset: usize,
    /// How many floats it has (product of `shape`).
    pub len: usize,
}

impl TensorSlot {
    /// Whether AdamW applies weight decay to it: matrices yes, norms and biases no (as the
    /// fixtures and most recipes do).
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }

    /// The range of the flat buffer it covers.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Offsets of one decoder layer's parameters, fused where the math allows.
#[derive(Debug, Clone, Copy)]
pub struct LayerOffsets {
    /// input_layernorm weight [C].
    pub ln1: usize,
    /// q|k|v projection weights [QKV, C].
    pub qkv_w: usize,
    /// q|k|v biases [QKV], when the model has them.
    pub qkv_b: Option<usize>,
    /// q_norm|k_norm weights [2·HS] (Qwen3's per-head RMSNorm before RoPE), when the model has them.
    pub qk_norm: Option<usize>,
    /// o_proj weight [C, NH·HS].
    pub o_w: usize,
    /// post_attention_layernorm weight [C].
    pub ln2: usize,
    /// gate|up projection weights [2·I, C].
    pub gate_up_w: usize,
    /// down_proj weight [C, I].
    pub down_w: usize,
}

/// Where every parameter lives in the flat buffer.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    /// Every tensor, in buffer order.
    pub slots: Vec<TensorSlot>,
    /// Total floats.
    pub total: usize,
    /// Token embedding [V, C].
    pub embed: usize,
    /// Per-layer offsets.
    pub layers: Vec<LayerOffsets>,
    /// Final norm weight [C].
    pub final_norm: usize,
    /// LM head [V, C]: the embedding itself when tied.
    pub lm_head: usize,
}

impl ParamLayout {
    /// Plans the layout for a config.
    pub fn new(config: &ModelConfig) -> Self {
        let c = config.hidden_size;
        let i = config.intermediate_size;
        let mut slots = Vec::new();
        let mut total = 0usize;
        let mut push = |name: String, shape: Vec<usize>| -> usize {
            let len = shape.iter().product();
            let offset = total;
            slots.push(TensorSlot {
                name,
                shape,
                offset,
                len,
            });
            total += len;
            offset
        };
        let embed = push(
            "model.embed_tokens.weight".into(),
            vec![config.vocab_size, c],
        );
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("model.layers.{l}.");
            let ln1 = push(format!("{p}input_layernorm.weight"), vec![c]);
            let qkv_w = push(
                format!("{p}self_attn.q_proj.weight"),
                vec![config.q_dim(), c],
            );
            push(
                format!("{p}self_attn.k_proj.weight"),
                vec![config.kv_dim(), c],
            );
            push(
                format!("{p}self_attn.v_proj.weight"),
                vec![config.kv_dim(), c],
            );
            let qkv_b = config.attention_bias.then(|| {
                let q = push(format!("{p}self_attn.q_proj.bias"), vec![config.q_dim()]);
                push(format!("{p}self_attn.k_proj.bias"), vec![config.kv_dim()]);
                push(format!("{p}self_attn.v_proj.bias"), vec![config.kv_dim()]);
                q
            });
            let o_w = push(
                format!("{p}self_attn.o_proj.weight"),
                vec![c, config.q_dim()],
            );
            let qk_norm = config.qk_norm().then(|| {
                let q = push(format!("{p}self_attn.q_norm.weight"), vec![config.head_dim]);
                push(format!("{p}self_attn.k_norm.weight"), vec![config.head_dim]);
                q
            });
            let ln2 = push(format!("{p}post_attention_layernorm.weight"), vec![c]);
            let gate_up_w = push(format!("{p}mlp.gate_proj.weight"), vec![i, c]);
            push(format!("{p}mlp.up_proj.weight"), vec![i, c]);
            let down_w = push(format!("{p}mlp.down_proj.weight"), vec![c, i]);
            layers.push(LayerOffsets {
                ln1,
                qkv_w,
                qkv_b,
                qk_norm,
                o_w,
                ln2,
                gate_up_w,
                down_w,
            });
        }
        let final_norm = push("model.norm.weight".into(), vec![c]);
        let lm_head = if config.tie_word_embeddings {
            embed
        } else {
            push("lm_head.weight".into(), vec![config.vocab_size, c])
        };
        ParamLayout {
            slots,
            total,
            embed,
            layers,
            final_norm,
            lm_head,
        }
    }

    /// The slot of a Hugging Face tensor name.
    pub fn slot(&self, name: &str) -> Option<&TensorSlot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// Per-float weight-decay flags are not stored; this yields (range, decays) per tensor.
    pub fn decay_ranges(&self) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + '_ {
        self.slots.iter().map(|s| (s.range(), s.decays()))
    }

    /// Parameters multiplied in one forward pass per token, for FLOP counts: every matrix except
    /// the embedding lookup (the LM head counts, tied or not).
    pub fn matmul_params(&self, config: &ModelConfig) -> usize {
        let per_layer = config.qkv_dim() * config.hidden_size
            + config.hidden_size * config.q_dim()
            + 3 * config.intermediate_size * config.hidden_size;
        per_layer * config.num_layers + config.vocab_size * config.hidden_size
    }
}
