// Causal grouped-query attention, flash-style: no [B, NH, T, T] tensor. A warp owns a query row
// (forward, dQ) or a key row (dK, dV) and streams the other side 32 rows at a time with an online
// softmax; the forward keeps only each row's log-sum-exp for the backward pass.
//
// Shape legend: B = sequences, T = tokens per sequence, NH/NKV = query/kv heads, HS = head size
// (≤ 256), W = (NH + 2·NKV)·HS = row width of qkv, QD = NH·HS. qkv[B·T, W] holds q|k|v per token
// with RoPE applied; seg_start[b·T + i] is where token i's packed segment begins (it attends to
// keys seg_start..=i only). shared_start/shared_end [B·T] (null unless the layout shares prompts:
// `shared_window` in common.cuh) add the keys [shared_start, shared_end) of the prompt a branch
// continues: a branch token attends to its prompt and its own segment, never to another branch.

#define WARPS 4
#define MAX_HS 256
#define PER_LANE (MAX_HS / 32)
#define FULL 0xffffffffu

// out[B·T, QD] = softmax(q·kᵀ/√HS)·v per head; lse[B, NH, T] = log Σ exp(scaled scores).
// SHARED: whether the layout shares prompts (the `_shared` kernels); without, the shared tables
// are not read and the kernels are the plain segment kernels they were.
template <bool SHARED>
__device__ __forceinline__ void attention_forward_body(float* out, float* lse, const float* qkv,
                                                       const u32* seg_start, const u32* shared_start,
                                                       const u32* shared_end, int B, int T, int NH, int NKV,
                                                       int HS) {
    __shared__ float q_s[WARPS][MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int i = blockIdx.x * WARPS + warp, h = blockIdx.y, b = blockIdx.z;
    if (i >= T) return;  // whole warps leave together; only warp-level sync below
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, g = h / (NH / NKV);
    const float* base = qkv + (long long)b * T * W;
    float scale = rsqrtf((float)HS);
    for (int d = lane; d < HS; d += 32) q_s[warp][d] = base[(long long)i * W + h * HS + d] * scale;
    __syncwarp();
    float acc[PER_LANE];
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    int start = min((int)seg_start[b * T + i], i), sa = 0, sz = 0;
    if (SHARED) shared_window(shared_start, shared_end, (long long)b * T + i, start, sa, sz);
    // Window 0: the shared prompt's keys [sa, sz) (none unless the layout shares prompts);
    // window 1: the token's own segment [start, i]. One online softmax over both.
    for (int w = SHARED ? 0 : 1; w < 2; w++) {
        int lo = w ? start : sa, hi = w ? i : sz - 1;
        for (int j0 = lo; j0 <= hi; j0 += 32) {
            int j = j0 + lane;
            float s = -INFINITY;
            if (j <= hi) {
                const float* k = base + (long long)j * W + QD + g * HS;
                float dot = 0.0f;
                for (int d = 0; d < HS; d++) dot += q_s[warp][d] * k[d];
                s = dot;
            }
            float m_new = fmaxf(m, warp_max(s));
            float p = j <= hi ? expf(s - m_new) : 0.0f;
            float corr = expf(m - m_new);
            l = l * corr + warp_sum(p);
#pragma unroll
            for (int e = 0; e < PER_LANE; e++) acc[e] *= corr;
            int count = min(32, hi - j0 + 1);
            for (int jj = 0; jj < count; jj++) {
                float pj = __shfl_sync(FULL, p, jj);
                const float* v = base + (long long)(j0 + jj) * W + QD + NKV * HS + g * HS;
#pragma unroll
                for (int e = 0; e < PER_LANE; e++) {
                    int d = lane + 32 * e;
                    if (d < HS) acc[e] += pj * v[d];
                }
            }
            m = m_new;
        }
    }
    float* o = out + ((long long)b * T + i) * QD + h * HS;
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < HS) o[d] = acc[e] / l;
    }
    if (lane == 0) lse[((long long)b * NH + h) * T + i] = m + logf(l);
}

// The plain kernel (shared tables ignored) and the shared-prompt one.
extern "C" __global__ void attention_forward(float* out, float* lse, const float* qkv, const u32* seg_start,
                                             const u32* shared_start, const u32* shared_end, int B, int T, int NH,
                                             int NKV, int HS) {
    attention_forward_body<false>(out, lse, qkv, seg_start, shared_start, shared_end, B, T, NH, NKV, HS);
}

