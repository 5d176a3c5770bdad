package jpeg

import (
	"bytes"
	"hash/fnv"
	"image"
	stdjpeg "image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzDecode: at scale 1 the fork agrees with image/jpeg on every input
// (error text, or image bytes), and a scaled decode fails exactly when the
// full one does, never panics, and has the promised bounds. DecodeRegion,
// at every scale and on regions drawn from a hash of the input (edges and
// out-of-image ones included), gives DecodeScaled's error or its pixels.
func FuzzDecode(f *testing.F) {
	var seeds []string
	m, _ := filepath.Glob("testdata/crop.*.jpg")
	seeds = append(seeds, m...)
	if root := goroot(); root != "" {
		m, _ = filepath.Glob(filepath.Join(root, "src", "image", "testdata", "*.jpeg"))
		seeds = append(seeds, m...)
	}
	for _, s := range seeds {
		d, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(d)
	}
	for _, d := range encoded(f) {
		if len(d) < 4096 {
			f.Add(d)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		wc, werr := stdjpeg.DecodeConfig(bytes.NewReader(data))
		gc, gerr := DecodeConfig(bytes.NewReader(data))
		if (werr != nil) != (gerr != nil) || wc != gc {
			t.Fatalf("DecodeConfig %v %v, image/jpeg %v %v", gc, gerr, wc, werr)
		}
		if gerr != nil || gc.Width*gc.Height > 1<<18 {
			return
		}
		want, werr := stdjpeg.Decode(bytes.NewReader(data))
		got, gerr := Decode(bytes.NewReader(data))
		if (werr != nil) != (gerr != nil) || (werr != nil && werr.Error() != gerr.Error()) {
			t.Fatalf("Decode error %v, image/jpeg %v", gerr, werr)
		}
		if werr == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("Decode differs from image/jpeg: %T %v vs %T %v", got, got.Bounds(), want, want.Bounds())
		}
		h := fnv.New64a()
		h.Write(data)
		rng := rand.New(rand.NewPCG(h.Sum64(), uint64(len(data))))
		for _, d := range []int{1, 2, 4, 8} {
			img, err := got, gerr
			if d > 1 {
				img, err = DecodeScaled(bytes.NewReader(data), d)
			}
			if (err != nil) != (gerr != nil) {
				t.Fatalf("1/%d: error %v, full size %v", d, err, gerr)
			}
			w, hh := 1, 1
			if err == nil {
				w, hh = img.Bounds().Dx(), img.Bounds().Dy()
			}
			rects := testRegions(rng, max(w, 1), max(hh, 1), 2)
			for _, rect := range []image.Rectangle{rects[rng.IntN(8)], rects[8], rects[9]} {
				r, rerr := DecodeRegion(bytes.NewReader(data), d, rect)
				if e := checkRegion(img, err, r, rerr, rect, mcuOf(data, d)); e != nil {
					t.Fatalf("1/%d region %v: %v", d, rect, e)
				}
			}
			if err != nil || d == 1 {
				continue
			}
			b, fb := img.Bounds(), got.Bounds()
			if b.Min.X != 0 || b.Min.Y != 0 || b.Dx() != (fb.Dx()+d-1)/d || b.Dy() != (fb.Dy()+d-1)/d {
				t.Fatalf("1/%d: bounds %v for %v", d, b, fb)
			}
			last := image.Pt(b.Max.X-1, b.Max.Y-1)
			switch m := img.(type) {
			case *image.YCbCr:
				if m.YOffset(last.X, last.Y) >= len(m.Y) || m.COffset(last.X, last.Y) >= len(m.Cb) || len(m.Cb) != len(m.Cr) {
					t.Fatalf("1/%d: %v planes of %d, %d bytes", d, m.SubsampleRatio, len(m.Y), len(m.Cb))
				}
			case *image.Gray:
				if m.PixOffset(last.X, last.Y) >= len(m.Pix) {
					t.Fatalf("1/%d: gray %v in %d bytes", d, b, len(m.Pix))
				}
			case *image.CMYK:
				if m.PixOffset(last.X, last.Y)+3 >= len(m.Pix) {
					t.Fatalf("1/%d: CMYK %v in %d bytes", d, b, len(m.Pix))
				}
			case *image.RGBA:
				if m.PixOffset(last.X, last.Y)+3 >= len(m.Pix) {
					t.Fatalf("1/%d: RGBA %v in %d bytes", d, b, len(m.Pix))
				}
			default:
				t.Fatalf("1/%d: %T", d, img)
			}
		}
	})
}
