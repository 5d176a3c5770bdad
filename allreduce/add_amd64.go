package allreduce

import "golang.org/x/sys/cpu"

// Fixed at start-up: which assembly loops this CPU can run.
var (
	hasAVX2 = cpu.X86.HasAVX2
	hasF16C = cpu.X86.HasAVX && cpu.X86.HasF16C
)

//go:noescape
func encodeF16F16C(dst *byte, src *float32, n int)

//go:noescape
func decodeAddF16F16C(dst *float32, src *byte, n int)

//go:noescape
func decodeF16F16C(dst *float32, src *byte, n int)

// encodeF16 is F32ToF16 over a slice (NaN payloads may differ from
// F32ToF16's canonical quiet NaN).
func encodeF16(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	k := len(src) &^ 7
	if hasF16C && k > 0 {
		encodeF16F16C(&dst[0], &src[0], k)
		src, dst = src[k:], dst[2*k:]
	}
	encodeF16Generic(dst, src)
}

// decodeF16 adds or copies fp16 values into dst.
func decodeF16(dst []float32, src []byte, reduce bool) {
	src = src[:2*len(dst)]
	k := len(dst) &^ 7
	if hasF16C && k > 0 {
		if reduce {
			decodeAddF16F16C(&dst[0], &src[0], k)
		} else {
			decodeF16F16C(&dst[0], &src[0], k)
		}
		dst, src = dst[k:], src[2*k:]
	}
	decodeF16Generic(dst, src, reduce)
}

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
