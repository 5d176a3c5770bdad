package jpeg

import (
	"bytes"
	"fmt"
	"image"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

// mcuOf is the MCU of data's frame at 1/denom, in output pixels (its
// header must parse: processSOF has set the sampling factors).
func mcuOf(data []byte, denom int) image.Point {
	var d decoder
	d.decode(bytes.NewReader(data), true)
	bs := 8 / denom
	return image.Pt(bs*max(d.comp[0].h, 1), bs*max(d.comp[0].v, 1))
}

// regionBounds is what DecodeRegion promises for rect: clipped to the
// image (full), widened to whole MCUs, clipped again.
func regionBounds(rect, full image.Rectangle, mcu image.Point) image.Rectangle {
	r := rect.Intersect(full)
	if r.Empty() {
		return image.Rectangle{}
	}
	r.Min.X -= r.Min.X % mcu.X
	r.Min.Y -= r.Min.Y % mcu.Y
	r.Max.X = (r.Max.X + mcu.X - 1) / mcu.X * mcu.X
	r.Max.Y = (r.Max.Y + mcu.Y - 1) / mcu.Y * mcu.Y
	return r.Intersect(full)
}

// checkRegion compares DecodeRegion's result (got, gerr) for rect with the
// whole decode at the same scale (full, ferr): the same error, the
// promised bounds, buffers of only the region's MCUs, and every pixel
// (chroma samples included) bit for bit.
func checkRegion(full image.Image, ferr error, got image.Image, gerr error, rect image.Rectangle, mcu image.Point) error {
	if (ferr != nil) != (gerr != nil) || (ferr != nil && ferr.Error() != gerr.Error()) {
		return fmt.Errorf("error %v, whole image %v", gerr, ferr)
	}
	if ferr != nil {
		return nil
	}
	if fmt.Sprintf("%T", got) != fmt.Sprintf("%T", full) {
		return fmt.Errorf("%T, whole image %T", got, full)
	}
	want := regionBounds(rect, full.Bounds(), mcu)
	b := got.Bounds()
	if b != want && !(b.Empty() && want.Empty()) {
		return fmt.Errorf("bounds %v, want %v (MCU %v, image %v)", b, want, mcu, full.Bounds())
	}
	if b.Empty() {
		return nil
	}
	// alloc is the region's whole MCUs: what the buffers may hold.
	alloc := image.Rect(b.Min.X, b.Min.Y, (b.Max.X+mcu.X-1)/mcu.X*mcu.X, (b.Max.Y+mcu.Y-1)/mcu.Y*mcu.Y)
	switch g := got.(type) {
	case *image.YCbCr:
		f := full.(*image.YCbCr)
		if g.SubsampleRatio != f.SubsampleRatio {
			return fmt.Errorf("%v, whole image %v", g.SubsampleRatio, f.SubsampleRatio)
		}
		if len(g.Y) > alloc.Dx()*alloc.Dy() {
			return fmt.Errorf("Y plane of %d bytes for a region of %v", len(g.Y), alloc)
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				gi, fi := g.YOffset(x, y), f.YOffset(x, y)
				gc, fc := g.COffset(x, y), f.COffset(x, y)
				if g.Y[gi] != f.Y[fi] || g.Cb[gc] != f.Cb[fc] || g.Cr[gc] != f.Cr[fc] {
					return fmt.Errorf("at %d,%d: YCbCr %d %d %d, whole image %d %d %d", x, y,
						g.Y[gi], g.Cb[gc], g.Cr[gc], f.Y[fi], f.Cb[fc], f.Cr[fc])
				}
			}
		}
	case *image.Gray:
		f := full.(*image.Gray)
		if len(g.Pix) > alloc.Dx()*alloc.Dy() {
			return fmt.Errorf("gray buffer of %d bytes for a region of %v", len(g.Pix), alloc)
		}
		for y := b.Min.Y; y < b.Max.Y; y++ {
			gr := g.Pix[g.PixOffset(b.Min.X, y):g.PixOffset(b.Max.X, y)]
			fr := f.Pix[f.PixOffset(b.Min.X, y):f.PixOffset(b.Max.X, y)]
			if !bytes.Equal(gr, fr) {
				return fmt.Errorf("row %d differs", y)
			}
		}
	case *image.RGBA:
		f := full.(*image.RGBA)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			if !bytes.Equal(g.Pix[g.PixOffset(b.Min.X, y):g.PixOffset(b.Max.X, y)], f.Pix[f.PixOffset(b.Min.X, y):f.PixOffset(b.Max.X, y)]) {
				return fmt.Errorf("RGBA row %d differs", y)
			}
		}
	case *image.CMYK:
		f := full.(*image.CMYK)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			if !bytes.Equal(g.Pix[g.PixOffset(b.Min.X, y):g.PixOffset(b.Max.X, y)], f.Pix[f.PixOffset(b.Min.X, y):f.PixOffset(b.Max.X, y)]) {
				return fmt.Errorf("CMYK row %d differs", y)
			}
		}
	default:
		return fmt.Errorf("unexpected %T", got)
	}
	return nil
}

