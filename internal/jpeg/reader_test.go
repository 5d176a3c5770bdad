package jpeg

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	stdjpeg "image/jpeg"
	"image/png"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// corpus is every JPEG the tests decode: this package's testdata (Pillow:
// baseline 4:4:4/4:2:2/4:2:0/gray, progressive 4:2:0/gray, chelsea
// progressive), the standard library's test images (all subsamplings,
// progressive, CMYK, RGB, restart intervals, a truncated file), the darknet
// photos when installed, and images made here by image/jpeg's encoder.
func corpus(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	var files []string
	m, _ := filepath.Glob("testdata/*.jpg")
	files = append(files, m...)
	if root := goroot(); root != "" {
		m, _ = filepath.Glob(filepath.Join(root, "src", "image", "testdata", "*.jpeg"))
		files = append(files, m...)
	}
	m, _ = filepath.Glob("/usr/share/darknet/data/*.jpg")
	files = append(files, m...)
	for _, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = d
	}
	for name, d := range encoded(t) {
		out[name] = d
	}
	return out
}

// encoded are images written by image/jpeg's encoder (4:2:0 for color,
// one component for gray) at sizes that leave partial MCUs.
func encoded(t testing.TB) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sz := range [][2]int{{1, 1}, {7, 9}, {16, 16}, {33, 17}, {100, 75}} {
		w, h := sz[0], sz[1]
		c := image.NewNRGBA(image.Rect(0, 0, w, h))
		g := image.NewGray(image.Rect(0, 0, w, h))
		for y := range h {
			for x := range w {
				// Smooth gradients plus noise: both low and high frequencies.
				v := uint8(128 + 100*math.Sin(float64(x)/5)*math.Cos(float64(y)/7) + float64(rng.IntN(30)))
				c.SetNRGBA(x, y, color.NRGBA{v, uint8(x * 255 / w), uint8(y * 255 / h), 255})
				g.SetGray(x, y, color.Gray{v})
			}
		}
		for _, q := range []int{50, 95} {
			for kind, img := range map[string]image.Image{"420": c, "gray": g} {
				var b bytes.Buffer
				if err := stdjpeg.Encode(&b, img, &stdjpeg.Options{Quality: q}); err != nil {
					t.Fatal(err)
				}
				out[fmt.Sprintf("encoded-%dx%d-q%d-%s", w, h, q, kind)] = b.Bytes()
			}
		}
	}
	return out
}

func goroot() string {
	if r := os.Getenv("GOROOT"); r != "" {
		return r
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// At scale 1 the fork is image/jpeg: same error or no error, same image
// type, bounds, strides and bytes (padding included).
func TestScale1IdenticalToImageJPEG(t *testing.T) {
	n := 0
	for name, data := range corpus(t) {
		want, werr := stdjpeg.Decode(bytes.NewReader(data))
		got, gerr := Decode(bytes.NewReader(data))
		if (werr != nil) != (gerr != nil) || (werr != nil && werr.Error() != gerr.Error()) {
			t.Errorf("%s: error %v, image/jpeg: %v", name, gerr, werr)
			continue
		}
		if werr != nil {
			t.Logf("%s: both fail: %v", name, werr)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %T %v differs from image/jpeg's %T %v", name, got, got.Bounds(), want, want.Bounds())
		}
		wc, werr := stdjpeg.DecodeConfig(bytes.NewReader(data))
		gc, gerr := DecodeConfig(bytes.NewReader(data))
		if werr != nil || gerr != nil || wc != gc {
			t.Errorf("%s: DecodeConfig %v %v, image/jpeg %v %v", name, gc, gerr, wc, werr)
		}
		n++
	}
	if n < 20 {
		t.Errorf("only %d images compared", n)
	}
	t.Logf("%d images identical to image/jpeg", n)
}

func TestDecodeScaledSizes(t *testing.T) {
	for name, data := range corpus(t) {
		full, err := Decode(bytes.NewReader(data))
		if err != nil {
			continue
		}
		w, h := full.Bounds().Dx(), full.Bounds().Dy()
		for _, d := range []int{2, 4, 8} {
			img, err := DecodeScaled(bytes.NewReader(data), d)
			if err != nil {
				t.Errorf("%s 1/%d: %v", name, d, err)
				continue
			}
			if b := img.Bounds(); b != image.Rect(0, 0, (w+d-1)/d, (h+d-1)/d) {
				t.Errorf("%s 1/%d: bounds %v for %dx%d", name, d, b, w, h)
			}
			if reflect.TypeOf(img) != reflect.TypeOf(full) {
				t.Errorf("%s 1/%d: %T, full size %T", name, d, img, full)
			}
		}
	}
	if _, err := DecodeScaled(bytes.NewReader(nil), 3); err == nil {
		t.Error("scale 1/3 accepted")
	}
}

// toRGB returns img as interleaved 8-bit RGB (3 channels), or gray (1),
// with image/color's conversions and nearest chroma, as dataset does.
func toRGB(img image.Image) (pix []uint8, cs int) {
	b := img.Bounds()
	if g, ok := img.(*image.Gray); ok {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			pix = append(pix, g.Pix[g.PixOffset(b.Min.X, y):g.PixOffset(b.Max.X, y)]...)
		}
		return pix, 1
	}
	if m, ok := img.(*image.YCbCr); ok {
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				c := m.YCbCrAt(x, y)
				r, g, bb := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
				pix = append(pix, r, g, bb)
			}
		}
		return pix, 3
	}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(img.At(x, y)).(color.NRGBA)
			pix = append(pix, c.R, c.G, c.B)
		}
	}
	return pix, 3
}

