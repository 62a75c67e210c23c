//! Strided matrix views and the one GEMM entry point of the CPU backend (the `gemm` crate, which
//! picks AVX-512/AVX2/NEON kernels at run time and threads through rayon).

use std::marker::PhantomData;

use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major [rows, cols] matrix starting at `data[0]` with rows `row_stride` apart.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self::strided(data, rows, cols, row_stride, 1)
    }

    /// The transpose of a row-major [cols, rows] matrix whose rows are `row_stride` apart.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        Self::strided(data, rows, cols, 1, row_stride)
    }

    fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        let needed = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * row_stride + (cols - 1) * col_stride + 1
        };
        assert!(
            needed <= data.len(),
            "matrix view [{rows}x{cols}] needs {needed} floats, slice has {}",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// A mutable row-major matrix view. It holds a raw pointer so that tasks can write disjoint
/// column blocks of one buffer (attention heads) without overlapping `&mut` slices.
pub struct MatMut<'a> {
    data: *mut f32,
    rows: usize,
    cols: usize,
    row_stride: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// A row-major [rows, cols] matrix starting at `data[0]` with rows `row_stride` apart.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let needed = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * row_stride + cols
        };
        assert!(
            needed <= data.len(),
            "matrix view [{rows}x{cols}] needs {needed} floats, slice has {}",
            data.len()
        );
        MatMut {
            data: data.as_mut_ptr(),
            rows,
            cols,
            row_stride,
            _borrow: PhantomData,
        }
    }

    /// A view from a raw pointer.
    ///
    /// # Safety
    /// `data` must be valid for writes at every element of the view for `'a`, and no other code
    /// may access those elements meanwhile.
    pub unsafe fn from_raw(data: *mut f32, rows: usize, cols: usize, row_stride: usize) -> Self {
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            _borrow: PhantomData,
        }
    }
}

/// Whether a GEMM may use every rayon thread (big products) or must stay on the calling thread
/// (when the caller already runs one product per thread, as attention does per head).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// Use all rayon threads.
    All,
    /// Run on the calling thread.
    One,
}

/// `dst = scale · a · b` (or `dst += scale · a · b` when `accumulate`).
pub fn gemm(
    dst: MatMut<'_>,
    a: Mat<'_>,
    b: Mat<'_>,
    scale: f32,
    accumulate: bool,
    threads: Threads,
) {
    assert_eq!(a.rows, dst.rows, "gemm: rows of a and dst differ");
    assert_eq!(b.cols, dst.cols, "gemm: cols of b and dst differ");
    assert_eq!(a.cols, b.rows, "gemm: inner dimensions differ");
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            for i in 0..dst.rows {
                // SAFETY: row i of the view is inside the region the view was made for.
                unsafe {
                    std::slice::from_raw_parts_mut(dst.data.add(i * dst.row_stride), dst.cols)
                        .fill(0.0)
                };
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::All if rayon::current_num_threads() > 1 => {
            Parallelism::Rayon(rayon::current_num_threads())
        }
        _ => Parallelism::None,
    };
    // SAFETY: every view was bounds-checked against its slice when it was made, the shapes agree
    // (asserted above), and `dst` is an exclusive borrow that aliases neither input.
    unsafe {
        gemm::gemm(
            dst.rows,
            dst.cols,
            a.cols,
            dst.data,
            1,
            dst.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_for_all_stride_kinds() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect(); // [n, k]
        let mut dst = vec![1.0f32; m * n];
        gemm(
            MatMut::rows(&mut dst, m, n, n),
            Mat::rows(&a, m, k, k),
            Mat::transposed(&bt, k, n, k),
            2.0,
            true,
            Threads::One,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 =
                    1.0 + 2.0 * (0..k).map(|p| a[i * k + p] * bt[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
