package kernels

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BLAS is a gonum-style BLAS implementation (the interface
// gorgonia.org/tensor.Use expects) whose Sgemm runs on a Pool; every other
// routine is gonum's pure-Go one. Install it once at start-up with
// tensor.Use(kernels.NewBLAS(pool)); the pool must outlive its use.
type BLAS struct {
	gonum.Implementation
	pool *Pool
}

// NewBLAS returns a BLAS whose Sgemm uses p (nil: single-threaded).
func NewBLAS(p *Pool) BLAS { return BLAS{pool: p} }

// Sgemm computes C = alpha·op(A)·op(B) + beta·C, row-major, as blas.Float32
// specifies; it panics on bad arguments as gonum does.
func (b BLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, bm []float32, ldb int, beta float32, c []float32, ldc int) {
	b.pool.Sgemm(transposed(tA), transposed(tB), m, n, k, alpha, a, lda, bm, ldb, beta, c, ldc)
}

var _ blas.Float32 = BLAS{}

func transposed(t blas.Transpose) bool {
	switch t {
	case blas.NoTrans:
		return false
	case blas.Trans, blas.ConjTrans:
		return true
	}
	panic("kernels: Sgemm: bad blas.Transpose " + string(rune(t)))
}