// testRegions are rectangles of a w×h image: all of it, corner pixels,
// rectangles past its edges, empty ones, and n random ones (odd sizes and
// offsets).
func testRegions(rng *rand.Rand, w, h, n int) []image.Rectangle {
	rs := []image.Rectangle{
		image.Rect(0, 0, w, h),
		image.Rect(0, 0, 1, 1),
		image.Rect(w-1, h-1, w, h),
		image.Rect(w/2, -5, w+7, h/3+1),
		image.Rect(-3, h-2, 1, h+9),
		image.Rect(w-1, 0, w, h), // the last column
		image.Rect(w, 0, w+4, h), // outside
		{},
	}
	for range n {
		x0, y0 := rng.IntN(w), rng.IntN(h)
		rs = append(rs, image.Rect(x0, y0, x0+1+rng.IntN(w-x0), y0+1+rng.IntN(h-y0)))
	}
	return rs
}

// DecodeRegion is DecodeScaled inside the region, bit for bit, on every
// corpus image (4:4:4, 4:4:0, 4:2:2, 4:2:0, 4:1:1, 4:1:0, grayscale,
// progressive, restart intervals, RGB, CMYK, partial MCUs, the darknet
// photos when installed, a truncated file), at every scale.
func TestDecodeRegionMatchesWhole(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	n, kinds := 0, map[string]bool{}
	for name, data := range corpus(t) {
		for _, denom := range []int{1, 2, 4, 8} {
			full, ferr := DecodeScaled(bytes.NewReader(data), denom)
			w, h := 1, 1
			if ferr == nil {
				w, h = full.Bounds().Dx(), full.Bounds().Dy()
				kinds[layout(full)] = true
			}
			random := 6
			if w*h > 1<<18 {
				random = 2 // the darknet photos at full size: time
			}
			mcu := mcuOf(data, denom)
			for _, rect := range testRegions(rng, w, h, random) {
				got, gerr := DecodeRegion(bytes.NewReader(data), denom, rect)
				if err := checkRegion(full, ferr, got, gerr, rect, mcu); err != nil {
					t.Errorf("%s 1/%d region %v: %v", filepath.Base(name), denom, rect, err)
				}
				n++
			}
		}
	}
	t.Logf("%d regions, layouts %v", n, kinds)
	for _, k := range []string{"444", "440", "422", "420", "411", "410", "gray"} {
		if !kinds[k] {
			t.Errorf("no %s image in the corpus", k)
		}
	}
	if _, err := DecodeRegion(bytes.NewReader(nil), 3, image.Rect(0, 0, 1, 1)); err == nil || !strings.Contains(err.Error(), "1/3") {
		t.Errorf("scale 1/3: %v", err)
	}
}
