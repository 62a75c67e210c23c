// Elementwise and column-reduction kernels: embedding, residual add, casts, bias, scaling.
// Shape legend: N = tokens, C = channels, V = vocab, OC = output channels.

// out[N,C] = wte[ids[n], :] (bf16 weights widened to the f32 residual stream).
extern "C" __global__ void embedding_forward(float* out, const u32* ids, const bf16* wte, int n, int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    long long row = i / c, col = i % c;
    out[i] = bf16_to_f32(wte[(long long)ids[row] * c + col]);
}

// dwte[ids[n], col] += dout[n, col]. One thread owns a column and walks the tokens in order, so
// repeated ids add up deterministically, with no atomics.
extern "C" __global__ void embedding_backward(float* dwte, const float* dout, const u32* ids, int n, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= c) return;
    for (int row = 0; row < n; row++) {
        dwte[(long long)ids[row] * c + col] += dout[(long long)row * c + col];
    }
}

// out = a + b (the residual add after a projection); out may alias a.
extern "C" __global__ void residual_forward(float* out, const float* a, const float* b, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}

// out += a (the residual stream's gradient flowing around a branch).
extern "C" __global__ void accumulate(float* out, const float* a, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] += a[i];
}

extern "C" __global__ void cast_f32_bf16(bf16* out, const float* in, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f32_to_bf16(in[i]);
}

extern "C" __global__ void cast_bf16_f32(float* out, const bf16* in, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = bf16_to_f32(in[i]);
}

extern "C" __global__ void scale_f32(float* x, float s, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

// out[N,OC] += bias[OC].
extern "C" __global__ void add_bias(float* out, const bf16* bias, int n, int oc) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * oc) return;
    out[i] += bf16_to_f32(bias[i % oc]);
}

// dbias[OC] += Σₙ dout[n, :]: a thread per column, rows in order (deterministic).
extern "C" __global__ void column_sum(float* dbias, const float* dout, int n, int oc) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= oc) return;
    float acc = 0.0f;
    for (int row = 0; row < n; row++) acc += dout[(long long)row * oc + col];
    dbias[col] += acc;
}
