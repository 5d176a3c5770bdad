package allreduce

import "golang.org/x/sys/cpu"

// hasAVX2 is fixed at start-up: whether addF32 may use the assembly loop.
var hasAVX2 = cpu.X86.HasAVX2

//go:noescape
func addF32AVX2(dst, src *float32, n int)

// addF32 does dst[i] += src[i] (len(src) >= len(dst)).
func addF32(dst, src []float32) {
	if len(dst) == 0 {
		return
	}
	src = src[:len(dst)]
	if hasAVX2 {
		addF32AVX2(&dst[0], &src[0], len(dst))
		return
	}
	addF32Generic(dst, src)
}
