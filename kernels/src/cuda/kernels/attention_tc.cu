// Training attention forward on tensor cores, FlashAttention-2 style: a block owns 64 query rows of
// one (sequence, head), four warps of 16 rows each; K and V stream through shared memory 64 keys
// at a time; S = Q·Kᵀ and O += P·V are bf16 `mma.sync.m16n8k16` with f32 accumulation; the online
// softmax runs on the S fragments in registers and P (rounded to bf16) feeds the second product
// straight from them. Same contract as attention.cu's attention_forward (out, lse), with q, k, v
// rounded to bf16 on the way into shared memory. HS ∈ {16, 32, 64, 128} (a multiple of 16 that
// fits the 48 KB of static shared memory); the host falls back to attention_forward otherwise.
// With shared prompts (shared_start/shared_end non-null: `shared_window` in common.cuh) a row also
// attends to its prompt's keys: a block starts at the first key any of its rows attends to, and
// skips the key tiles none of its rows attends to (the other branches between a prompt and a
// branch); a tile fully masked for one row leaves that row's m, l and O as they were.
//
// Shape legend as attention.cu: B, T, NH/NKV, HS, W = (NH + 2·NKV)·HS, QD = NH·HS.
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16): lane = 4·g + c (g = lane/4, c = lane%4);
//   A (16×16, row-major) regs a0..a3: (row g, cols 2c,2c+1), (row g+8, 2c..), (row g, 2c+8..),
//     (row g+8, 2c+8..); B (16×8, "col": k × n) regs b0, b1: (k 2c,2c+1; n g), (k 2c+8.., n g);
//   C (16×8 f32) c0..c3: (row g, cols 2c, 2c+1), (row g+8, cols 2c, 2c+1).
// The C layout of two adjacent 8-key tiles of S is exactly the A layout of a 16-key slice of P.

#define TC_ROWS 64      // query rows per block
#define TC_KEYS 64      // keys per shared-memory tile
#define TC_WARPS 4      // 16 query rows each
#define TC_MAX_HS 128

__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
}

__device__ __forceinline__ void mma_bf16_16816(float* d, const u32* a, const u32* b) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Two bf16 of shared memory as one register, lower address in the low half.
__device__ __forceinline__ u32 ld_pair(const bf16* p) {
    return *reinterpret_cast<const u32*>(p);
}

// Whether query i (segment from s, shared prompt [a, z)) attends to key j.
__device__ __forceinline__ bool sees(int j, int i, int s, int a, int z, int T) {
    return i < T && ((j >= s && j <= i) || (j >= a && j < z));
}

// Row i's shared prompt window [a, z) (empty for rows past T or without one); `row` is b·T.
__device__ __forceinline__ void row_shared_window(const u32* shared_start, const u32* shared_end, long long row,
                                                  int i, int s, int T, int& a, int& z) {
    a = 0;
    z = 0;
    if (i < T) shared_window(shared_start, shared_end, row + i, min(s, i), a, z);
}

// Whether keys [j0, j0 + keys) hold one that query i attends to.
__device__ __forceinline__ bool tile_needed(int j0, int keys, int i, int s, int a, int z, int T) {
    int j1 = j0 + keys - 1;
    return i < T && ((j0 <= i && j1 >= s) || (j0 < z && j1 >= a));
}

// The first key any of the rows [row0, row0 + TC_ROWS) attends to: its segment's start, or its
// shared prompt's where it has one (T for a block past the end).
__device__ __forceinline__ int first_key(const u32* seg, const u32* shared_start, const u32* shared_end,
                                         long long row, int row0, int T) {
    int first = T;
    for (int r = 0; r < TC_ROWS && row0 + r < T; r++) {
        int i = row0 + r, s = (int)seg[i], a, z;
        shared_window(shared_start, shared_end, row + i, min(s, i), a, z);
        first = min(first, a < z ? a : s);
    }
    return first;
}

