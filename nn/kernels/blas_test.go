package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gorgonia.org/tensor"
)

var _ tensor.BLAS = BLAS{}

// TestBLASMatchesGonum compares BLAS.Sgemm with gonum's on all transposes.
func TestBLASMatchesGonum(t *testing.T) {
	p := NewPool(2)
	defer p.Close()
	ours, ref := NewBLAS(p), gonum.Implementation{}
	rng := rand.New(rand.NewPCG(1, 3))
	for _, tA := range []blas.Transpose{blas.NoTrans, blas.Trans, blas.ConjTrans} {
		for _, tB := range []blas.Transpose{blas.NoTrans, blas.Trans} {
			g := gemmCase{transA: tA != blas.NoTrans, transB: tB != blas.NoTrans, m: 37, n: 45, k: 29, padA: 1, padC: 2, alpha: 0.5, beta: -1}
			o := g.operands(rng)
			got, want := append([]float32(nil), o.c0...), append([]float32(nil), o.c0...)
			ours.Sgemm(tA, tB, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, got, o.ldc)
			ref.Sgemm(tA, tB, g.m, g.n, g.k, g.alpha, o.a, o.lda, o.b, o.ldb, g.beta, want, o.ldc)
			assertClose(t, got, want, 1e-4)
		}
	}
}

// TestTensorMatMulUsesBLAS checks tensor.MatMul on float32 Dense gives the
// same result after tensor.Use(NewBLAS(p)), including transposed views.
func TestTensorMatMulUsesBLAS(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 4))
	a := tensor.New(tensor.WithShape(33, 70), tensor.WithBacking(randSlice(rng, 33*70)))
	b := tensor.New(tensor.WithShape(70, 41), tensor.WithBacking(randSlice(rng, 70*41)))
	bt := tensor.New(tensor.WithShape(41, 70), tensor.WithBacking(randSlice(rng, 41*70)))
	mul := func(t *testing.T, x, y *tensor.Dense, transY bool) []float32 {
		t.Helper()
		y = y.Clone().(*tensor.Dense)
		if transY {
			if err := y.T(); err != nil {
				t.Fatal(err)
			}
		}
		out, err := tensor.MatMul(x, y)
		if err != nil {
			t.Fatal(err)
		}
		return append([]float32(nil), out.Data().([]float32)...)
	}
	prev := tensor.WhichBLAS()
	defer tensor.Use(prev)
	tensor.Use(gonum.Implementation{})
	want, wantT := mul(t, a, b, false), mul(t, a, bt, true)

	p := NewPool(2)
	defer p.Close()
	var counted countingBLAS
	counted.BLAS = NewBLAS(p)
	tensor.Use(&counted)
	got, gotT := mul(t, a, b, false), mul(t, a, bt, true)
	if counted.calls != 2 {
		t.Fatalf("tensor.MatMul made %d Sgemm calls through our BLAS, want 2", counted.calls)
	}
	assertClose(t, got, want, 1e-4)
	assertClose(t, gotT, wantT, 1e-4)
}

// countingBLAS counts Sgemm calls to prove tensor routes through us.
type countingBLAS struct {
	BLAS
	calls int
}

func (c *countingBLAS) Sgemm(tA, tB blas.Transpose, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cm []float32, ldc int) {
	c.calls++
	c.BLAS.Sgemm(tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, cm, ldc)
}

func assertClose(t *testing.T, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("len %d, want %d", len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(float64(got[i] - want[i])); !(d <= tol*(1+math.Abs(float64(want[i])))) {
			t.Fatalf("[%d] = %g, want %g", i, got[i], want[i])
		}
	}
}