// pngPix reads a golden PNG as toRGB's layout.
func pngPix(t *testing.T, path string) ([]uint8, int, image.Rectangle) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	p, cs := toRGB(img)
	return p, cs, img.Bounds()
}

type diff struct{ mean, max float64 }

func compare(a, b []uint8) diff {
	var sum, worst float64
	for i := range a {
		e := math.Abs(float64(a[i]) - float64(b[i]))
		sum += e
		worst = max(worst, e)
	}
	return diff{sum / float64(len(a)), worst}
}

// layout names the output's pixel layout: gray, or its chroma subsampling.
func layout(img image.Image) string {
	if m, ok := img.(*image.YCbCr); ok {
		return strings.TrimPrefix(m.SubsampleRatio.String(), "YCbCrSubsampleRatio")
	}
	return "gray"
}

// libjpegUpsamples says whether libjpeg (6b API, square scaled IDCTs)
// upsamples the chroma of full's source at 1/d: only when a square chroma
// block cannot reach the luma's resolution (4:2:2, 4:4:0, 4:1:1, 4:1:0).
// This package then differs on purpose: its chroma blocks are scaled to
// the luma's resolution in each direction (idctMixed), where libjpeg
// replicates or interpolates lower-resolution chroma.
func libjpegUpsamples(full image.Image, d int) bool {
	m, ok := full.(*image.YCbCr)
	if !ok {
		return false
	}
	hr, vr := 1, 1
	switch m.SubsampleRatio {
	case image.YCbCrSubsampleRatio422:
		hr = 2
	case image.YCbCrSubsampleRatio420:
		hr, vr = 2, 2
	case image.YCbCrSubsampleRatio440:
		vr = 2
	case image.YCbCrSubsampleRatio411:
		hr = 4
	case image.YCbCrSubsampleRatio410:
		hr, vr = 4, 2
	}
	k := 1
	for 2*k*(8/d) <= 8 && hr%(2*k) == 0 && vr%(2*k) == 0 {
		k *= 2
	}
	return hr/k != 1 || vr/k != 1
}

// pillowResult is one scaled decode against Pillow's draft decode and
// against the full decode averaged over d×d boxes.
type pillowResult struct {
	rgb, luma         diff // ours vs Pillow draft: output (RGB or gray), luma plane
	oursBox, pilBox   diff // ours and Pillow's draft vs full decode + box
	upsampled         bool // libjpegUpsamples
	layout            string
	skipped, hasLumaL bool
}

