// Incremental decoding against a KV cache in device memory: one new token per row, each in its
// own slot at its own position. Shape legend: S = rows this step, NH/NKV = query/kv heads,
// HS = head size (≤ 256), W = (NH + 2·NKV)·HS, QD = NH·HS, KVD = NKV·HS, P = positions per slot.
// One layer's cache is [slots, P, KVD] for keys and the same for values, in bf16.

#define DEC_WARPS 4
#define DEC_MAX_HS 256
#define DEC_PER_LANE (DEC_MAX_HS / 32)

// Copies each row's k and v (columns QD.. of qkv, after RoPE) into its slot at its position.
extern "C" __global__ void kv_cache_write(bf16* cache_k, bf16* cache_v, const float* qkv, const u32* slots,
                                          const u32* positions, int s, int qd, int kvd, int p) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)s * kvd) return;
    int r = (int)(idx / kvd), d = (int)(idx % kvd);
    long long w = qd + 2 * (long long)kvd;
    long long at = ((long long)slots[r] * p + positions[r]) * kvd + d;
    cache_k[at] = f32_to_bf16(qkv[r * w + qd + d]);
    cache_v[at] = f32_to_bf16(qkv[r * w + qd + kvd + d]);
}

// out[S, QD]: row r, head h attends to positions 0..=positions[r] of slot slots[r]. A warp per
// (row, head), keys 32 at a time with an online softmax.
extern "C" __global__ void decode_attention(float* out, const float* qkv, const bf16* cache_k,
                                            const bf16* cache_v, const u32* slots, const u32* positions,
                                            int s, int nh, int nkv, int hs, int p) {
    __shared__ float q_s[DEC_WARPS][DEC_MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * DEC_WARPS + warp, h = blockIdx.y;
    if (r >= s) return;
    int w = (nh + 2 * nkv) * hs, qd = nh * hs, kvd = nkv * hs, g = h / (nh / nkv);
    float scale = rsqrtf((float)hs);
    for (int d = lane; d < hs; d += 32) q_s[warp][d] = qkv[(long long)r * w + h * hs + d] * scale;
    __syncwarp();
    const bf16* kb = cache_k + (long long)slots[r] * p * kvd + g * hs;
    const bf16* vb = cache_v + (long long)slots[r] * p * kvd + g * hs;
    int last = (int)positions[r];
    float acc[DEC_PER_LANE];
#pragma unroll
    for (int e = 0; e < DEC_PER_LANE; e++) acc[e] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int j0 = 0; j0 <= last; j0 += 32) {
        int j = j0 + lane;
        float sc = -INFINITY;
        if (j <= last) {
            const bf16* k = kb + (long long)j * kvd;
            float dot = 0.0f;
            for (int d = 0; d < hs; d++) dot += q_s[warp][d] * bf16_to_f32(k[d]);
            sc = dot;
        }
        float m_new = fmaxf(m, warp_max(sc));
        float pr = j <= last ? expf(sc - m_new) : 0.0f;
        float corr = expf(m - m_new);
        l = l * corr + warp_sum(pr);
#pragma unroll
        for (int e = 0; e < DEC_PER_LANE; e++) acc[e] *= corr;
        int count = min(32, last - j0 + 1);
        for (int jj = 0; jj < count; jj++) {
            float pj = __shfl_sync(0xffffffffu, pr, jj);
            const bf16* v = vb + (long long)(j0 + jj) * kvd;
#pragma unroll
            for (int e = 0; e < DEC_PER_LANE; e++) {
                int d = lane + 32 * e;
                if (d < hs) acc[e] += pj * bf16_to_f32(v[d]);
            }
        }
        m = m_new;
    }
    float* o = out + (long long)r * qd + h * hs;
#pragma unroll
    for (int e = 0; e < DEC_PER_LANE; e++) {
        int d = lane + 32 * e;
        if (d < hs) o[d] = acc[e] / l;
    }
}

// dst[k, :] = src[rows[k], :] (the rows whose logits are wanted).
extern "C" __global__ void gather_rows(bf16* dst, const bf16* src, const u32* rows, int n, int c) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * c) return;
    int k = (int)(idx / c), col = (int)(idx % c);
    dst[idx] = src[(long long)rows[k] * c + col];
}
