package dataset

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ijpeg "github.com/ringtrain/ringtrain/internal/jpeg"
)

func uniformImage(kind string, w, h int, c color.NRGBA) []byte {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	var b bytes.Buffer
	if kind == "png" {
		png.Encode(&b, img)
	} else {
		jpeg.Encode(&b, img, &jpeg.Options{Quality: 100})
	}
	return b.Bytes()
}

// A uniform image stays uniform under every crop, flip and resize, so the
// output is exactly the preprocessing of that color.
func TestTransformUniform(t *testing.T) {
	col := color.NRGBA{200, 100, 50, 255}
	want := map[Preprocess][3]float32{
		Unit:  {200.0 / 255, 100.0 / 255, 50.0 / 255},
		Caffe: {50 - 103.939, 100 - 116.779, 200 - 123.68}, // BGR
		Torch: {(200.0/255 - 0.485) / 0.229, (100.0/255 - 0.456) / 0.224, (50.0/255 - 0.406) / 0.225},
		TF:    {200/127.5 - 1, 100/127.5 - 1, 50/127.5 - 1},
	}
	data := uniformImage("png", 57, 31, col)
	img, err := DecodeImage(data, "u.png")
	if err != nil {
		t.Fatal(err)
	}
	for mode, w := range want {
		for _, train := range []bool{false, true} {
			for _, size := range []int{8, 24, 100} {
				tr, err := NewTransformer(TransformConfig{Size: size, Train: train, Preprocess: mode})
				if err != nil {
					t.Fatal(err)
				}
				out := make([]float32, 3*size*size)
				for seed := range uint64(5) {
					tr.Apply(img, seed, out)
					for c := range 3 {
						for _, v := range out[c*size*size : (c+1)*size*size] {
							if math.Abs(float64(v-w[c])) > 1e-4*max(1, math.Abs(float64(w[c]))) {
								t.Fatalf("%v train=%v size %d channel %d: %v, want %v", mode, train, size, c, v, w[c])
							}
						}
					}
				}
			}
		}
	}
}

func TestTransformGrayExpandAndReduce(t *testing.T) {
	g := image.NewGray(image.Rect(0, 0, 28, 28))
	for i := range g.Pix {
		g.Pix[i] = uint8(i * 7)
	}
	var b bytes.Buffer
	png.Encode(&b, g)
	img, err := DecodeImage(b.Bytes(), "g.png")
	if err != nil {
		t.Fatal(err)
	}
	tr3, _ := NewTransformer(TransformConfig{Size: 28, ResizeShorter: 28})
	tr1, _ := NewTransformer(TransformConfig{Size: 28, ResizeShorter: 28, Channels: 1})
	out3, out1 := make([]float32, 3*28*28), make([]float32, 28*28)
	tr3.Apply(img, 0, out3)
	tr1.Apply(img, 0, out1)
	n := 28 * 28
	if !slices.Equal(out3[:n], out3[n:2*n]) || !slices.Equal(out3[:n], out3[2*n:]) || !slices.Equal(out3[:n], out1) {
		t.Error("grayscale not expanded identically to 3 channels")
	}
	// Same size, no crop: the identity (up to float rounding).
	for i, v := range out1 {
		if math.Abs(float64(v)-float64(g.Pix[i])/255) > 1e-5 {
			t.Fatalf("pixel %d: %v want %v", i, v, float64(g.Pix[i])/255)
		}
	}
}

