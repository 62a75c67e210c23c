// The fused classifier: per-token log-prob of the target and entropy from a chunk of logits, then
// d loss / d logits written over as the bf16 operand of the two backward GEMMs. The full
// [tokens, V] probability tensor never exists: a chunk of rows at a time, as the CPU head does.
// Shape legend: R = rows in the chunk, V = vocab. Sums run in f64 like the CPU twin's.

#define CLS_THREADS 1024

// lse[r] = log Σ_j exp(z_rj); logp[r] = z_r,target − lse; entropy[r] = lse − Σ_j p_rj z_rj.
extern "C" __global__ void __launch_bounds__(CLS_THREADS) classifier_stats(float* lse_out, float* logp_out, float* entropy_out,
                                            const float* logits, const u32* targets, int rows, int v) {
    __shared__ float scratch[32];
    __shared__ double dscratch[32];
    int r = blockIdx.x;
    if (r >= rows) return;
    const float* z = logits + (long long)r * v;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, z[j]);
    mx = block_max(mx, scratch);
    double se = 0.0, sez = 0.0;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        double e = (double)expf(z[j] - mx);
        se += e;
        sez += e * (double)z[j];
    }
    // Two f64 block sums through shared memory.
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        se += __shfl_xor_sync(0xffffffffu, se, o);
        sez += __shfl_xor_sync(0xffffffffu, sez, o);
    }
    __syncthreads();
    if (lane == 0) dscratch[warp] = se;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < warps; w++) t += dscratch[w];
        dscratch[31] = t;
    }
    __syncthreads();
    double total = dscratch[31];
    __syncthreads();
    if (lane == 0) dscratch[warp] = sez;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < warps; w++) t += dscratch[w];
        double lse = (double)mx + log(total);
        lse_out[r] = (float)lse;
        logp_out[r] = (float)((double)z[targets[r]] - lse);
        // Σ p z = Σ e z / Σ e
        entropy_out[r] = (float)(lse - t / total);
    }
}

// dlogits[r, j] = −d_logp·p − d_entropy·p·(log p + H) (+ d_logp at the target), as bf16.
extern "C" __global__ void classifier_grad(bf16* dlogits, const float* logits, const u32* targets,
                                           const float* lse, const float* entropy, const float* d_logp,
                                           const float* d_entropy, int rows, int v) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)rows * v) return;
    int r = (int)(idx / v), j = (int)(idx % v);
    float dl = d_logp[r], de = d_entropy[r];
    float g = 0.0f;
    if (dl != 0.0f || de != 0.0f) {
        float logp_j = logits[idx] - lse[r];
        float p = expf(logp_j);
        g = -dl * p - de * p * (logp_j + entropy[r]);
        if ((u32)j == targets[r]) g += dl;
    }
    dlogits[idx] = f32_to_bf16(g);
}

// The reward model's scalar head (`train::reward`): rewards[b] = Σ_c xf[rows[b], c] · w[c], a
// block per sequence (rows[b] = b·T + its scored position).
extern "C" __global__ void reward_scores(float* rewards, const bf16* xf, const bf16* w, const u32* rows,
                                         int b, int c) {
    __shared__ float scratch[32];
    int seq = blockIdx.x;
    if (seq >= b) return;
    const bf16* x = xf + (long long)rows[seq] * c;
    float acc = 0.0f;
    for (int k = threadIdx.x; k < c; k += blockDim.x) acc += bf16_to_f32(x[k]) * bf16_to_f32(w[k]);
    acc = block_sum(acc, scratch);
    if (threadIdx.x == 0) rewards[seq] = acc;
}

// Its backward, a thread per channel k: dscore[k] += Σ_b d_rewards[b] · xf[rows[b], k] (sequences
// in order: deterministic) and dxf[rows[b], k] = d_rewards[b] · w[k] (dxf zero elsewhere).
extern "C" __global__ void reward_scores_backward(float* dxf, float* dscore, const bf16* xf, const bf16* w,
                                                  const u32* rows, const float* d_rewards, int b, int c) {
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= c) return;
    float wk = bf16_to_f32(w[k]);
    float acc = 0.0f;
    for (int seq = 0; seq < b; seq++) {
        long long at = (long long)rows[seq] * c + k;
        acc += d_rewards[seq] * bf16_to_f32(xf[at]);
        dxf[at] = d_rewards[seq] * wk;
    }
    dscore[k] += acc;
}
