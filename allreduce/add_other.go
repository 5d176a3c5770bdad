//go:build !amd64

package allreduce

func addF32(dst, src []float32) { addF32Generic(dst, src) }

func encodeF16(dst []byte, src []float32) { encodeF16Generic(dst, src) }

func decodeF16(dst []float32, src []byte, reduce bool) { decodeF16Generic(dst, src, reduce) }
