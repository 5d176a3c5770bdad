//go:build amd64

package kernels

import "golang.org/x/sys/cpu"

//go:generate sh -c "python3 gen_asm.py > sgemm_amd64.s"

// sgemmKernelAVX512 is the 12×32 AVX-512 micro-kernel (sgemm_amd64.s).
//
//go:noescape
func sgemmKernelAVX512(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// sgemmKernelAVX512R8 and sgemmKernelAVX512R4 are its 8- and 4-row edge
// variants (Ã still packed 12 wide).
//
//go:noescape
func sgemmKernelAVX512R8(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

//go:noescape
func sgemmKernelAVX512R4(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

// sgemmKernelAVX2 is the 6×16 AVX2/FMA micro-kernel (sgemm_amd64.s).
//
//go:noescape
func sgemmKernelAVX2(k int, a, b *float32, ldb int, c *float32, ldc int, alpha, beta float32)

var (
	avx512Kernel = &microKernel{name: PathAVX512, mr: 12, nr: 32, mc: 96, kc: 512, nc: 4096, fn: sgemmKernelAVX512,
		rows: map[int]kernelFunc{4: sgemmKernelAVX512R4, 8: sgemmKernelAVX512R8}, packBT: packBTransAVX512}
	avx2Kernel = &microKernel{name: PathAVX2, mr: 6, nr: 16, mc: 96, kc: 512, nc: 4096, fn: sgemmKernelAVX2}
)

// supportedKernels lists the micro-kernels this CPU and OS can run, best first.
func supportedKernels() []*microKernel {
	var ks []*microKernel
	if cpu.X86.HasAVX512F {
		ks = append(ks, avx512Kernel)
	}
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ks = append(ks, avx2Kernel)
	}
	return append(ks, genericKernel)
}

// packBTransAVX512 packs one full 32-column B̃ micro-panel from a
// transposed B, kc a multiple of 16 (sgemm_amd64.s): dst[l·32+c] = src[c·ld+l].
//
//go:noescape
func packBTransAVX512(dst, src *float32, ld, kc int)
