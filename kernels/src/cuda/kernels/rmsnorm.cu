// RMSNorm forward and backward, a block per row. Shape legend: N = tokens, C = channels.

// out[n,:] = weight ⊙ inp[n,:] · rstd[n], rstd[n] = 1/sqrt(mean(inp²) + eps). The output is the
// bf16 operand of the next projection.
extern "C" __global__ void rmsnorm_forward(bf16* out, float* rstd, const float* inp, const bf16* weight,
                                           int n, int c, float eps) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    if (row >= n) return;
    const float* x = inp + (long long)row * c;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) ss += x[i] * x[i];
    ss = block_sum(ss, scratch);
    float s = rsqrtf(ss / c + eps);
    if (threadIdx.x == 0) rstd[row] = s;
    bf16* o = out + (long long)row * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) o[i] = f32_to_bf16(bf16_to_f32(weight[i]) * (x[i] * s));
}

// dinp[n,:] += s·(w⊙go − xhat·mean(w⊙go⊙xhat)), xhat = x·s.
extern "C" __global__ void rmsnorm_backward(float* dinp, const float* dout, const float* inp, const bf16* weight,
                                            const float* rstd, int n, int c) {
    __shared__ float scratch[32];
    int row = blockIdx.x;
    if (row >= n) return;
    const float* x = inp + (long long)row * c;
    const float* go = dout + (long long)row * c;
    float s = rstd[row];
    float dot = 0.0f;
    for (int i = threadIdx.x; i < c; i += blockDim.x) dot += go[i] * bf16_to_f32(weight[i]) * x[i] * s;
    dot = block_sum(dot, scratch) / c;
    float* d = dinp + (long long)row * c;
    for (int i = threadIdx.x; i < c; i += blockDim.x) d[i] += s * (go[i] * bf16_to_f32(weight[i]) - x[i] * s * dot);
}

// dweight is a column sum of dout ⊙ inp · rstd: `column_partials` / `column_reduce` in
// elementwise.cu.
