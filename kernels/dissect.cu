// Network Dissection's counting pass (src/dataset/dissect.rs, Bau et al. 2017) on the device:
// the maps a batch left on the device are thresholded, bilinearly upsampled to the label
// resolution and intersected with the label images there, adding into device-resident counts;
// only the counts come back, once, at the end of the pass.
//
// Names ({op}_{variant}_f32, see common.cuh):
//   dissect_count   one block per (unit, image): skip the unit if its map never exceeds its
//                   threshold; else the threads stride over the label pixels, a pixel is "on"
//                   where one of its four taps exceeds the threshold and the upsampled value
//                   does (the test of src/imageio/colormap.rs `upsample_bilinear_above`, in the
//                   same f32 operations in the same order, through _rn intrinsics so nvcc fuses
//                   no multiply-add); an on pixel adds 1 to inter[unit][label] for its label in
//                   each label plane; the block's count of on pixels goes to
//                   unit_area[unit][category] for each category the image is annotated in and
//                   to inter[unit][label] for each whole-image label.
//
// Counts are u64 (atomicAdd on unsigned long long): integer atomics give the same sums in any
// order, and a u64 cannot overflow (a dataset would need 2^64 label pixels), where a u32 would
// after 4.3e9 pixels of one unit, i.e. ~340k Broden images at 112x112.
//
// Layout: maps NHWC [n, h, w, units] (the engine's); labels the batch's planes concatenated,
// u32 label numbers (0: none); the bilinear taps come from the host's `taps` (so the indices
// and weights are the host's bits): tap_i [2 * rows] (i0, i1), tap_w [2 * rows] (w0, w1), the
// rows of every label resolution of the batch concatenated; desc per image, DISSECT_DESC long
// longs: label offset, planes, sh, sw, y-tap row, x-tap row, scalar offset, scalars.
#include "common.cuh"

// Threads of a (unit, image) block: label images are thousands of pixels (112x112 in Broden),
// 8 warps keep a block busy on one without idling on the (mostly skipped) small ones.
#define DISSECT_THREADS 256
// long longs per image in desc (src/backend/cuda/dissect.rs `DESC`)
#define DISSECT_DESC 8

extern "C" __global__ void dissect_count_f32(const float* maps, const float* thresholds, const long long* desc,
                                             const unsigned* labels, const int* tap_i, const float* tap_w,
                                             const unsigned* scalars, const unsigned* annotated,
                                             unsigned long long* inter, unsigned long long* unit_area,
                                             long long n, long long units, long long h, long long w,
                                             long long n_labels, long long categories) {
    const idx_t u = blockIdx.x, img = blockIdx.y;
    if (u >= units || img >= n) return;
    __shared__ unsigned smem_on;
    const float t = thresholds[u];
    const float* m = maps + img * h * w * units + u;  // m[(y * w + x) * units]
    int hot = 0;
    for (idx_t i = threadIdx.x; i < h * w; i += blockDim.x) hot |= m[i * units] > t;
    if (threadIdx.x == 0) smem_on = 0;
    if (!__syncthreads_or(hot)) return;  // the mask is empty (the host skips it too)

    const long long* d = desc + img * DISSECT_DESC;
    const idx_t label_off = d[0], planes = d[1], ytap = d[4], xtap = d[5];
    const int sh = (int)d[2], sw = (int)d[3];
    const int pixels = sh * sw;
    unsigned on = 0;
    for (int p = threadIdx.x; p < pixels; p += blockDim.x) {
        const int oy = p / sw, ox = p - oy * sw;
        const idx_t y0 = tap_i[2 * (ytap + oy)], y1 = tap_i[2 * (ytap + oy) + 1];
        const idx_t x0 = tap_i[2 * (xtap + ox)], x1 = tap_i[2 * (xtap + ox) + 1];
        const float wy0 = tap_w[2 * (ytap + oy)], wy1 = tap_w[2 * (ytap + oy) + 1];
        const float wx0 = tap_w[2 * (xtap + ox)], wx1 = tap_w[2 * (xtap + ox) + 1];
        const float a = m[(y0 * w + x0) * units], b = m[(y0 * w + x1) * units];
        const float c = m[(y1 * w + x0) * units], e = m[(y1 * w + x1) * units];
        if (!(a > t || b > t || c > t || e > t)) continue;
        // wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * e), rounded after each operation
        const float top = __fadd_rn(__fmul_rn(wx0, a), __fmul_rn(wx1, b));
        const float bot = __fadd_rn(__fmul_rn(wx0, c), __fmul_rn(wx1, e));
        if (!(__fadd_rn(__fmul_rn(wy0, top), __fmul_rn(wy1, bot)) > t)) continue;
        ++on;
        for (idx_t k = 0; k < planes; ++k) {
            const unsigned l = labels[label_off + k * pixels + p];
            if (l != 0 && l < n_labels) atomicAdd(&inter[u * n_labels + l], 1ull);
        }
    }
    if (on) atomicAdd(&smem_on, on);
    __syncthreads();
    if (threadIdx.x != 0 || smem_on == 0) return;
    const unsigned long long total = smem_on;
    for (idx_t k = 0; k < categories; ++k)
        if (annotated[img * categories + k]) atomicAdd(&unit_area[u * categories + k], total);
    for (idx_t k = 0; k < d[7]; ++k) {
        const unsigned s = scalars[d[6] + k];
        if (s < n_labels) atomicAdd(&inter[u * n_labels + s], total);
    }
}

DV_REGISTER_KERNELS(dissect_count_f32)
