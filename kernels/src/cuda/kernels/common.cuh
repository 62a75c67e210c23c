// Shared by every kernel source: prepended by the backend before NVRTC compiles a file, so the
// kernels need no CUDA header (NVRTC ships none; the device machine may have none either).
//
// bf16 is carried as its 16 raw bits: widening is a shift, narrowing rounds to nearest even, as
// PyTorch's and the `half` crate's conversions do.
typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;

#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

__device__ __forceinline__ float bf16_to_f32(bf16 x) {
    return __uint_as_float(((u32)x) << 16);
}

__device__ __forceinline__ bf16 f32_to_bf16(float f) {
    u32 bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return (bf16)((bits >> 16) | 0x40u);  // NaN stays NaN (quiet)
    }
    u32 rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (bf16)((bits + rounding) >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a block of up to 1024 threads; every thread gets the result. `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// The shared prompt a training token also attends to (attention.cu, attention_tc.cu): keys
// [a, z) of its row, besides its own segment's keys [start, i]. `shared_start`/`shared_end`
// [B·T] are null unless the layout shares prompts; a window that is empty or does not end by
// `start` is none (a = z = 0), as the CPU's `attention_forward_shared` reads them.
__device__ __forceinline__ void shared_window(const u32* shared_start, const u32* shared_end, long long at,
                                              int start, int& a, int& z) {
    a = 0;
    z = 0;
    if (shared_start != 0) {
        int sa = (int)shared_start[at], sz = (int)shared_end[at];
        if (sa < sz && sz <= start) {
            a = sa;
            z = sz;
        }
    }
}
