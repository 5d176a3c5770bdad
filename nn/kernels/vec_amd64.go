//go:build amd64

package kernels

import "golang.org/x/sys/cpu"

// vecOK selects the AVX2 loops of vec_amd64.s for the elementwise and
// batch-norm kernels: on CPUs with AVX2 and FMA, unless RINGTRAIN_KERNELS
// forced the generic path (which then covers these loops too).
var vecOK = cpu.X86.HasAVX2 && cpu.X86.HasFMA && defaultKernel != genericKernel

// The AVX2 loops; n is a multiple of 8 and every slice holds n elements.

//go:noescape
func reluVec(y, x *float32, n int)

//go:noescape
func reluBackwardVec(dx, dy, y *float32, n int)

//go:noescape
func addVec(dst, a, b *float32, n int)

//go:noescape
func sumVec(x *float32, n int) float64

//go:noescape
func sumSqDevVec(x *float32, n int, mean float64) float64

//go:noescape
func normalizeVec(y, x *float32, n int, mean, invstd, gamma, beta float32)

//go:noescape
func bnGradSumsVec(dy, x *float32, n int, mean, invstd float32) (sdy, sdyx float64)

//go:noescape
func bnInputGradVec(dx, dy, x *float32, n int, mean, invstd, k, mdy, mdyx float32)

//go:noescape
func sgdMomentumVec(w, grad, b *float32, n int, wd, mu, damp, lr float32, decay bool)

// dst[i] = src[2i] (reads src[0:2n]) and dst[2i] += src[i] (odd entries
// of dst[0:2n] untouched); n is a multiple of 8.
//
// UnfoldTable's AVX2 gathers (VGATHERDPS): see vec_amd64.s.
//
//go:noescape
func unfoldGatherIm2col(col *float32, ld int, buf *float32, idx *int32, ohw, taps int)

//go:noescape
func unfoldGatherCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int)

//go:noescape
func stride2CopyAVX2(dst, src *float32, n int)

//go:noescape
func stride2AddAVX2(dst, src *float32, n int)

//go:noescape
func maxTapVec(best *float32, arg *int32, src *float32, n int, idx0, step int32) (nan bool)

// unfoldVecOK selects the AVX-512 permute loops of unfold_amd64.s for
// UnfoldTable: only where the AVX-512 GEMM path was chosen, so
// RINGTRAIN_KERNELS=avx2 or generic covers the portable loops.
var unfoldVecOK = defaultKernel == avx512Kernel

//go:noescape
func unfoldPermIm2col(col *float32, ld int, img *float32, idx *int32, ohw, taps int, planeMask, tail uint64, planes, plane int)

//go:noescape
func unfoldPermCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int, planeMask, rowMask uint64, planes, plane int)

//go:noescape
func stride2CopyAVX512(dst, src *float32, n int)

//go:noescape
func stride2AddAVX512(dst, src *float32, n int)
