//go:build !amd64

package kernels

// supportedKernels lists the micro-kernels this build can run: only the
// portable one off amd64.
func supportedKernels() []*microKernel { return []*microKernel{genericKernel} }