extern "C" __global__ void __launch_bounds__(TC_WARPS * 32)
attention_forward_tc(float* out, float* lse, const float* qkv, const u32* seg_start, const u32* shared_start,
                     const u32* shared_end, int B, int T, int NH, int NKV, int HS) {
    __shared__ __align__(16) bf16 q_s[TC_ROWS * TC_MAX_HS];
    __shared__ __align__(16) bf16 k_s[TC_KEYS * TC_MAX_HS];
    __shared__ __align__(16) bf16 v_s[TC_KEYS * TC_MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int row0 = blockIdx.x * TC_ROWS, h = blockIdx.y, b = blockIdx.z;
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, kvh = h / (NH / NKV);
    const float* base = qkv + (long long)b * T * W;
    const u32* seg = seg_start + (long long)b * T;
    float scale = rsqrtf((float)HS);

    // Q tile, pre-scaled, rows past T zero; and the first key any row of the block attends to.
    for (int idx = threadIdx.x; idx < TC_ROWS * HS; idx += blockDim.x) {
        int r = idx / HS, d = idx % HS, i = row0 + r;
        q_s[r * HS + d] = f32_to_bf16(i < T ? base[(long long)i * W + h * HS + d] * scale : 0.0f);
    }
    int first = first_key(seg, shared_start, shared_end, (long long)b * T, row0, T);
    int last = min(row0 + TC_ROWS, T) - 1;

    // This thread's two rows (g and g+8 of its warp's 16) and their key ranges: [s, i] and the
    // shared prompt's [a, z) (empty unless shared).
    int i_lo = row0 + warp * 16 + g, i_hi = i_lo + 8;
    int s_lo = i_lo < T ? (int)seg[i_lo] : 0, s_hi = i_hi < T ? (int)seg[i_hi] : 0;
    int a_lo, z_lo, a_hi, z_hi;
    row_shared_window(shared_start, shared_end, (long long)b * T, i_lo, s_lo, T, a_lo, z_lo);
    row_shared_window(shared_start, shared_end, (long long)b * T, i_hi, s_hi, T, a_hi, z_hi);
    float o[TC_MAX_HS / 8][4];
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;

    for (int j0 = (first / TC_KEYS) * TC_KEYS; j0 <= last; j0 += TC_KEYS) {
        // The previous tile is consumed (and the Q tile written, first time); a tile no row of
        // the block attends to is skipped by all (never one of a plain or packed layout).
        bool need = tile_needed(j0, TC_KEYS, i_lo, s_lo, a_lo, z_lo, T) ||
                    tile_needed(j0, TC_KEYS, i_hi, s_hi, a_hi, z_hi, T);
        if (!__syncthreads_or(need)) continue;
        for (int idx = threadIdx.x; idx < TC_KEYS * HS; idx += blockDim.x) {
            int r = idx / HS, d = idx % HS, j = j0 + r;
            bool in = j < T;
            const float* kv = base + (long long)j * W + QD + kvh * HS + d;
            k_s[r * HS + d] = f32_to_bf16(in ? kv[0] : 0.0f);
            v_s[r * HS + d] = f32_to_bf16(in ? kv[NKV * HS] : 0.0f);
        }
        __syncthreads();
        // S[16, 64] of this warp: 8 key tiles of 8, HS/16 steps each.
        float s[TC_KEYS / 8][4];
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
        const bf16* qw = q_s + (warp * 16) * HS;
        for (int kk = 0; kk < HS; kk += 16) {
            u32 a[4];
            a[0] = ld_pair(qw + g * HS + kk + 2 * c);
            a[1] = ld_pair(qw + (g + 8) * HS + kk + 2 * c);
            a[2] = ld_pair(qw + g * HS + kk + 2 * c + 8);
            a[3] = ld_pair(qw + (g + 8) * HS + kk + 2 * c + 8);
#pragma unroll
            for (int n = 0; n < TC_KEYS / 8; n++) {
                // B = Kᵀ: (k = dim, n = key); key n·8 + g, dims kk + 2c (+1) and + 8.
                const bf16* kr = k_s + (n * 8 + g) * HS + kk + 2 * c;
                u32 bb[2] = {ld_pair(kr), ld_pair(kr + 8)};
                mma_bf16_16816(s[n], a, bb);
            }
        }
        // Mask (causal and segment), then the online softmax on rows lo (c0, c1) and hi (c2, c3).
        float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int j = j0 + n * 8 + 2 * c + e;
                if (!sees(j, i_lo, s_lo, a_lo, z_lo, T)) s[n][e] = -INFINITY;
                if (!sees(j, i_hi, s_hi, a_hi, z_hi, T)) s[n][2 + e] = -INFINITY;
                mx_lo = fmaxf(mx_lo, s[n][e]);
                mx_hi = fmaxf(mx_hi, s[n][2 + e]);
            }
        }
        // A row's 64 scores sit in the 4 lanes of its quad.
        for (int off = 1; off < 4; off <<= 1) {
            mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
            mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
        }
        float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
        // A row with nothing to attend to yet keeps m = −inf: subtract 0 instead (p = 0 anyway).
        float base_lo = mn_lo == -INFINITY ? 0.0f : mn_lo, base_hi = mn_hi == -INFINITY ? 0.0f : mn_hi;
        float corr_lo = expf(m_lo - base_lo), corr_hi = expf(m_hi - base_hi);
        float sum_lo = 0.0f, sum_hi = 0.0f;
        u32 p[TC_KEYS / 16][4];
#pragma unroll
        for (int n = 0; n < TC_KEYS / 8; n++) {
            float p0 = expf(s[n][0] - base_lo), p1 = expf(s[n][1] - base_lo);
            float p2 = expf(s[n][2] - base_hi), p3 = expf(s[n][3] - base_hi);
            sum_lo += p0 + p1;
            sum_hi += p2 + p3;
            // Key tile n is half (n & 1) of the 16-key slice n/2: A regs 0/1 (cols 2c) or 2/3 (+8).
            p[n >> 1][(n & 1) * 2 + 0] = pack_bf16(p0, p1);
            p[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p2, p3);
        }
        for (int off = 1; off < 4; off <<= 1) {
            sum_lo += __shfl_xor_sync(0xffffffffu, sum_lo, off);
            sum_hi += __shfl_xor_sync(0xffffffffu, sum_hi, off);
        }
        l_lo = l_lo * corr_lo + sum_lo;
        l_hi = l_hi * corr_hi + sum_hi;
        m_lo = mn_lo;
        m_hi = mn_hi;
#pragma unroll
        for (int n = 0; n < TC_MAX_HS / 8; n++) {
            o[n][0] *= corr_lo;
            o[n][1] *= corr_lo;
            o[n][2] *= corr_hi;
            o[n][3] *= corr_hi;
        }
        // O[16, HS] += P[16, 64] · V[64, HS]: B = V (k = key, n = dim), keys 16·kk + 2c (+1), + 8.
#pragma unroll
        for (int kk = 0; kk < TC_KEYS / 16; kk++) {
            // A regs in PTX order: (row g, k 2c), (row g+8, k 2c), (row g, k 2c+8), (row g+8, k 2c+8).
            u32 a[4] = {p[kk][0], p[kk][1], p[kk][2], p[kk][3]};
#pragma unroll
            for (int n = 0; n < TC_MAX_HS / 8; n++) {
                if (n * 8 >= HS) break;
                const bf16* vc = v_s + (kk * 16 + 2 * c) * HS + n * 8 + g;
                u32 bb[2] = {(u32)vc[0] | ((u32)vc[HS] << 16), (u32)vc[8 * HS] | ((u32)vc[9 * HS] << 16)};
                mma_bf16_16816(o[n], a, bb);
            }
        }
    }
    // out = O / l; lse = m + log l (scaled scores). Each of a row's 4 lanes writes 2 columns per tile.
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++) {
        if (n * 8 >= HS) break;
        int d = n * 8 + 2 * c;
        if (i_lo < T) {
            float* dst = out + ((long long)b * T + i_lo) * QD + h * HS + d;
            dst[0] = o[n][0] / l_lo;
            dst[1] = o[n][1] / l_lo;
        }
        if (i_hi < T) {
            float* dst = out + ((long long)b * T + i_hi) * QD + h * HS + d;
            dst[0] = o[n][2] / l_hi;
            dst[1] = o[n][3] / l_hi;
        }
    }
    if (c == 0) {
        if (i_lo < T) lse[((long long)b * NH + h) * T + i_lo] = m_lo + logf(l_lo);
        if (i_hi < T) lse[((long long)b * NH + h) * T + i_hi] = m_hi + logf(l_hi);
    }
}

