// AdamW over the flat parameter layout (f32 master weights and moments, bf16 copy for the
// GEMMs) and the global gradient norm. Shape legend: n = floats in the range updated.

// One AdamW step on a range of tensors that share a weight-decay flag. `decay` = 1 − lr·wd or 1;
// `step_size` = lr / (1 − β1ᵗ); `bias2_sqrt` = √(1 − β2ᵗ). Same arithmetic order as the CPU twin.
extern "C" __global__ void adamw_step(float* p, bf16* p_bf16, float* m, float* v, const float* g, long long n,
                                      float decay, float beta1, float beta2, float step_size, float bias2_sqrt,
                                      float eps) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i];
    float pi = p[i] * decay;
    float mi = beta1 * m[i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    pi -= step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    p_bf16[i] = f32_to_bf16(pi);
}

// partials[block] = Σ g² over the block's grid-stride share, in f64. The host adds the partials
// in order, so the norm is deterministic.
extern "C" __global__ void grad_norm_partials(double* partials, const float* g, long long n) {
    __shared__ double s[32];
    double acc = 0.0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        double x = (double)g[i];
        acc += x * x;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    if (lane == 0) s[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < warps; w++) t += s[w];
        partials[blockIdx.x] = t;
    }
}