// checkPillow compares DecodeScaled(data, d) with the goldens golden.png
// (RGB, or gray) and golden.L.png (luma of a color image), and asserts:
//   - luma (or gray) equals libjpeg's reduced IDCT within 1 level;
//   - where libjpeg needs no chroma upsampling, RGB is within 3 levels
//     (mean 0.6): YCbCr->RGB rounding differs;
//   - where it upsamples, this package is at least as close to the full
//     decode + box average as Pillow's draft decode is.
func checkPillow(t *testing.T, name string, data []byte, d int, golden string) pillowResult {
	t.Helper()
	var r pillowResult
	full, err := Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	img, err := DecodeScaled(bytes.NewReader(data), d)
	if err != nil {
		t.Fatalf("%s 1/%d: %v", name, d, err)
	}
	want, wcs, wb := pngPix(t, golden+".png")
	got, cs := toRGB(img)
	if cs != wcs || img.Bounds().Size() != wb.Size() {
		t.Fatalf("%s 1/%d: %v with %d channels, Pillow %v with %d", name, d, img.Bounds(), cs, wb, wcs)
	}
	r.layout, r.upsampled = layout(img), libjpegUpsamples(full, d)
	r.rgb = compare(got, want)
	fp, _ := toRGB(full)
	box := boxDown(fp, full.Bounds().Dx(), full.Bounds().Dy(), cs, d)
	r.oursBox, r.pilBox = compare(got, box), compare(want, box)
	r.luma = r.rgb
	if m, ok := img.(*image.YCbCr); ok {
		wl, _, _ := pngPix(t, golden+".L.png")
		var y []uint8
		for row := range m.Rect.Dy() {
			y = append(y, m.Y[row*m.YStride:row*m.YStride+m.Rect.Dx()]...)
		}
		r.luma, r.hasLumaL = compare(y, wl), true
	}
	t.Logf("%-36s 1/%d %-4s libjpeg-upsamples=%-5v vs Pillow draft: rgb mean %.3f max %2.0f, luma mean %.3f max %.0f; vs full+box: ours mean %.3f max %2.0f, Pillow's mean %.3f max %2.0f",
		filepath.Base(name), d, r.layout, r.upsampled, r.rgb.mean, r.rgb.max, r.luma.mean, r.luma.max,
		r.oursBox.mean, r.oursBox.max, r.pilBox.mean, r.pilBox.max)
	if r.luma.mean > 0.05 || r.luma.max > 1 {
		t.Errorf("%s 1/%d: luma mean |diff| %.3f max %.0f vs libjpeg's reduced IDCT, want <= 0.05, 1", name, d, r.luma.mean, r.luma.max)
	}
	if !r.upsampled && (r.rgb.mean > 0.6 || r.rgb.max > 3) {
		t.Errorf("%s 1/%d: RGB mean |diff| %.3f max %.0f vs Pillow's draft decode, want <= 0.6, 3", name, d, r.rgb.mean, r.rgb.max)
	}
	if r.upsampled && r.oursBox.mean > r.pilBox.mean+0.05 {
		t.Errorf("%s 1/%d: mean |diff| %.3f from full decode + box, Pillow's draft decode %.3f", name, d, r.oursBox.mean, r.pilBox.mean)
	}
	return r
}

