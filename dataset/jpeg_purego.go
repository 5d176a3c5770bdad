//go:build !(cgo && libjpeg)

package dataset

import "errors"

// haveLibjpeg is false: JPEGs go through internal/jpeg, image/jpeg's
// decoder forked with DCT-domain scaling (build with -tags libjpeg and
// libjpeg62-turbo-dev for the faster cgo path).
const haveLibjpeg = false

var errNoLibjpeg = errors.New("built without libjpeg")

func libjpegInfo(data []byte) (w, h, comps int, err error) { return 0, 0, 0, errNoLibjpeg }

func libjpegDecode(data []byte, denom int, gray bool, buf []uint8) ([]uint8, int, int, int, error) {
	return buf, 0, 0, 0, errNoLibjpeg
}
