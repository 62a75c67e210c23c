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

// decode_attention, grouped per kv head: a warp per (row, kv head) computes all G = NH/NKV query
// heads of the group, so each key and value is read once per group instead of G times, with
// 16-byte loads (8 bf16). A key of HS values is spread over LPK = HS/8 lanes; a warp holds
// 32/LPK keys at a time. Needs HS/8 a power of two ≤ 32, KVD a multiple of 8 (16-byte aligned
// rows) and G ≤ DEC_MAX_GROUP; the host falls back to decode_attention otherwise.
// Per lane: q and the output accumulator of its 8 dimensions for each of the G heads (f32).
#define DEC_MAX_GROUP 8

__device__ __forceinline__ void bf16x8_to_f32(uint4 raw, float* out) {
    u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

extern "C" __global__ void decode_attention_grouped(float* out, const float* qkv, const bf16* cache_k,
                                                    const bf16* cache_v, const u32* slots,
                                                    const u32* positions, int s, int nh, int nkv,
                                                    int hs, int p) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * DEC_WARPS + warp, g = blockIdx.y;
    if (r >= s) return;
    int group = nh / nkv;
    int lpk = hs >> 3;          // lanes per key
    int kpi = 32 / lpk;         // keys per iteration
    int part = lane % lpk;      // this lane's 8 dimensions: part*8 .. part*8+7
    int sub = lane / lpk;       // which key of the iteration
    int w = (nh + 2 * nkv) * hs, qd = nh * hs, kvd = nkv * hs;
    float scale = rsqrtf((float)hs);
    float q[DEC_MAX_GROUP][8], acc[DEC_MAX_GROUP][8], m[DEC_MAX_GROUP], l[DEC_MAX_GROUP];
#pragma unroll
    for (int gh = 0; gh < DEC_MAX_GROUP; gh++) {
        m[gh] = -INFINITY;
        l[gh] = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            acc[gh][e] = 0.0f;
            q[gh][e] = gh < group ? qkv[(long long)r * w + (g * group + gh) * hs + part * 8 + e] * scale : 0.0f;
        }
    }
    const bf16* kb = cache_k + (long long)slots[r] * p * kvd + g * hs + part * 8;
    const bf16* vb = cache_v + (long long)slots[r] * p * kvd + g * hs + part * 8;
    int last = (int)positions[r];
    for (int j0 = 0; j0 <= last; j0 += kpi) {
        int j = j0 + sub;
        bool live = j <= last;
        float kf[8], vf[8];
        if (live) {
            bf16x8_to_f32(*reinterpret_cast<const uint4*>(kb + (long long)j * kvd), kf);
            bf16x8_to_f32(*reinterpret_cast<const uint4*>(vb + (long long)j * kvd), vf);
        } else {
#pragma unroll
            for (int e = 0; e < 8; e++) kf[e] = vf[e] = 0.0f;
        }
#pragma unroll
        for (int gh = 0; gh < DEC_MAX_GROUP; gh++) {
            if (gh >= group) break;
            float dot = 0.0f;
#pragma unroll
            for (int e = 0; e < 8; e++) dot += q[gh][e] * kf[e];
            // The key's score: sum over its lpk lanes (offsets below lpk stay inside the key).
            for (int o = lpk >> 1; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
            float sc = live ? dot : -INFINITY;
            float m_new = fmaxf(m[gh], warp_max(sc));
            float pr = live ? expf(sc - m_new) : 0.0f;
            float corr = expf(m[gh] - m_new);
            // Each key's probability counted once: by the lane holding its first 8 dimensions.
            l[gh] = l[gh] * corr + warp_sum(part == 0 ? pr : 0.0f);
#pragma unroll
            for (int e = 0; e < 8; e++) acc[gh][e] = acc[gh][e] * corr + pr * vf[e];
            m[gh] = m_new;
        }
    }
    // Sum the accumulators of the kpi keys' lanes that hold the same dimensions.
#pragma unroll
    for (int gh = 0; gh < DEC_MAX_GROUP; gh++) {
        if (gh >= group) break;
        float* o = out + (long long)r * qd + (g * group + gh) * hs + part * 8;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            float a = acc[gh][e];
            for (int off = lpk; off < 32; off <<= 1) a += __shfl_xor_sync(0xffffffffu, a, off);
            if (sub == 0) o[e] = a / l[gh];
        }
    }
}

// dst[k, :] = src[rows[k], :] (the rows whose logits are wanted).
extern "C" __global__ void gather_rows(bf16* dst, const bf16* src, const u32* rows, int n, int c) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (long long)n * c) return;
    int k = (int)(idx / c), col = (int)(idx % c);
    dst[idx] = src[(long long)rows[k] * c + col];
}
