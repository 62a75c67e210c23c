// SwiGLU: h = silu(gate) ⊙ up. Shape legend: N = tokens, I = MLP width; gu[N, 2I] holds gate|up.

// h[N,I] (the bf16 operand of down_proj).
extern "C" __global__ void swiglu_forward(bf16* h, const float* gu, int n, int i_dim) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * i_dim) return;
    long long row = i / i_dim, k = i % i_dim;
    float g = gu[row * 2 * i_dim + k], u = gu[row * 2 * i_dim + i_dim + k];
    h[i] = f32_to_bf16(g / (1.0f + expf(-g)) * u);
}

// dgu += ∂/∂(gate|up).
extern "C" __global__ void swiglu_backward(float* dgu, const float* dh, const float* gu, int n, int i_dim) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)n * i_dim) return;
    long long row = i / i_dim, k = i % i_dim;
    long long at = row * 2 * i_dim + k;
    float g = gu[at], u = gu[at + i_dim];
    float sig = 1.0f / (1.0f + expf(-g));
    dgu[at] += dh[i] * u * sig * (1.0f + g * (1.0f - sig));
    dgu[at + i_dim] += dh[i] * g * sig;
}
