package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
)

// ErrBadSample marks errors of one sample (corrupt, truncated or non-image
// object): a loader configured to skip bad samples counts and skips these;
// other errors (storage, credentials) stop it.
var ErrBadSample = errors.New("bad sample")

// Image size limits: a header claiming more is rejected before decoding.
const (
	maxImageSide   = 1 << 15
	maxImagePixels = 1 << 26
)

// DecodeImage decodes a JPEG or PNG (sniffed from the bytes, not the name).
// name is used in errors only. Errors wrap ErrBadSample.
func DecodeImage(data []byte, name string) (image.Image, error) {
	var (
		cfg    image.Config
		err    error
		decode func([]byte) (image.Image, error)
		kind   string
	)
	switch {
	case len(data) >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF:
		kind = "JPEG"
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
		decode = func(b []byte) (image.Image, error) { return jpeg.Decode(bytes.NewReader(b)) }
	case len(data) >= 8 && string(data[:8]) == "\x89PNG\r\n\x1a\n":
		kind = "PNG"
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
		decode = func(b []byte) (image.Image, error) { return png.Decode(bytes.NewReader(b)) }
	default:
		head := data[:min(len(data), 8)]
		return nil, fmt.Errorf("%s: not a JPEG or PNG image (%d bytes, starts with %q): %w", name, len(data), head, ErrBadSample)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: corrupt %s header: %v: %w", name, kind, err, ErrBadSample)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxImageSide || cfg.Height > maxImageSide || cfg.Width*cfg.Height > maxImagePixels {
		return nil, fmt.Errorf("%s: %s of %dx%d pixels is out of range: %w", name, kind, cfg.Width, cfg.Height, ErrBadSample)
	}
	img, err := decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: corrupt or truncated %s: %v: %w", name, kind, err, ErrBadSample)
	}
	return img, nil
}