// ---- Backward on tensor cores: dQ and dK/dV in two kernels (no float atomics: each output row is
// written by one block), probabilities recomputed from q, k and the forward's lse, delta[B, NH, T]
// = Σ dout·out from attention.cu's attention_backward_delta. Operands (q, k, v, dout, P, dS)
// rounded to bf16, products accumulated in f32. Both add (+=) into dqkv, as attention.cu's do.
#define TC_BKEYS 32     // keys per tile in the dQ kernel (shared memory: q, dout 64 rows, k, v 32)
#define TC_BQUERIES 32  // queries per tile in the dK/dV kernel (k, v 64 rows, q, dout 32)

// Rows [row0, row0 + rows) of one head's HS columns of a [.., W] f32 matrix (times `mul`) into
// shared memory as bf16, zeros past T.
__device__ __forceinline__ void load_tile(bf16* dst, const float* src, long long stride, int row0, int rows,
                                          int T, int HS, float mul) {
    for (int idx = threadIdx.x; idx < rows * HS; idx += blockDim.x) {
        int r = idx / HS, d = idx % HS, i = row0 + r;
        dst[r * HS + d] = f32_to_bf16(i < T ? src[(long long)i * stride + d] * mul : 0.0f);
    }
}

// C[16 × 8n] += A[16 × HS] (rows of `a`, row-major in shared memory) · B where B[k = dim, n = col]
// is row `col` of `b` (row-major): i.e. A · Bᵀ over the head dimension.
template <int NT>
__device__ __forceinline__ void mma_rows_by_rows(float (*acc)[4], const bf16* a, const bf16* b, int HS, int g,
                                                 int c) {
    for (int kk = 0; kk < HS; kk += 16) {
        u32 fa[4] = {ld_pair(a + g * HS + kk + 2 * c), ld_pair(a + (g + 8) * HS + kk + 2 * c),
                     ld_pair(a + g * HS + kk + 2 * c + 8), ld_pair(a + (g + 8) * HS + kk + 2 * c + 8)};
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const bf16* br = b + (n * 8 + g) * HS + kk + 2 * c;
            u32 fb[2] = {ld_pair(br), ld_pair(br + 8)};
            mma_bf16_16816(acc[n], fa, fb);
        }
    }
}