func TestTransformFlipAndDeterminism(t *testing.T) {
	data := testImage(t, "png", 64, 48, 3)
	img, _ := DecodeImage(data, "x.png")
	tr, _ := NewTransformer(TransformConfig{Size: 32, Train: true})
	trNF, _ := NewTransformer(TransformConfig{Size: 32, Train: true, NoFlip: true})
	a, b := make([]float32, 3*32*32), make([]float32, 3*32*32)
	flips := 0
	for seed := range uint64(40) {
		tr.Apply(img, seed, a)
		trNF.Apply(img, seed, b)
		if slices.Equal(a, b) {
			continue
		}
		flips++
		for c := range 3 {
			for y := range 32 {
				for x := range 32 {
					if a[c*1024+y*32+x] != b[c*1024+y*32+31-x] {
						t.Fatalf("seed %d: flipped output is not the mirror image", seed)
					}
				}
			}
		}
	}
	if flips < 10 || flips > 30 {
		t.Errorf("%d of 40 flipped, want about half", flips)
	}
	tr.Apply(img, 7, a)
	tr.Apply(img, 7, b)
	if !slices.Equal(a, b) {
		t.Error("same seed, different output")
	}
	tr.Apply(img, 8, b)
	if slices.Equal(a, b) {
		t.Error("different seeds, same crop")
	}
}

func TestRandomResizedCropParams(t *testing.T) {
	r := splitmix{s: 1}
	rng := rand.New(rand.NewPCG(1, 1))
	for range 2000 {
		w, h := 1+rng.IntN(500), 1+rng.IntN(500)
		x, y, cw, ch := rrcParams(&r, w, h, 0.08, 1, 3.0/4, 4.0/3)
		if x < 0 || y < 0 || cw < 1 || ch < 1 || x+cw > w || y+ch > h {
			t.Fatalf("%dx%d: crop %d,%d %dx%d out of bounds", w, h, x, y, cw, ch)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := testImage(t, "jpg", 32, 32, 1)
	goodPNG := testImage(t, "png", 32, 32, 1)
	for name, data := range map[string][]byte{
		"text":          []byte("hello, not an image"),
		"empty":         nil,
		"truncated jpg": good[:len(good)/2],
		"truncated png": goodPNG[:len(goodPNG)/2],
		"header only":   good[:3],
	} {
		tr, _ := NewTransformer(TransformConfig{Size: 8})
		if err := tr.DecodeApply(data, "bucket/"+name, 0, make([]float32, 3*64)); err == nil || !errors.Is(err, ErrBadSample) {
			t.Errorf("%s: DecodeApply: %v", name, err)
		}
		_, err := DecodeImage(data, "bucket/"+name)
		if err == nil {
			t.Errorf("%s: decoded", name)
			continue
		}
		if !bytes.Contains([]byte(err.Error()), []byte("bucket/"+name)) {
			t.Errorf("%s: error does not name the object: %v", name, err)
		}
	}
}

func FuzzDecodeTransform(f *testing.F) {
	f.Add(testImage(f, "jpg", 9, 7, 1))
	f.Add(testImage(f, "png", 5, 11, 2))
	g := image.NewGray(image.Rect(0, 0, 3, 3))
	var b bytes.Buffer
	png.Encode(&b, g)
	f.Add(b.Bytes())
	if m, _ := filepath.Glob("/usr/share/darknet/data/dog.jpg"); len(m) == 1 {
		if d, err := os.ReadFile(m[0]); err == nil && len(d) < 1<<20 {
			f.Add(d[:4096])
		}
	}
	tr, _ := NewTransformer(TransformConfig{Size: 16, Train: true})
	te, _ := NewTransformer(TransformConfig{Size: 16, Channels: 1, Preprocess: Torch})
	out := make([]float32, 3*16*16)
	td, _ := NewTransformer(TransformConfig{Size: 16, Train: true, DCTScale: true})
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fast path (libjpeg when built with it) must not crash either.
		derr := td.DecodeApply(data, "fuzz", 3, out)
		if derr != nil && !errors.Is(derr, ErrBadSample) {
			t.Fatalf("DecodeApply error not typed: %v", derr)
		}
		img, err := DecodeImage(data, "fuzz")
		if err != nil {
			return
		}
		if img.Bounds().Dx()*img.Bounds().Dy() > 1<<22 {
			return
		}
		tr.Apply(img, 1, out)
		te.Apply(img, 2, out[:256])
		for _, v := range out {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatal("non-finite output")
			}
		}
	})
}