extern "C" __global__ void attention_forward_shared(float* out, float* lse, const float* qkv, const u32* seg_start,
                                                    const u32* shared_start, const u32* shared_end, int B, int T,
                                                    int NH, int NKV, int HS) {
    attention_forward_body<true>(out, lse, qkv, seg_start, shared_start, shared_end, B, T, NH, NKV, HS);
}

// delta[B, NH, T] = Σ_d dout·out per (token, head): the softmax backward's row term.
extern "C" __global__ void attention_backward_delta(float* delta, const float* dout, const float* out,
                                                    int B, int T, int NH, int HS) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)B * NH * T) return;
    int i = (int)(idx % T);
    long long bh = idx / T;
    int h = (int)(bh % NH), b = (int)(bh / NH);
    long long at = ((long long)b * T + i) * NH * HS + h * HS;
    float acc = 0.0f;
    for (int d = 0; d < HS; d++) acc += dout[at + d] * out[at + d];
    delta[idx] = acc;
}

// dq += Σ_j ds_ij·k_j/√HS over the keys query i sees; ds_ij = p_ij·(dout_i·v_j − delta_i).
template <bool SHARED>
__device__ __forceinline__ void attention_backward_dq_body(float* dqkv, const float* dout, const float* qkv,
                                                           const float* lse, const float* delta,
                                                           const u32* seg_start, const u32* shared_start,
                                                           const u32* shared_end, int B, int T, int NH, int NKV,
                                                           int HS) {
    __shared__ float q_s[WARPS][MAX_HS];
    __shared__ float do_s[WARPS][MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int i = blockIdx.x * WARPS + warp, h = blockIdx.y, b = blockIdx.z;
    if (i >= T) return;
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, g = h / (NH / NKV);
    const float* base = qkv + (long long)b * T * W;
    float scale = rsqrtf((float)HS);
    for (int d = lane; d < HS; d += 32) {
        q_s[warp][d] = base[(long long)i * W + h * HS + d] * scale;
        do_s[warp][d] = dout[((long long)b * T + i) * QD + h * HS + d];
    }
    __syncwarp();
    long long row = ((long long)b * NH + h) * T + i;
    float lse_i = lse[row], delta_i = delta[row];
    float acc[PER_LANE];
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) acc[e] = 0.0f;
    int start = min((int)seg_start[b * T + i], i), sa = 0, sz = 0;
    if (SHARED) shared_window(shared_start, shared_end, (long long)b * T + i, start, sa, sz);
    // The forward's two windows: the shared prompt [sa, sz) (maybe none), then [start, i].
    for (int w = SHARED ? 0 : 1; w < 2; w++) {
        int lo = w ? start : sa, hi = w ? i : sz - 1;
        for (int j0 = lo; j0 <= hi; j0 += 32) {
            int j = j0 + lane;
            float ds = 0.0f;
            if (j <= hi) {
                const float* k = base + (long long)j * W + QD + g * HS;
                const float* v = base + (long long)j * W + QD + NKV * HS + g * HS;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < HS; d++) {
                    s += q_s[warp][d] * k[d];
                    dp += do_s[warp][d] * v[d];
                }
                float p = expf(s - lse_i);
                ds = p * (dp - delta_i);
            }
            int count = min(32, hi - j0 + 1);
            for (int jj = 0; jj < count; jj++) {
                float dsj = __shfl_sync(FULL, ds, jj);
                const float* k = base + (long long)(j0 + jj) * W + QD + g * HS;
#pragma unroll
                for (int e = 0; e < PER_LANE; e++) {
                    int d = lane + 32 * e;
                    if (d < HS) acc[e] += dsj * k[d];
                }
            }
        }
    }
    float* dq = dqkv + ((long long)b * T + i) * W + h * HS;
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < HS) dq[d] += acc[e] * scale;
    }
}

extern "C" __global__ void attention_backward_dq(float* dqkv, const float* dout, const float* qkv, const float* lse,
                                                 const float* delta, const u32* seg_start, const u32* shared_start,
                                                 const u32* shared_end, int B, int T, int NH, int NKV, int HS) {
    attention_backward_dq_body<false>(dqkv, dout, qkv, lse, delta, seg_start, shared_start, shared_end, B, T, NH,
                                      NKV, HS);
}

extern "C" __global__ void attention_backward_dq_shared(float* dqkv, const float* dout, const float* qkv,
                                                        const float* lse, const float* delta, const u32* seg_start,
                                                        const u32* shared_start, const u32* shared_end, int B,
                                                        int T, int NH, int NKV, int HS) {
    attention_backward_dq_body<true>(dqkv, dout, qkv, lse, delta, seg_start, shared_start, shared_end, B, T, NH,
                                     NKV, HS);
}