// acc[16 × HS] += P[16 × 16·KS] · M[16·KS × HS], P given as packed A fragments (the C layout of
// a score tile), M row-major in shared memory (rows = the contraction index).
template <int KS>
__device__ __forceinline__ void mma_frags_by_rows(float (*acc)[4], const u32 (*p)[4], const bf16* m, int HS, int g,
                                                  int c) {
#pragma unroll
    for (int kk = 0; kk < KS; kk++) {
        u32 fa[4] = {p[kk][0], p[kk][1], p[kk][2], p[kk][3]};
#pragma unroll
        for (int n = 0; n < TC_MAX_HS / 8; n++) {
            if (n * 8 >= HS) break;
            const bf16* mc = m + (kk * 16 + 2 * c) * HS + n * 8 + g;
            u32 fb[2] = {(u32)mc[0] | ((u32)mc[HS] << 16), (u32)mc[8 * HS] | ((u32)mc[9 * HS] << 16)};
            mma_bf16_16816(acc[n], fa, fb);
        }
    }
}

// dqkv[:, q part of head h] += dS · K / √HS for 64 query rows of (b, h) per block.
extern "C" __global__ void __launch_bounds__(TC_WARPS * 32)
attention_backward_dq_tc(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta,
                         const u32* seg_start, const u32* shared_start, const u32* shared_end, int B, int T,
                         int NH, int NKV, int HS) {
    __shared__ __align__(16) bf16 q_s[TC_ROWS * TC_MAX_HS];
    __shared__ __align__(16) bf16 do_s[TC_ROWS * TC_MAX_HS];
    __shared__ __align__(16) bf16 k_s[TC_BKEYS * TC_MAX_HS];
    __shared__ __align__(16) bf16 v_s[TC_BKEYS * TC_MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int row0 = blockIdx.x * TC_ROWS, h = blockIdx.y, b = blockIdx.z;
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, kvh = h / (NH / NKV);
    const float* base = qkv + (long long)b * T * W;
    const u32* seg = seg_start + (long long)b * T;
    float scale = rsqrtf((float)HS);
    load_tile(q_s, base + h * HS, W, row0, TC_ROWS, T, HS, scale);
    load_tile(do_s, dout + (long long)b * T * QD + h * HS, QD, row0, TC_ROWS, T, HS, 1.0f);
    int first = first_key(seg, shared_start, shared_end, (long long)b * T, row0, T);
    int last = min(row0 + TC_ROWS, T) - 1;
    int i_lo = row0 + warp * 16 + g, i_hi = i_lo + 8;
    int s_lo = i_lo < T ? (int)seg[i_lo] : 0, s_hi = i_hi < T ? (int)seg[i_hi] : 0;
    int a_lo, z_lo, a_hi, z_hi;
    row_shared_window(shared_start, shared_end, (long long)b * T, i_lo, s_lo, T, a_lo, z_lo);
    row_shared_window(shared_start, shared_end, (long long)b * T, i_hi, s_hi, T, a_hi, z_hi);
    const float* lse_bh = lse + ((long long)b * NH + h) * T;
    const float* delta_bh = delta + ((long long)b * NH + h) * T;
    float lse_lo = i_lo < T ? lse_bh[i_lo] : 0.0f, lse_hi = i_hi < T ? lse_bh[i_hi] : 0.0f;
    float dl_lo = i_lo < T ? delta_bh[i_lo] : 0.0f, dl_hi = i_hi < T ? delta_bh[i_hi] : 0.0f;
    float dq[TC_MAX_HS / 8][4];
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
    const bf16* qw = q_s + warp * 16 * HS;
    const bf16* dow = do_s + warp * 16 * HS;
    for (int j0 = (first / TC_BKEYS) * TC_BKEYS; j0 <= last; j0 += TC_BKEYS) {
        // As the forward: a barrier, and tiles no row of the block attends to skipped by all.
        bool need = tile_needed(j0, TC_BKEYS, i_lo, s_lo, a_lo, z_lo, T) ||
                    tile_needed(j0, TC_BKEYS, i_hi, s_hi, a_hi, z_hi, T);
        if (!__syncthreads_or(need)) continue;
        load_tile(k_s, base + QD + kvh * HS, W, j0, TC_BKEYS, T, HS, 1.0f);
        load_tile(v_s, base + QD + NKV * HS + kvh * HS, W, j0, TC_BKEYS, T, HS, 1.0f);
        __syncthreads();
        float s[TC_BKEYS / 8][4], dp[TC_BKEYS / 8][4];
#pragma unroll
        for (int n = 0; n < TC_BKEYS / 8; n++)
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
        mma_rows_by_rows<TC_BKEYS / 8>(s, qw, k_s, HS, g, c);    // S = (q/√HS) · Kᵀ
        mma_rows_by_rows<TC_BKEYS / 8>(dp, dow, v_s, HS, g, c);  // dP = dout · Vᵀ
        u32 ds[TC_BKEYS / 16][4];
#pragma unroll
        for (int n = 0; n < TC_BKEYS / 8; n++) {
            float d4[4];
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int j = j0 + n * 8 + 2 * c + e;
                bool ok_lo = sees(j, i_lo, s_lo, a_lo, z_lo, T), ok_hi = sees(j, i_hi, s_hi, a_hi, z_hi, T);
                float p_lo = ok_lo ? expf(s[n][e] - lse_lo) : 0.0f;
                float p_hi = ok_hi ? expf(s[n][2 + e] - lse_hi) : 0.0f;
                d4[e] = p_lo * (dp[n][e] - dl_lo);
                d4[2 + e] = p_hi * (dp[n][2 + e] - dl_hi);
            }
            ds[n >> 1][(n & 1) * 2 + 0] = pack_bf16(d4[0], d4[1]);
            ds[n >> 1][(n & 1) * 2 + 1] = pack_bf16(d4[2], d4[3]);
        }
        mma_frags_by_rows<TC_BKEYS / 16>(dq, ds, k_s, HS, g, c);  // dQ += dS · K
    }
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++) {
        if (n * 8 >= HS) break;
        int d = h * HS + n * 8 + 2 * c;
        if (i_lo < T) {
            float* dst = dqkv + ((long long)b * T + i_lo) * W + d;
            dst[0] += dq[n][0] * scale;
            dst[1] += dq[n][1] * scale;
        }
        if (i_hi < T) {
            float* dst = dqkv + ((long long)b * T + i_hi) * W + d;
            dst[0] += dq[n][2] * scale;
            dst[1] += dq[n][3] * scale;
        }
    }
}