// DecodeApply (libjpeg when built with it, DCT scaling or not) stays close
// to the reference path: a full-size decode + Apply.
func TestDecodeApplyMatchesReference(t *testing.T) {
	files, _ := filepath.Glob("/usr/share/darknet/data/*.jpg")
	var inputs [][]byte
	for _, f := range files[:min(len(files), 3)] {
		d, _ := os.ReadFile(f)
		inputs = append(inputs, d)
	}
	inputs = append(inputs, testImage(t, "jpg", 300, 200, 4), testImage(t, "png", 64, 64, 5))
	for _, dct := range []bool{false, true} {
		for _, train := range []bool{false, true} {
			cfg := TransformConfig{Size: 64, Train: train, DCTScale: dct, NoDCTScale: !dct}
			tr, _ := NewTransformer(cfg)
			a, b := make([]float32, 3*64*64), make([]float32, 3*64*64)
			for i, d := range inputs {
				img, err := DecodeImage(d, "x")
				if err != nil {
					t.Fatal(err)
				}
				tr.Apply(img, 3, a)
				if err := tr.DecodeApply(d, "x", 3, b); err != nil {
					t.Fatal(err)
				}
				var sum, worst float64
				for j := range a {
					e := math.Abs(float64(a[j] - b[j]))
					sum += e
					worst = max(worst, e)
				}
				mean := sum / float64(len(a))
				t.Logf("libjpeg=%v dct=%v train=%v input %d: mean |diff| %.4f, max %.3f", haveLibjpeg, dct, train, i, mean, worst)
				tol, tolMax := 3.0/255, 0.3 // IDCT and chroma upsampling differ slightly
				if dct {
					// DCT-domain downscaling adds a box prefilter to the resize:
					// seen up to 2.1/255 mean, 0.125 max (both builds).
					tol, tolMax = 3.0/255, 0.2
				}
				if mean > tol || worst > tolMax {
					t.Errorf("dct=%v train=%v input %d: mean |diff| %.4f max %.3f vs the reference", dct, train, i, mean, worst)
				}
				if !haveLibjpeg && !dct && worst != 0 {
					t.Errorf("train=%v input %d: the pure-Go path differs from DecodeImage + Apply by up to %g", train, i, worst)
				}
			}
		}
	}
}

// The DCT scale both builds pick, and the plan mapped onto the scaled image.
func TestDCTDenomAndScaledPlan(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cfg       TransformConfig
		w, h      int
		seed      uint64
		wantDenom int
	}{
		{"off", TransformConfig{Size: 224}, 1352, 900, 0, 1},
		{"eval 768x576", TransformConfig{Size: 224, DCTScale: true}, 768, 576, 0, 2},   // crop box 504 px: 252 at 1/2
		{"eval 500x500", TransformConfig{Size: 224, DCTScale: true}, 500, 500, 0, 1},   // 437 px: 218 < 224 at 1/2
		{"eval 1352x900", TransformConfig{Size: 224, DCTScale: true}, 1352, 900, 0, 2}, // 787 px: 196 at 1/4
		{"eval 4000x3000 64", TransformConfig{Size: 64, DCTScale: true}, 4000, 3000, 0, 8},
		{"eval 63x63", TransformConfig{Size: 8, DCTScale: true}, 63, 63, 0, 4},
	} {
		tr, err := NewTransformer(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		p := tr.plan(tc.w, tc.h, tc.seed)
		d := tr.dctDenom(p)
		if d != tc.wantDenom {
			t.Errorf("%s: denom %d, want %d (crop box %.1fx%.1f)", tc.name, d, tc.wantDenom, p.x1-p.x0, p.y1-p.y0)
		}
		ow, oh := (tc.w+d-1)/d, (tc.h+d-1)/d
		q := p.scaled(d, ow, oh)
		f := float64(d)
		if q.x0 != p.x0/f || q.x1 != p.x1/f || q.y0 != p.y0/f || q.y1 != p.y1/f {
			t.Errorf("%s: box %v -> %v, want divided by %d", tc.name, p, q, d)
		}
		if !q.clip.In(image.Rect(0, 0, ow, oh)) || q.x0 < float64(q.clip.Min.X) || q.x1 > float64(q.clip.Max.X) ||
			q.y0 < float64(q.clip.Min.Y) || q.y1 > float64(q.clip.Max.Y) {
			t.Errorf("%s: clip %v of %dx%d does not hold box %v", tc.name, q.clip, ow, oh, q)
		}
	}
	// Training crops: the scaled crop box stays at least Size and inside the clip.
	tr, _ := NewTransformer(TransformConfig{Size: 224, Train: true, DCTScale: true})
	seen := map[int]int{}
	for seed := range uint64(2000) {
		p := tr.plan(4000, 3000, seed)
		d := tr.dctDenom(p)
		seen[d]++
		q := p.scaled(d, (4000+d-1)/d, (3000+d-1)/d)
		if q.x1-q.x0 < 224 && d > 1 || q.y1-q.y0 < 224 && d > 1 {
			t.Fatalf("seed %d: 1/%d leaves a %gx%g crop for size 224", seed, d, q.x1-q.x0, q.y1-q.y0)
		}
		if q.x0 < float64(q.clip.Min.X) || q.x1 > float64(q.clip.Max.X) || q.y0 < float64(q.clip.Min.Y) || q.y1 > float64(q.clip.Max.Y) {
			t.Fatalf("seed %d: clip %v does not hold box %v", seed, q.clip, q)
		}
	}
	if len(seen) < 3 {
		t.Errorf("training crops of 4000x3000 at size 224 used scales %v, want at least 3 of 1, 2, 4, 8", seen)
	}
	t.Logf("training crops of 4000x3000 at size 224, scales used: %v", seen)
}

