package kernels

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"unsafe"
)

// microKernel is one register-blocked inner kernel plus the cache blocking
// that suits it. fn computes the full mr×nr tile
//
//	C[0:mr, 0:nr] = alpha·Ã·B̃ + beta·C   (beta == 0: C is not read)
//
// where Ã is a packed micro-panel (k steps of mr values) and B̃ a packed
// micro-panel (k steps of nr values); C has leading dimension ldc.
type microKernel struct {
	name       string
	mr, nr     int
	mc, kc, nc int // cache blocks: Ã block mc×kc (L2), B̃ block kc×nc (L3), B̃ micro-panel kc×nr (L1)
	fn         kernelFunc

	// rows[r], where set, computes only the first r rows of a tile (Ã still
	// packed mr wide): edge tiles of r rows waste no FMAs on padding rows.
	rows map[int]kernelFunc

	// packBT, if set, packs a full nr-wide micro-panel of a transposed B for
	// a multiple of 16 k steps (see packB).
	packBT func(dst, src *float32, ld, kc int)
}

type kernelFunc func(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// edge returns the kernel for an edge tile of r < mr rows: the smallest
// row-variant with at least r rows (exact when it has r), else fn.
func (k *microKernel) edge(r int) (fn kernelFunc, exact bool) {
	best := k.mr
	for rr := range k.rows {
		if rr >= r && rr < best {
			best = rr
		}
	}
	if best == k.mr {
		return k.fn, false
	}
	return k.rows[best], best == r
}

// Kernel path names accepted by RINGTRAIN_KERNELS and NewPoolWithKernel.
const (
	PathGeneric = "generic"
	PathAVX2    = "avx2"
	PathAVX512  = "avx512"
)

// KernelEnv names the environment variable that forces a kernel path.
const KernelEnv = "RINGTRAIN_KERNELS"

var genericKernel = &microKernel{name: PathGeneric, mr: 4, nr: 4, mc: 128, kc: 256, nc: 1024, fn: sgemmKernelGeneric}

// The path chosen at init from the CPU and RINGTRAIN_KERNELS; never written afterwards.
var defaultKernel, defaultKernelErr = chooseKernel(os.Getenv(KernelEnv), supportedKernels())

func init() {
	if defaultKernelErr != nil {
		slog.Warn("nn/kernels: forced kernel path unavailable, falling back", "env", KernelEnv, "path", defaultKernel.name, "err", defaultKernelErr)
	}
}

// ErrKernelUnsupported reports a kernel path this CPU (or build) cannot run.
var ErrKernelUnsupported = errors.New("kernel path not supported on this CPU")

// chooseKernel picks want from avail (best first); "" or "auto" picks the
// best. An unknown or unsupported name falls back to the best and says why.
func chooseKernel(want string, avail []*microKernel) (*microKernel, error) {
	want = strings.ToLower(strings.TrimSpace(want))
	if want == "" || want == "auto" {
		return avail[0], nil
	}
	for _, k := range avail {
		if k.name == want {
			return k, nil
		}
	}
	switch want {
	case PathGeneric, PathAVX2, PathAVX512:
		return avail[0], fmt.Errorf("%s=%q: %w (have %s)", KernelEnv, want, ErrKernelUnsupported, kernelNames(avail))
	}
	return avail[0], fmt.Errorf("%s=%q: unknown path (want %s|%s|%s)", KernelEnv, want, PathGeneric, PathAVX2, PathAVX512)
}

func kernelNames(ks []*microKernel) string {
	names := make([]string, len(ks))
	for i, k := range ks {
		names[i] = k.name
	}
	return strings.Join(names, ",")
}

// KernelPath reports the SGEMM micro-kernel path chosen at init
// ("avx512", "avx2" or "generic").
func KernelPath() string { return defaultKernel.name }

// KernelPaths lists the paths this CPU can run, best first.
func KernelPaths() []string {
	ks := supportedKernels()
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.name
	}
	return out
}

// sgemmKernelGeneric is the portable 4×4 micro-kernel. It runs as two 2×4
// halves so the eight accumulators plus operands fit in 16 registers
// (amd64's X0–X15) without spilling; B's rows are re-read from L1.
func sgemmKernelGeneric(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32) {
	as := unsafe.Slice(a, 4*k)
	bs := unsafe.Slice(b, (k-1)*ldb+4)
	cs := unsafe.Slice(c, 3*ldc+4)
	for half := 0; half < 2; half++ {
		var c00, c01, c02, c03, c10, c11, c12, c13 float32
		for l := 0; l < k; l++ {
			ap := as[4*l+2*half : 4*l+2*half+2 : 4*l+2*half+2]
			bp := bs[l*ldb : l*ldb+4 : l*ldb+4]
			a0, a1 := ap[0], ap[1]
			b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
			c00 += a0 * b0
			c01 += a0 * b1
			c02 += a0 * b2
			c03 += a0 * b3
			c10 += a1 * b0
			c11 += a1 * b1
			c12 += a1 * b2
			c13 += a1 * b3
		}
		storeRow4(cs[2*half*ldc:], c00, c01, c02, c03, alpha, beta)
		storeRow4(cs[(2*half+1)*ldc:], c10, c11, c12, c13, alpha, beta)
	}
}

// storeRow4 writes row[0:4] = alpha·v + beta·row (beta = 0: row is not read).
func storeRow4(row []float32, v0, v1, v2, v3, alpha, beta float32) {
	row = row[:4:4]
	if beta == 0 {
		row[0], row[1], row[2], row[3] = alpha*v0, alpha*v1, alpha*v2, alpha*v3
		return
	}
	row[0] = alpha*v0 + beta*row[0]
	row[1] = alpha*v1 + beta*row[1]
	row[2] = alpha*v2 + beta*row[2]
	row[3] = alpha*v3 + beta*row[3]
}
