//go:build !amd64

package allreduce

func addF32(dst, src []float32) { addF32Generic(dst, src) }