// The fast YCbCr conversion equals image/color's for every subsampling.
func TestYCbCrToRGB(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, ratio := range []image.YCbCrSubsampleRatio{image.YCbCrSubsampleRatio444, image.YCbCrSubsampleRatio422,
		image.YCbCrSubsampleRatio420, image.YCbCrSubsampleRatio440, image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410} {
		im := image.NewYCbCr(image.Rect(3, 5, 40, 33), ratio)
		for _, p := range [][]uint8{im.Y, im.Cb, im.Cr} {
			for i := range p {
				p[i] = uint8(rng.Uint32())
			}
		}
		rect := image.Rect(4, 6, 37, 31)
		dst := make([]uint8, rect.Dx()*rect.Dy()*3)
		ycbcrToRGB(im, rect, dst)
		i := 0
		for y := rect.Min.Y; y < rect.Max.Y; y++ {
			for x := rect.Min.X; x < rect.Max.X; x++ {
				c := im.YCbCrAt(x, y)
				r, g, b := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
				if dst[i] != r || dst[i+1] != g || dst[i+2] != b {
					t.Fatalf("%v at %d,%d: got %v want %v", ratio, x, y, dst[i:i+3], []uint8{r, g, b})
				}
				i += 3
			}
		}
	}
}

// Golden outputs of torchvision's Resize(40) + CenterCrop(32) + ToTensor
// (made by /usr/bin/python3 with Pillow 9.4, torchvision 0.14; see
// testdata/). PIL rounds to 8 bits between its two resampling passes and
// decodes JPEG with libjpeg, so a small tolerance remains.
func TestEvalMatchesTorchvision(t *testing.T) {
	for _, tc := range []struct {
		name, path  string
		mean, worst float64
	}{
		{"gradient", "testdata/gradient.png", 0.5 / 255, 1.5 / 255},
		{"dog", "/usr/share/darknet/data/dog.jpg", 0.5 / 255, 2.0 / 255},
	} {
		data, err := os.ReadFile(tc.path)
		if err != nil {
			t.Logf("%s: %v (skipped)", tc.name, err)
			continue
		}
		raw, err := os.ReadFile("testdata/torchvision_eval32_" + tc.name + ".f32")
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, len(raw)/4)
		for i := range want {
			want[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		tr, _ := NewTransformer(TransformConfig{Size: 32, ResizeShorter: 40})
		got := make([]float32, 3*32*32)
		if err := tr.DecodeApply(data, tc.name, 0, got); err != nil {
			t.Fatal(err)
		}
		var sum, worst float64
		for i := range got {
			e := math.Abs(float64(got[i] - want[i]))
			sum += e
			worst = max(worst, e)
		}
		mean := sum / float64(len(got))
		t.Logf("%s (libjpeg=%v): mean |diff| %.5f (%.2f/255), max %.4f (%.1f/255)", tc.name, haveLibjpeg, mean, mean*255, worst, worst*255)
		if mean > tc.mean || worst > tc.worst {
			t.Errorf("%s: differs from torchvision: mean %.5f max %.4f", tc.name, mean, worst)
		}
	}
}

// torchvision's resized_crop (what RandomResizedCrop does once it has drawn
// a box): crop, then antialiased bilinear resize. Golden from testdata/.
func TestResizedCropMatchesTorchvision(t *testing.T) {
	for _, tc := range []struct {
		name, path string
		box        image.Rectangle
	}{
		{"gradient", "testdata/gradient.png", image.Rect(11, 7, 11+29, 7+41)},
		{"dog", "/usr/share/darknet/data/dog.jpg", image.Rect(100, 50, 400, 250)},
	} {
		data, err := os.ReadFile(tc.path)
		if err != nil {
			t.Logf("%s: %v (skipped)", tc.name, err)
			continue
		}
		want := readF32(t, "testdata/torchvision_resizedcrop_"+tc.name+".f32")
		img, err := DecodeImage(data, tc.name)
		if err != nil {
			t.Fatal(err)
		}
		tr, _ := NewTransformer(TransformConfig{Size: 32})
		got := make([]float32, 3*32*32)
		b := tc.box
		p := cropPlan{x0: float64(b.Min.X), y0: float64(b.Min.Y), x1: float64(b.Max.X), y1: float64(b.Max.Y), clip: b}
		tr.apply(p, 3, func(r image.Rectangle) ([]uint8, int) {
			buf := make([]uint8, r.Dx()*r.Dy()*3)
			toPixels(img, r, 3, buf)
			return buf, r.Dx() * 3
		}, got)
		var sum, worst float64
		for i := range got {
			e := math.Abs(float64(got[i] - want[i]))
			sum += e
			worst = max(worst, e)
		}
		mean := sum / float64(len(got))
		t.Logf("%s: mean |diff| %.2f/255, max %.1f/255", tc.name, mean*255, worst*255)
		if mean > 0.5/255 || worst > 2.0/255 {
			t.Errorf("%s: differs from torchvision resized_crop: mean %.2f/255 max %.1f/255", tc.name, mean*255, worst*255)
		}
	}
}

func readF32(t *testing.T, path string) []float32 {
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(raw)/4)
	for i := range out {
		out[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
	}
	return out
}

// regionTestJPEGs are the darknet photos (when installed), internal/jpeg's
// test images (4:4:4, 4:2:2, 4:2:0, grayscale, progressive; partial MCUs)
// and some of the standard library's (4:1:1, 4:4:0, restart intervals,
// RGB, CMYK).
func regionTestJPEGs(t *testing.T) map[string][]byte {
	files, _ := filepath.Glob("/usr/share/darknet/data/*.jpg")
	m, _ := filepath.Glob("../internal/jpeg/testdata/*.jpg")
	files = append(files, m...)
	root := os.Getenv("GOROOT")
	if root == "" {
		if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
			root = strings.TrimSpace(string(out))
		}
	}
	for _, f := range []string{"video-001.q50.411.jpeg", "video-001.q50.440.progressive.jpeg", "video-001.restart2.jpeg",
		"video-001.rgb.jpeg", "video-001.cmyk.jpeg", "video-005.gray.q50.2x2.jpeg"} {
		files = append(files, filepath.Join(root, "src", "image", "testdata", f))
	}
	out := map[string][]byte{}
	for _, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			t.Logf("%v (skipped)", err)
			continue
		}
		out[filepath.Base(f)] = d
	}
	if len(out) < 8 {
		t.Fatalf("only %d test JPEGs", len(out))
	}
	return out
}