func TestScaledMatchesPillowGoldens(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.jpg")
	if len(files) < 7 {
		t.Fatalf("testdata has %d JPEGs (run testdata/gen.py)", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []int{2, 4, 8} {
			checkPillow(t, f, data, d, strings.TrimSuffix(f, ".jpg")+fmt.Sprintf(".d%d", d))
		}
	}
}

// The same comparison for the darknet photos, the standard library's test
// images and the encoded ones, with Pillow run now (skipped without
// /usr/bin/python3 and python3-pil).
func TestScaledMatchesPillowCorpus(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Pillow")
	}
	if err := exec.Command("/usr/bin/python3", "-c", "import PIL").Run(); err != nil {
		t.Skipf("no Pillow: %v", err)
	}
	dir := t.TempDir()
	var args []string
	names := map[string]string{} // file in dir -> corpus name
	for name, data := range corpus(t) {
		if strings.HasPrefix(name, "testdata/") {
			continue
		}
		cfg, err := DecodeConfig(bytes.NewReader(data))
		if err != nil || strings.Contains(name, "truncated") || cfg.ColorModel == color.CMYKModel || cfg.ColorModel == color.RGBAModel || cfg.Width < 8 || cfg.Height < 8 {
			continue // Pillow keeps CMYK as CMYK; RGB JPEGs have no luma; 1/8 of < 8 pixels is 1 either way; libjpeg and Go fill a truncated scan differently
		}
		if _, err := Decode(bytes.NewReader(data)); err != nil {
			continue
		}
		p := filepath.Join(dir, fmt.Sprintf("img%02d.jpg", len(args)))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		names[p] = name
		args = append(args, p)
	}
	out, err := exec.Command("/usr/bin/python3", append([]string{"testdata/gen.py", "draft", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("gen.py draft: %v\n%s", err, out)
	}
	var worst [2]pillowResult // [libjpeg upsamples]
	for _, p := range args {
		data, _ := os.ReadFile(p)
		for _, d := range []int{2, 4, 8} {
			r := checkPillow(t, names[p], data, d, strings.TrimSuffix(p, ".jpg")+fmt.Sprintf(".d%d", d))
			w := &worst[0]
			if r.upsampled {
				w = &worst[1]
			}
			for _, x := range []struct{ w, r *diff }{{&w.rgb, &r.rgb}, {&w.luma, &r.luma}, {&w.oursBox, &r.oursBox}, {&w.pilBox, &r.pilBox}} {
				x.w.mean, x.w.max = max(x.w.mean, x.r.mean), max(x.w.max, x.r.max)
			}
		}
	}
	for i, w := range worst {
		t.Logf("worst, libjpeg upsamples=%v: vs Pillow draft rgb mean %.3f max %.0f, luma mean %.3f max %.0f; vs full+box ours mean %.3f max %.0f, Pillow's mean %.3f max %.0f",
			i == 1, w.rgb.mean, w.rgb.max, w.luma.mean, w.luma.max, w.oursBox.mean, w.oursBox.max, w.pilBox.mean, w.pilBox.max)
	}
}

// boxDown averages d×d boxes of pix (w×h×cs; partial boxes at the right and
// bottom edges average what they cover), rounding to nearest.
func boxDown(pix []uint8, w, h, cs, d int) []uint8 {
	ow, oh := (w+d-1)/d, (h+d-1)/d
	out := make([]uint8, ow*oh*cs)
	for oy := range oh {
		for ox := range ow {
			for c := range cs {
				sum, n := 0, 0
				for y := oy * d; y < min(oy*d+d, h); y++ {
					for x := ox * d; x < min(ox*d+d, w); x++ {
						sum += int(pix[(y*w+x)*cs+c])
						n++
					}
				}
				out[(oy*ow+ox)*cs+c] = uint8((sum + n/2) / n)
			}
		}
	}
	return out
}

// A scaled decode is close to a full decode followed by box averaging: the
// reduced IDCT is the mean of the full one up to rounding, chroma comes
// from the coefficients at the output's resolution where the full decode
// replicates it, and the last row or column of blocks of an image whose
// size is not a multiple of 8·d also averages the encoder's padding.
func TestScaledMatchesBoxDownscale(t *testing.T) {
	var worst [9]diff
	for name, data := range corpus(t) {
		full, err := Decode(bytes.NewReader(data))
		if err != nil {
			continue
		}
		if _, ok := full.(*image.CMYK); ok {
			continue
		}
		fp, cs := toRGB(full)
		w, h := full.Bounds().Dx(), full.Bounds().Dy()
		if w < 16 || h < 16 {
			continue
		}
		for _, d := range []int{2, 4, 8} {
			img, err := DecodeScaled(bytes.NewReader(data), d)
			if err != nil {
				t.Fatalf("%s 1/%d: %v", name, d, err)
			}
			got, _ := toRGB(img)
			df := compare(got, boxDown(fp, w, h, cs, d))
			t.Logf("%-40s 1/%d vs full decode + %dx%d box: mean |diff| %.3f, max %3.0f", filepath.Base(name), d, d, d, df.mean, df.max)
			worst[d].mean, worst[d].max = max(worst[d].mean, df.mean), max(worst[d].max, df.max)
			if df.mean > 1.5 || df.max > 48 {
				t.Errorf("%s 1/%d: mean |diff| %.3f max %.0f vs full decode + box filter, want <= 1.5, 48", name, d, df.mean, df.max)
			}
		}
	}
	for _, d := range []int{2, 4, 8} {
		t.Logf("worst at 1/%d: mean %.3f max %.0f", d, worst[d].mean, worst[d].max)
	}
}

// The reduced IDCTs against a float64 reference: the mean of each 2×2, 4×4
// or 8×8 group of the exact IDCT's outputs, on blocks of coefficients from
// the forward DCT of random smooth and noisy pixels, quantized.
func TestReducedIDCTAgainstFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var cosT [8][8]float64
	for x := range 8 {
		for u := range 8 {
			cosT[x][u] = math.Cos(float64(2*x+1) * float64(u) * math.Pi / 16)
		}
	}
	cu := func(u int) float64 {
		if u == 0 {
			return 1 / math.Sqrt2
		}
		return 1
	}
	worst := map[int]float64{}
	for it := range 3000 {
		var px [64]float64
		noise := float64(it % 4 * 40)
		base := rng.Float64()*255 - 128
		for i := range px {
			px[i] = max(-128, min(127, base+noise*(rng.Float64()-0.5)+float64(i%8)*float64(it%7-3)*3))
		}
		var q, qn, coef block
		for i := range q {
			q[i] = int32(1 + rng.IntN(1+it%3*20))
		}
		for i := range 64 {
			qn[unzig[i]] = q[i]
		}
		var exact [64]float64
		for v := range 8 {
			for u := range 8 {
				var s float64
				for y := range 8 {
					for x := range 8 {
						s += px[y*8+x] * cosT[x][u] * cosT[y][v]
					}
				}
				f := s * cu(u) * cu(v) / 4
				k := int32(math.Round(f / float64(qn[v*8+u])))
				coef[v*8+u] = k
				exact[v*8+u] = float64(k * qn[v*8+u])
			}
		}
		var rec [64]float64 // exact IDCT of the dequantized coefficients
		// meanErr is the worst |error| of dst (nw×nh) against the means of
		// rw×rh groups of rec.
		meanErr := func(dst []byte, nw, nh, rw, rh int) float64 {
			var e float64
			for oy := range nh {
				for ox := range nw {
					var s float64
					for y := oy * rh; y < oy*rh+rh; y++ {
						for x := ox * rw; x < ox*rw+rw; x++ {
							s += rec[y*8+x]
						}
					}
					want := max(0, min(255, s/float64(rw*rh)+128))
					e = max(e, math.Abs(float64(dst[oy*nw+ox])-want))
				}
			}
			return e
		}
		for y := range 8 {
			for x := range 8 {
				var s float64
				for v := range 8 {
					for u := range 8 {
						s += cu(u) * cu(v) / 4 * exact[v*8+u] * cosT[x][u] * cosT[y][v]
					}
				}
				rec[y*8+x] = s
			}
		}
		for _, n := range []int{4, 2, 1} {
			r := 8 / n
			dst := make([]byte, n*n)
			b := coef
			switch n {
			case 4:
				idct4x4(&b, &qn, dst, n)
			case 2:
				idct2x2(&b, &qn, dst, n)
			case 1:
				idct1x1(&b, &qn, dst)
			}
			if b != coef {
				t.Fatal("reduced IDCT modified its input")
			}
			worst[n] = max(worst[n], meanErr(dst, n, n, r, r))
		}
		// idctMixed, every output shape.
		for _, nw := range []int{8, 4, 2, 1} {
			for _, nh := range []int{8, 4, 2, 1} {
				dst := make([]byte, nw*nh)
				b := coef
				idctMixed(&b, &qn, nw, nh, dst, nw)
				if b != coef {
					t.Fatal("idctMixed modified its input")
				}
				worst[10*nw+nh] = max(worst[10*nw+nh], meanErr(dst, nw, nh, 8/nw, 8/nh))
			}
		}
	}
	for _, n := range slices.Sorted(maps.Keys(worst)) {
		w := worst[n]
		t.Logf("%s: max |error| %.3f vs the exact mean", shape(n), w)
		if w > 1.0 {
			t.Errorf("%s: max |error| %.3f, want <= 1 (rounding)", shape(n), w)
		}
	}
}

func shape(n int) string {
	if n < 10 {
		return fmt.Sprintf("idct%dx%d", n, n)
	}
	return fmt.Sprintf("idctMixed %dx%d", n/10, n%10)
}

// The constants are the fixed-point weights the comment in idctred.go
// defines.
func TestReducedIDCTConstants(t *testing.T) {
	fix := func(x float64) int { return int(math.Floor(x*(1<<constBits) + 0.5)) }
	// weight is 2√2 C(k)/2 Σ_{j<r} cos((2(rm+j)+1)kπ/16).
	weight := func(r, m, k int) float64 {
		c := 1.0
		if k == 0 {
			c = 1 / math.Sqrt2
		}
		var s float64
		for j := range r {
			s += math.Cos(float64(2*(r*m+j)+1) * float64(k) * math.Pi / 16)
		}
		return math.Sqrt2 * c * s
	}
	for _, tc := range []struct {
		r, m, k, got int
	}{
		{2, 0, 0, 1 << (constBits + 1)}, {2, 0, 2, r4e2}, {2, 0, 6, r4e6}, {2, 1, 2, -r4e2}, {2, 1, 6, -r4e6},
		{2, 0, 4, 0}, {2, 1, 4, 0},
		{2, 0, 1, r4o01}, {2, 0, 3, r4o03}, {2, 0, 5, r4o05}, {2, 0, 7, r4o07},
		{2, 1, 1, r4o11}, {2, 1, 3, r4o13}, {2, 1, 5, r4o15}, {2, 1, 7, r4o17},
		{2, 3, 1, -r4o01}, {2, 2, 3, -r4o13}, {2, 3, 2, r4e2},
		{4, 0, 0, 1 << (constBits + 2)}, {4, 0, 2, 0}, {4, 0, 4, 0}, {4, 0, 6, 0},
		{4, 0, 1, r2o1}, {4, 0, 3, r2o3}, {4, 0, 5, r2o5}, {4, 0, 7, r2o7}, {4, 1, 1, -r2o1},
	} {
		if want := fix(weight(tc.r, tc.m, tc.k)); want != tc.got {
			t.Errorf("r=%d output %d k=%d: constant %d, want %d", tc.r, tc.m, tc.k, tc.got, want)
		}
	}
}

// BenchmarkDecode decodes the darknet photos, round robin; cpu-ms/op is
// process CPU time (getrusage), steadier than ns/op on a loaded machine.
func BenchmarkDecode(b *testing.B) {
	files, _ := filepath.Glob("/usr/share/darknet/data/*.jpg")
	if len(files) == 0 {
		b.Skip("no darknet photos")
	}
	var data [][]byte
	for _, f := range files {
		d, _ := os.ReadFile(f)
		data = append(data, d)
	}
	run := func(b *testing.B, decode func([]byte) error) {
		b.ReportAllocs()
		c0 := cpuSeconds()
		for i := 0; b.Loop(); i++ {
			if err := decode(data[i%len(data)]); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric((cpuSeconds()-c0)*1e3/float64(b.N), "cpu-ms/op")
	}
	b.Run("image-jpeg", func(b *testing.B) {
		run(b, func(d []byte) error { _, err := stdjpeg.Decode(bytes.NewReader(d)); return err })
	})
	for _, denom := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("scale-1-%d", denom), func(b *testing.B) {
			run(b, func(d []byte) error { _, err := DecodeScaled(bytes.NewReader(d), denom); return err })
		})
	}
	// The central half of the area (side ×0.71), as DecodeApply asks for
	// a RandomResizedCrop of average size.
	b.Run("region-half-1-1", func(b *testing.B) {
		run(b, func(d []byte) error {
			c, err := DecodeConfig(bytes.NewReader(d))
			if err != nil {
				return err
			}
			w, h := c.Width*71/100, c.Height*71/100
			x, y := (c.Width-w)/2, (c.Height-h)/2
			_, err = DecodeRegion(bytes.NewReader(d), 1, image.Rect(x, y, x+w, y+h))
			return err
		})
	})
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
