package kernels

// Sgemm computes C = alpha·op(A)·op(B) + beta·C on row-major matrices, where
// op(A) is m×k (A is k×m when transA), op(B) is k×n (B is n×k when transB)
// and C is m×n with leading dimension ldc. beta = 0 overwrites C (NaNs in C
// do not propagate). The call blocks until C is complete.
func (p *Pool) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	p.ParallelFor(m, func(lo, hi int) {
		sgemmNaive(transA, transB, lo, hi, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
	})
}

// sgemmNaive is the reference: rows [lo,hi) of C.
func sgemmNaive(transA, transB bool, lo, hi, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := lo; i < hi; i++ {
		crow := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(crow)
		} else if beta != 1 {
			for j := range crow {
				crow[j] *= beta
			}
		}
		for l := 0; l < k; l++ {
			var av float32
			if transA {
				av = a[l*lda+i]
			} else {
				av = a[i*lda+l]
			}
			av *= alpha
			if av == 0 {
				continue
			}
			if transB {
				for j := range crow {
					crow[j] += av * b[j*ldb+l]
				}
			} else {
				brow := b[l*ldb : l*ldb+n]
				for j, bv := range brow {
					crow[j] += av * bv
				}
			}
		}
	}
}
