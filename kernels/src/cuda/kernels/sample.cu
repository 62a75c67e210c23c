// Sampling on the device, a block per row of logits: temperature, top-k, min-p and top-p
// (nucleus) truncation by bisection on a logit threshold (no sort), then the Gumbel-max trick with
// a counter-based generator seeded per sequence: given the same logits, a row's draw does not
// depend on the other rows. (The logits themselves come from cuBLAS GEMMs whose kernel choice
// depends on the row count, so GPU decode as a whole is not batch-invariant.)
// Shape legend: S = rows, V = vocab.
//
// Rows without a usable logit (all NaN, or all −inf) fall back to token 0, as the CPU twin does,
// and set status[r] = 1 so the host can report them; NaN logits elsewhere are never kept, and −inf
// logits are never kept by top-k/top-p (the bisections run between finite bounds).

#define SAMPLE_THREADS 1024
#define BISECTION_STEPS 40

__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Uniform in (0, 1) from (seed, counter, token): splitmix64 finalisers, 53 bits.
__device__ __forceinline__ double uniform01(u64 seed, u64 counter, u32 token) {
    u64 h = mix64(seed ^ mix64(counter ^ mix64((u64)token)));
    return ((double)(h >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

// Max of (value, −index) over the block: the first index of the largest value.
__device__ __forceinline__ void block_argmax(float& best, int& best_i, float* vals, int* idxs) {
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
        if (ov > best || (ov == best && oi < best_i)) {
            best = ov;
            best_i = oi;
        }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) {
        vals[warp] = best;
        idxs[warp] = best_i;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < warps; w++) {
            if (vals[w] > vals[0] || (vals[w] == vals[0] && idxs[w] < idxs[0])) {
                vals[0] = vals[w];
                idxs[0] = idxs[w];
            }
        }
    }
    __syncthreads();
    best = vals[0];
    best_i = idxs[0];
}

// Greedy pick over z: the first index of the largest value (NaN never wins); 0x7fffffff when no
// value is larger than −inf (the caller falls back).
__device__ __forceinline__ int argmax_row(const float* z, int v, float* vals, int* idxs) {
    float best = -INFINITY;
    int best_i = 0x7fffffff;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        if (z[j] > best) {
            best = z[j];
            best_i = j;
        }
    }
    block_argmax(best, best_i, vals, idxs);
    return best_i;
}

// Per row r, params[4r..4r+4] (one upload per call): temperature bits | top_k << 32,
// top_p bits | min_p bits << 32, the sequence's seed, its counter. results[4r..4r+4] (one
// download): the token, log π over the truncated, tempered distribution (0 when greedy; f32
// bits), the raw log-softmax of the token (f32 bits), and status (0, or 1 when the row had no
// usable logit and token 0 was returned).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_rows(u32* results, const float* logits,
                                                                      const u64* params, int s, int v) {
    __shared__ float scratch[32];
    __shared__ float vals[32];
    __shared__ int idxs[32];
    int r = blockIdx.x;
    if (r >= s) return;
    const float* z = logits + (long long)r * v;
    // mx: the largest logit (fmaxf skips NaN); mn: the smallest finite one (bisection bound).
    float mx = -INFINITY, mn = INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) {
        float x = z[j];
        mx = fmaxf(mx, x);
        if (x > -INFINITY && x < INFINITY) mn = fminf(mn, x);
    }
    mx = block_max(mx, scratch);
    mn = -block_max(-mn, scratch);
    float se = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) se += expf(z[j] - mx);
    float lse = mx + logf(block_sum(se, scratch));
    u64 p0 = params[4 * r], p1 = params[4 * r + 1];
    float t = __uint_as_float((u32)p0);
    int chosen;
    float slp = 0.0f;
    // Greedy, or the limit of sampling when a logit is +inf (or no finite one bounds a bisection).
    if (t <= 0.0f || !(mx < INFINITY) || !(mn < INFINITY)) {
        chosen = argmax_row(z, v, vals, idxs);
    } else {
        float inv_t = 1.0f / t;
        float tau = -INFINITY;  // tokens with z ≥ tau are kept
        int k = (int)(p0 >> 32);
        if (k > 0 && k < v) {
            // Largest tau with count(z ≥ tau) ≥ k: the k-th largest logit (and its ties). Both
            // bounds are finite, so mid is too; with fewer than k finite logits tau stays at mn.
            float lo = mn, hi = mx;
            for (int it = 0; it < BISECTION_STEPS; it++) {
                float mid = 0.5f * (lo + hi);
                float cnt = 0.0f;
                for (int j = threadIdx.x; j < v; j += blockDim.x) cnt += z[j] >= mid ? 1.0f : 0.0f;
                if (block_sum(cnt, scratch) >= (float)k) lo = mid; else hi = mid;
            }
            tau = lo;
        }
        float mp = __uint_as_float((u32)(p1 >> 32));
        if (mp > 0.0f) tau = fmaxf(tau, mx + t * logf(mp));  // (z − max)/T ≥ ln(min_p)
        float tp = __uint_as_float((u32)p1);
        if (tp < 1.0f) {
            float total = 0.0f;
            for (int j = threadIdx.x; j < v; j += blockDim.x) if (z[j] >= tau) total += expf((z[j] - mx) * inv_t);
            total = block_sum(total, scratch);
            // Largest threshold whose kept mass is still ≥ top_p: the smallest nucleus.
            float lo = fmaxf(tau, mn), hi = mx;
            for (int it = 0; it < BISECTION_STEPS; it++) {
                float mid = 0.5f * (lo + hi);
                float mass = 0.0f;
                for (int j = threadIdx.x; j < v; j += blockDim.x) if (z[j] >= mid) mass += expf((z[j] - mx) * inv_t);
                if (block_sum(mass, scratch) >= tp * total) lo = mid; else hi = mid;
            }
            tau = fmaxf(tau, lo);
        }
        // Gumbel-max over the kept tokens: argmax (z − max)/T − log(−log u) is an exact draw.
        u64 seed = params[4 * r + 2], counter = params[4 * r + 3];
        float best = -INFINITY, kept = 0.0f;
        int best_i = 0x7fffffff;
        for (int j = threadIdx.x; j < v; j += blockDim.x) {
            if (!(z[j] >= tau)) continue;  // also skips NaN
            float scaled = (z[j] - mx) * inv_t;
            kept += expf(scaled);
            float key = scaled - (float)log(-log(uniform01(seed, counter, (u32)j)));
            if (key > best) {
                best = key;
                best_i = j;
            }
        }
        kept = block_sum(kept, scratch);
        block_argmax(best, best_i, vals, idxs);
        chosen = best_i;
        if (chosen < v) slp = (z[chosen] - mx) * inv_t - logf(kept);
    }
    if (threadIdx.x == 0) {
        int bad = chosen < 0 || chosen >= v;
        if (bad) {
            chosen = 0;  // no usable logit: the CPU twin's fallback
            slp = 0.0f;
        }
        u32* res = results + 4 * r;
        res[0] = (u32)chosen;
        res[1] = __float_as_uint(slp);
        res[2] = __float_as_uint(z[chosen] - lse);
        res[3] = (u32)bad;
    }
}
