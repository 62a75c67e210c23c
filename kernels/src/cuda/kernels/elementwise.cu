// Elementwise and column-reduction kernels: embedding, residual add, casts, bias, scaling.
// Shape legend: N = tokens, C = channels, V = vocab, OC = output channels.

// out[N,C] = wte[ids[n], :] (bf16 weights widened to the f32 residual stream).
extern "C" __global__ void embedding_forward(float* out, const u32* ids, const bf16* wte, int n, int c) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * c) return;
    long long row = i / c, col = i % c;
    out[i] = bf16_to_f32(wte[(long long)ids[row] * c + col]);
}

// dwte[id, :] += dout[n, :] for every token n with that id. The host groups the tokens by id
// (`order` lists token indices id by id, `starts[k]..starts[k+1]` are those of `unique_ids[k]`),
// so a thread owns one (id, column) and adds its tokens in order: deterministic, no atomics,
// and the same additions in the same order as the CPU twin.
extern "C" __global__ void embedding_backward(float* dwte, const float* dout, const u32* order, const u32* starts,
                                              const u32* unique_ids, int distinct, int c) {
    int k = blockIdx.x;
    int col = blockIdx.y * blockDim.x + threadIdx.x;
    if (k >= distinct || col >= c) return;
    float* w = dwte + (long long)unique_ids[k] * c + col;
    float acc = *w;
    for (u32 t = starts[k]; t < starts[k + 1]; t++) acc += dout[(long long)order[t] * c + col];
    *w = acc;
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

// Column sums in two deterministic passes (a thread per column walking all N rows would leave most
// of the GPU idle). Pass 1: partials[chunk, col] = Σ over the chunk's rows of
// a[row, col] · (b ? b[row, col] : 1) · (row_scale ? row_scale[row] : 1).
extern "C" __global__ void column_partials(float* partials, const float* a, const float* b, const float* row_scale,
                                           int n, int c, int rows_per_chunk) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    int chunk = blockIdx.y;
    if (col >= c) return;
    int r0 = chunk * rows_per_chunk, r1 = min(n, r0 + rows_per_chunk);
    float acc = 0.0f;
    for (int row = r0; row < r1; row++) {
        long long at = (long long)row * c + col;
        float v = a[at];
        if (b) v *= b[at];
        if (row_scale) v *= row_scale[row];
        acc += v;
    }
    partials[(long long)chunk * c + col] = acc;
}

// Pass 2: out[col] += Σ_chunk partials[chunk, col], chunks in order.
extern "C" __global__ void column_reduce(float* out, const float* partials, int chunks, int c) {
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= c) return;
    float acc = 0.0f;
    for (int k = 0; k < chunks; k++) acc += partials[(long long)k * c + col];
    out[col] += acc;
}
