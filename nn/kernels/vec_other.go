//go:build !amd64

package kernels

// vecOK is false off amd64: the portable loops run everywhere.
const vecOK = false

func reluVec(y, x *float32, n int)              { panic("unreachable") }
func reluBackwardVec(dx, dy, y *float32, n int) { panic("unreachable") }
func addVec(dst, a, b *float32, n int)          { panic("unreachable") }
func sumVec(x *float32, n int) float64          { panic("unreachable") }
func sumSqDevVec(x *float32, n int, mean float64) float64 {
	panic("unreachable")
}
func normalizeVec(y, x *float32, n int, mean, invstd, gamma, beta float32) { panic("unreachable") }
func bnGradSumsVec(dy, x *float32, n int, mean, invstd float32) (sdy, sdyx float64) {
	panic("unreachable")
}
func bnInputGradVec(dx, dy, x *float32, n int, mean, invstd, k, mdy, mdyx float32) {
	panic("unreachable")
}
func sgdMomentumVec(w, grad, b *float32, n int, wd, mu, damp, lr float32, decay bool) {
	panic("unreachable")
}

func maxTapVec(best *float32, arg *int32, src *float32, n int, idx0, step int32) bool {
	panic("unreachable")
}

// unfoldVecOK is false off amd64: UnfoldTable's portable loops run.
const unfoldVecOK = false

func unfoldPermIm2col(col *float32, ld int, img *float32, idx *int32, ohw, taps int, planeMask, tail uint64, planes, plane int) {
	panic("unreachable")
}
func unfoldPermCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int, planeMask, rowMask uint64, planes, plane int) {
	panic("unreachable")
}
func stride2CopyAVX512(dst, src *float32, n int) { panic("unreachable") }
func unfoldGatherIm2col(col *float32, ld int, buf *float32, idx *int32, ohw, taps int) {
	panic("unreachable")
}
func unfoldGatherCol2im(col *float32, ld int, img *float32, inv *int32, taps, chunks int) {
	panic("unreachable")
}
func stride2CopyAVX2(dst, src *float32, n int)  { panic("unreachable") }
func stride2AddAVX2(dst, src *float32, n int)   { panic("unreachable") }
func stride2AddAVX512(dst, src *float32, n int) { panic("unreachable") }