// The pure-Go DecodeApply decodes only the region that resampling reads
// (internal/jpeg's DecodeRegion), and its output is exactly that of the
// whole image decoded at the same scale and resampled: bit for bit, for
// training and evaluation, with and without DCTScale, 1 and 3 channels.
func TestDecodeApplyRegionExact(t *testing.T) {
	cfgs := []TransformConfig{
		{Size: 64, Train: true}, // DCTScale by default
		{Size: 64, Train: true, NoDCTScale: true},
		{Size: 64},
		{Size: 224, Train: true, DCTScale: true, Preprocess: Torch},
		{Size: 224, DCTScale: true, Preprocess: Torch},
		{Size: 32, Channels: 1, Train: true, DCTScale: true, ScaleMin: 0.02},
	}
	cropped, n := 0, 0
	for name, data := range regionTestJPEGs(t) {
		for _, cfg := range cfgs {
			tr, err := NewTransformer(cfg)
			if err != nil {
				t.Fatal(err)
			}
			seeds := []uint64{1}
			if cfg.Train {
				seeds = []uint64{1, 2, 3}
			}
			want, got := make([]float32, tr.Config().SampleLen()), make([]float32, tr.Config().SampleLen())
			for _, seed := range seeds {
				// Reference: the whole image at the plan's scale, then resampled.
				c, err := jpeg.DecodeConfig(bytes.NewReader(data))
				if err != nil {
					t.Fatal(err)
				}
				p := tr.plan(c.Width, c.Height, seed)
				d := tr.dctDenom(p)
				whole, err := ijpeg.DecodeScaled(bytes.NewReader(data), d)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if d > 1 {
					p = p.scaled(d, whole.Bounds().Dx(), whole.Bounds().Dy())
				}
				win := tr.prepare(p)
				if !win.In(whole.Bounds()) {
					t.Fatalf("%s: window %v outside %v", name, win, whole.Bounds())
				}
				tr.applyImage(whole, p, want)
				if err := tr.decodeApplyGo(data, name, seed, got); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !slices.Equal(got, want) {
					t.Errorf("%s %+v seed %d (1/%d, window %v of %v): output differs from the whole image's", name, cfg, seed, d, win, whole.Bounds())
				}
				// What was decoded: the region around the window.
				img, err := decodeImage(data, name, func(w, h int) (int, image.Rectangle) { return d, win })
				if err != nil {
					t.Fatal(err)
				}
				if b := img.Bounds(); !win.In(b) {
					t.Errorf("%s: decoded %v, window %v", name, b, win)
				} else if b != whole.Bounds() {
					cropped++
				}
				n++
			}
		}
	}
	t.Logf("%d outputs identical, %d from a region smaller than the image", n, cropped)
	if cropped < n/3 {
		t.Errorf("only %d of %d decodes were of a smaller region", cropped, n)
	}
}

// Training transforms scale in the DCT domain unless NoDCTScale;
// evaluation only with DCTScale.
func TestDCTScaleDefault(t *testing.T) {
	for _, tc := range []struct {
		cfg  TransformConfig
		want bool
	}{
		{TransformConfig{Size: 8, Train: true}, true},
		{TransformConfig{Size: 8, Train: true, NoDCTScale: true}, false},
		{TransformConfig{Size: 8}, false},
		{TransformConfig{Size: 8, DCTScale: true}, true},
		{TransformConfig{Size: 8, NoDCTScale: true}, false},
	} {
		tr, err := NewTransformer(tc.cfg)
		if err != nil {
			t.Fatalf("%+v: %v", tc.cfg, err)
		}
		if got := tr.Config().DCTScale; got != tc.want {
			t.Errorf("%+v: DCTScale %v, want %v", tc.cfg, got, tc.want)
		}
	}
	if _, err := NewTransformer(TransformConfig{Size: 8, DCTScale: true, NoDCTScale: true}); err == nil {
		t.Error("DCTScale and NoDCTScale both accepted")
	}
}
