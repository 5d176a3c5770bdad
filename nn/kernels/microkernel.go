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
	fn         func(k int, a, b, c *float32, ldc int, alpha, beta float32)
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

// sgemmKernelGeneric is the portable 4×4 micro-kernel: sixteen scalar
// accumulators the compiler keeps in registers.
func sgemmKernelGeneric(k int, a, b, c *float32, ldc int, alpha, beta float32) {
	as := unsafe.Slice(a, 4*k)
	bs := unsafe.Slice(b, 4*k)
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 float32
	for l := 0; l < k; l++ {
		ap := as[4*l : 4*l+4 : 4*l+4]
		bp := bs[4*l : 4*l+4 : 4*l+4]
		a0, a1, a2, a3 := ap[0], ap[1], ap[2], ap[3]
		b0, b1, b2, b3 := bp[0], bp[1], bp[2], bp[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	cs := unsafe.Slice(c, 3*ldc+4)
	acc := [16]float32{c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33}
	for i := 0; i < 4; i++ {
		row := cs[i*ldc : i*ldc+4 : i*ldc+4]
		if beta == 0 {
			for j := range row {
				row[j] = alpha * acc[4*i+j]
			}
		} else {
			for j := range row {
				row[j] = alpha*acc[4*i+j] + beta*row[j]
			}
		}
	}
}
