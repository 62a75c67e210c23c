// Rotary position embedding in the Hugging Face rotate-half layout: pair i of a head is
// (x[i], x[i + HALF]). Shape legend: N = rows, HALF = head size / 2.

// Rotates `heads` heads starting at column `col` of each row (row stride `stride`) by the angle of
// that row's position; `inverse` rotates back, which is RoPE's backward pass. cos/sin: [P, HALF].
extern "C" __global__ void rope_apply(float* x, const u32* positions, const float* cos_table,
                                      const float* sin_table, int n, int stride, int col, int heads,
                                      int half, int inverse) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long per_row = (long long)heads * half;
    if (i >= (long long)n * per_row) return;
    long long row = i / per_row;
    int rest = (int)(i % per_row), h = rest / half, k = rest % half;
    long long pos = positions[row];
    float c = cos_table[pos * half + k];
    float s = sin_table[pos * half + k];
    if (inverse) s = -s;
    float* head = x + row * stride + col + (long long)h * 2 * half;
    float a = head[k], b = head[k + half];
    head[k] = a * c - b * s;
    head[k + half] = b * c + a * s;
}