// dk_j += Σ ds_ij·q_i/√HS and dv_j += Σ p_ij·dout_i over every query head of kv head g and every
// query i that sees key j. One warp per key row, so no two warps write the same gradient.
template <bool SHARED>
__device__ __forceinline__ void attention_backward_dkv_body(float* dqkv, const float* dout, const float* qkv,
                                                            const float* lse, const float* delta,
                                                            const u32* seg_start, const u32* shared_start,
                                                            const u32* shared_end, int B, int T, int NH,
                                                            int NKV, int HS) {
    __shared__ float k_s[WARPS][MAX_HS];
    __shared__ float v_s[WARPS][MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int j = blockIdx.x * WARPS + warp, g = blockIdx.y, b = blockIdx.z;
    if (j >= T) return;
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, group = NH / NKV;
    const float* base = qkv + (long long)b * T * W;
    float scale = rsqrtf((float)HS);
    for (int d = lane; d < HS; d += 32) {
        k_s[warp][d] = base[(long long)j * W + QD + g * HS + d];
        v_s[warp][d] = base[(long long)j * W + QD + NKV * HS + g * HS + d];
    }
    __syncwarp();
    float dk[PER_LANE], dv[PER_LANE];
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) dk[e] = dv[e] = 0.0f;
    for (int h = g * group; h < (g + 1) * group; h++) {
        const float* lse_h = lse + ((long long)b * NH + h) * T;
        const float* delta_h = delta + ((long long)b * NH + h) * T;
        for (int i0 = j; i0 < T; i0 += 32) {
            int i = i0 + lane;
            // Segments are contiguous, so the queries that see key j are j..(end of its segment);
            // a shared prompt's branches follow it, so its keys' queries run on to the group's end.
            bool sees = false;
            if (i < T) {
                int seg = (int)seg_start[b * T + i], sa = 0, sz = 0;
                if (SHARED) shared_window(shared_start, shared_end, (long long)b * T + i, min(seg, i), sa, sz);
                sees = seg <= j || (sa <= j && j < sz);
            }
            if (!__any_sync(FULL, sees)) break;
            float p = 0.0f, ds = 0.0f;
            if (sees) {
                const float* q = base + (long long)i * W + h * HS;
                const float* go = dout + ((long long)b * T + i) * QD + h * HS;
                float s = 0.0f, dp = 0.0f;
                for (int d = 0; d < HS; d++) {
                    s += q[d] * k_s[warp][d];
                    dp += go[d] * v_s[warp][d];
                }
                p = expf(s * scale - lse_h[i]);
                ds = p * (dp - delta_h[i]);
            }
            int count = min(32, T - i0);
            for (int ii = 0; ii < count; ii++) {
                float pi = __shfl_sync(FULL, p, ii), dsi = __shfl_sync(FULL, ds, ii);
                if (pi == 0.0f && dsi == 0.0f) continue;
                const float* q = base + (long long)(i0 + ii) * W + h * HS;
                const float* go = dout + ((long long)b * T + i0 + ii) * QD + h * HS;
#pragma unroll
                for (int e = 0; e < PER_LANE; e++) {
                    int d = lane + 32 * e;
                    if (d < HS) {
                        dk[e] += dsi * q[d];
                        dv[e] += pi * go[d];
                    }
                }
            }
        }
    }
    float* dkr = dqkv + ((long long)b * T + j) * W + QD + g * HS;
    float* dvr = dqkv + ((long long)b * T + j) * W + QD + NKV * HS + g * HS;
#pragma unroll
    for (int e = 0; e < PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < HS) {
            dkr[d] += dk[e] * scale;
            dvr[d] += dv[e];
        }
    }
}

extern "C" __global__ void attention_backward_dkv(float* dqkv, const float* dout, const float* qkv,
                                                  const float* lse, const float* delta, const u32* seg_start,
                                                  const u32* shared_start, const u32* shared_end, int B, int T,
                                                  int NH, int NKV, int HS) {
    attention_backward_dkv_body<false>(dqkv, dout, qkv, lse, delta, seg_start, shared_start, shared_end, B, T, NH,
                                       NKV, HS);
}

extern "C" __global__ void attention_backward_dkv_shared(float* dqkv, const float* dout, const float* qkv,
                                                         const float* lse, const float* delta, const u32* seg_start,
                                                         const u32* shared_start, const u32* shared_end, int B,
                                                         int T, int NH, int NKV, int HS) {
    attention_backward_dkv_body<true>(dqkv, dout, qkv, lse, delta, seg_start, shared_start, shared_end, B, T, NH,
                                      NKV, HS);
}