// dqkv[:, k and v parts of kv head kvh] += dSᵀ · q / √HS and Pᵀ · dout, summed over the query
// heads of the group in order, for 64 key rows of (b, kvh) per block.
extern "C" __global__ void __launch_bounds__(TC_WARPS * 32)
attention_backward_dkv_tc(float* dqkv, const float* dout, const float* qkv, const float* lse, const float* delta,
                          const u32* seg_start, const u32* shared_start, const u32* shared_end, int B, int T,
                          int NH, int NKV, int HS) {
    __shared__ __align__(16) bf16 k_s[TC_ROWS * TC_MAX_HS];
    __shared__ __align__(16) bf16 v_s[TC_ROWS * TC_MAX_HS];
    __shared__ __align__(16) bf16 q_s[TC_BQUERIES * TC_MAX_HS];
    __shared__ __align__(16) bf16 do_s[TC_BQUERIES * TC_MAX_HS];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    int key0 = blockIdx.x * TC_ROWS, kvh = blockIdx.y, b = blockIdx.z;
    int W = (NH + 2 * NKV) * HS, QD = NH * HS, group = NH / NKV;
    const float* base = qkv + (long long)b * T * W;
    const u32* seg = seg_start + (long long)b * T;
    float scale = rsqrtf((float)HS);
    load_tile(k_s, base + QD + kvh * HS, W, key0, TC_ROWS, T, HS, 1.0f);
    load_tile(v_s, base + QD + NKV * HS + kvh * HS, W, key0, TC_ROWS, T, HS, 1.0f);
    // This thread's two keys.
    int j_lo = key0 + warp * 16 + g, j_hi = j_lo + 8;
    float dk[TC_MAX_HS / 8][4], dv[TC_MAX_HS / 8][4];
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++)
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
    const bf16* kw = k_s + warp * 16 * HS;
    const bf16* vw = v_s + warp * 16 * HS;
    for (int hh = 0; hh < group; hh++) {
        int h = kvh * group + hh;
        const float* lse_bh = lse + ((long long)b * NH + h) * T;
        const float* delta_bh = delta + ((long long)b * NH + h) * T;
        for (int i0 = (key0 / TC_BQUERIES) * TC_BQUERIES; i0 < T; i0 += TC_BQUERIES) {
            __syncthreads();
            load_tile(q_s, base + h * HS, W, i0, TC_BQUERIES, T, HS, scale);
            load_tile(do_s, dout + (long long)b * T * QD + h * HS, QD, i0, TC_BQUERIES, T, HS, 1.0f);
            __syncthreads();
            float st[TC_BQUERIES / 8][4], dpt[TC_BQUERIES / 8][4];
#pragma unroll
            for (int n = 0; n < TC_BQUERIES / 8; n++)
                st[n][0] = st[n][1] = st[n][2] = st[n][3] = dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
            mma_rows_by_rows<TC_BQUERIES / 8>(st, kw, q_s, HS, g, c);    // Sᵀ = K · (q/√HS)ᵀ
            mma_rows_by_rows<TC_BQUERIES / 8>(dpt, vw, do_s, HS, g, c);  // dPᵀ = V · doutᵀ
            u32 pt[TC_BQUERIES / 16][4], dst[TC_BQUERIES / 16][4];
#pragma unroll
            for (int n = 0; n < TC_BQUERIES / 8; n++) {
                float p4[4], d4[4];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    int i = i0 + n * 8 + 2 * c + e;
                    bool live = i < T;
                    int si = live ? (int)seg[i] : 0, ai, zi;
                    row_shared_window(shared_start, shared_end, (long long)b * T, i, si, T, ai, zi);
                    float l_i = live ? lse_bh[i] : 0.0f, dl_i = live ? delta_bh[i] : 0.0f;
                    bool ok_lo = j_lo < T && sees(j_lo, i, si, ai, zi, T);
                    bool ok_hi = j_hi < T && sees(j_hi, i, si, ai, zi, T);
                    p4[e] = ok_lo ? expf(st[n][e] - l_i) : 0.0f;
                    p4[2 + e] = ok_hi ? expf(st[n][2 + e] - l_i) : 0.0f;
                    d4[e] = p4[e] * (dpt[n][e] - dl_i);
                    d4[2 + e] = p4[2 + e] * (dpt[n][2 + e] - dl_i);
                }
                pt[n >> 1][(n & 1) * 2 + 0] = pack_bf16(p4[0], p4[1]);
                pt[n >> 1][(n & 1) * 2 + 1] = pack_bf16(p4[2], p4[3]);
                dst[n >> 1][(n & 1) * 2 + 0] = pack_bf16(d4[0], d4[1]);
                dst[n >> 1][(n & 1) * 2 + 1] = pack_bf16(d4[2], d4[3]);
            }
            mma_frags_by_rows<TC_BQUERIES / 16>(dv, pt, do_s, HS, g, c);   // dV += Pᵀ · dout
            mma_frags_by_rows<TC_BQUERIES / 16>(dk, dst, q_s, HS, g, c);   // dK += dSᵀ · q/√HS
        }
    }
#pragma unroll
    for (int n = 0; n < TC_MAX_HS / 8; n++) {
        if (n * 8 >= HS) break;
        int d = n * 8 + 2 * c;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            int j = half ? j_hi : j_lo;
            if (j >= T) continue;
            float* row = dqkv + ((long long)b * T + j) * W;
            row[QD + kvh * HS + d] += dk[n][2 * half];
            row[QD + kvh * HS + d + 1] += dk[n][2 * half + 1];
            row[QD + NKV * HS + kvh * HS + d] += dv[n][2 * half];
            row[QD + NKV * HS + kvh * HS + d + 1] += dv[n][2 * half + 1];
        }
    }
}
