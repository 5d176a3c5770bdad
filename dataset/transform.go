package dataset

import (
	"fmt"
	"image"
	"math"
	"strings"
)

// Preprocess is how pixel values become network inputs, as Keras's
// preprocess_input modes.
type Preprocess int

const (
	// Unit scales to [0, 1] (RGB), as ToTensor without Normalize.
	Unit Preprocess = iota
	// Caffe: BGR order, 0..255 with the ImageNet mean subtracted.
	Caffe
	// Torch: RGB/255, then ImageNet mean/std normalization.
	Torch
	// TF: RGB scaled to [-1, 1].
	TF
)

// ParsePreprocess reads "unit", "caffe", "torch" or "tf".
func ParsePreprocess(s string) (Preprocess, error) {
	switch strings.ToLower(s) {
	case "unit", "none", "":
		return Unit, nil
	case "caffe":
		return Caffe, nil
	case "torch":
		return Torch, nil
	case "tf":
		return TF, nil
	}
	return 0, fmt.Errorf("preprocess mode %q: want unit, caffe, torch or tf", s)
}

func (p Preprocess) String() string {
	return [...]string{"unit", "caffe", "torch", "tf"}[p]
}

// ImageNet statistics (RGB order).
var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
	caffeMeanRGB = [3]float32{123.68, 116.779, 103.939}
)

// affine returns, per output channel, a*v+b applied to v in 0..255, and
// the source channel (0..2 of RGB) each output channel reads. For one
// channel, the RGB statistics are averaged.
func (p Preprocess) affine(channels int) (a, b [3]float32, src [3]int) {
	src = [3]int{0, 1, 2}
	for c := range 3 {
		switch p {
		case Unit:
			a[c], b[c] = 1.0/255, 0
		case Caffe:
			a[c], b[c] = 1, -caffeMeanRGB[c]
		case Torch:
			a[c], b[c] = 1/(255*imagenetStd[c]), -imagenetMean[c]/imagenetStd[c]
		case TF:
			a[c], b[c] = 1/127.5, -1
		}
	}
	if p == Caffe {
		src = [3]int{2, 1, 0}
		a[0], a[2] = a[2], a[0]
		b[0], b[2] = b[2], b[0]
	}
	if channels == 1 {
		a[0] = (a[0] + a[1] + a[2]) / 3
		b[0] = (b[0] + b[1] + b[2]) / 3
		src[0] = 0
	}
	return a, b, src
}

// TransformConfig describes the per-sample transform into C×Size×Size.
type TransformConfig struct {
	Size     int // output height and width
	Channels int // 1 or 3 (grayscale is expanded, color is reduced to luma)
	// Train selects RandomResizedCrop + random horizontal flip; otherwise
	// the evaluation transform: resize the shorter side to ResizeShorter,
	// then center-crop Size.
	Train bool
	// RandomResizedCrop's area scale and aspect-ratio ranges
	// (defaults 0.08–1 and 3/4–4/3, as torchvision).
	ScaleMin, ScaleMax float64
	RatioMin, RatioMax float64
	// NoFlip disables the random flip in training.
	NoFlip bool
	// ResizeShorter for evaluation (default Size*256/224, as for ImageNet).
	ResizeShorter int
	Preprocess    Preprocess
	// DCTScale lets JPEGs decode at 1/2, 1/4 or 1/8 size in the DCT domain
	// when the crop is that much larger than Size (both builds pick the same
	// scale, see DecodeApply): much less decode work for large photos. The
	// scaled decode is close to a full decode averaged over the scale's
	// boxes (~0.3-0.6/255 mean), a prefilter before a resize that shrinks
	// by at least as much again.
	//
	// Training transforms have it by default (WithDefaults sets it when
	// Train, unless NoDCTScale), as PIL's draft mode would: RandomResizedCrop
	// resamples anyway, ringtrain's crops are not torchvision's draws in any
	// case, and it is 10-15% more images per CPU-second on the darknet
	// photos (BENCHMARKS.md, issue 5), more on larger images.
	//
	// For evaluation it stays opt-in: that box prefilter blurs the resize;
	// on the darknet photos it applies to (4 of 7 at Size 224, all at 1/2),
	// eval tensors move 0.5-2.3/255 mean (max 34/255 pure Go, 49/255
	// libjpeg) from torchvision's Resize+CenterCrop, where the exact path
	// stays within 0.3-0.6/255 mean. Eval accuracy and predict/features
	// with imported torchvision weights are compared with torchvision's
	// preprocessing, so exactness is the default there; opt in where
	// throughput matters more (bulk feature extraction).
	DCTScale bool
	// NoDCTScale keeps training JPEGs at full size (the decode that
	// evaluation uses by default). It cannot be combined with DCTScale.
	NoDCTScale bool
}

// WithDefaults fills zero fields.
func (c TransformConfig) WithDefaults() TransformConfig {
	if c.Channels == 0 {
		c.Channels = 3
	}
	if c.ScaleMax == 0 {
		c.ScaleMin, c.ScaleMax = 0.08, 1
	}
	if c.RatioMax == 0 {
		c.RatioMin, c.RatioMax = 3.0/4, 4.0/3
	}
	if c.ResizeShorter == 0 {
		c.ResizeShorter = (c.Size*256 + 112) / 224
	}
	if c.Train && !c.NoDCTScale {
		c.DCTScale = true
	}
	return c
}

// Validate checks the config.
func (c TransformConfig) Validate() error {
	switch {
	case c.Size <= 0 || c.Size > 4096:
		return fmt.Errorf("transform: size %d out of range", c.Size)
	case c.Channels != 1 && c.Channels != 3:
		return fmt.Errorf("transform: %d channels, want 1 or 3", c.Channels)
	case !(c.ScaleMin > 0 && c.ScaleMin <= c.ScaleMax && c.ScaleMax <= 1):
		return fmt.Errorf("transform: scale range [%g,%g] invalid", c.ScaleMin, c.ScaleMax)
	case !(c.RatioMin > 0 && c.RatioMin <= c.RatioMax):
		return fmt.Errorf("transform: ratio range [%g,%g] invalid", c.RatioMin, c.RatioMax)
	case c.ResizeShorter < c.Size:
		return fmt.Errorf("transform: resize %d smaller than crop %d", c.ResizeShorter, c.Size)
	case c.DCTScale && c.NoDCTScale:
		return fmt.Errorf("transform: DCTScale and NoDCTScale both set")
	}
	return nil
}

// SampleLen is C*Size*Size, the floats per sample.
func (c TransformConfig) SampleLen() int { return c.Channels * c.Size * c.Size }

// Transformer applies a TransformConfig; its scratch buffers are reused, so
// one Transformer serves one goroutine at a time.
type Transformer struct {
	cfg    TransformConfig
	a, b   [3]float32
	src    [3]int
	region []uint8   // source pixels of the needed window, interleaved
	tmp    []float32 // after the horizontal pass
	acc    []float32
	kx, ky coeffs
	jbuf   []uint8 // libjpeg output, reused
}

// NewTransformer checks cfg (after WithDefaults) and prepares buffers.
func NewTransformer(cfg TransformConfig) (*Transformer, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t := &Transformer{cfg: cfg}
	t.a, t.b, t.src = cfg.Preprocess.affine(cfg.Channels)
	return t, nil
}

// Config returns the effective config.
func (t *Transformer) Config() TransformConfig { return t.cfg }

// Box is a crop rectangle in source pixel coordinates (floats, as PIL's
// resize box); Clip is the integer rectangle filters may read (the crop for
// RandomResizedCrop, which torchvision crops before resizing).
type cropPlan struct {
	x0, y0, x1, y1 float64
	clip           image.Rectangle
	flip           bool
}

// plan chooses the crop for an image of w×h with randomness from seed.
func (t *Transformer) plan(w, h int, seed uint64) cropPlan {
	c := t.cfg
	if !c.Train {
		// torchvision Resize(shorter) then CenterCrop(size), as one box.
		var nw, nh int
		if w <= h {
			nw, nh = c.ResizeShorter, int(float64(c.ResizeShorter)*float64(h)/float64(w))
		} else {
			nh, nw = c.ResizeShorter, int(float64(c.ResizeShorter)*float64(w)/float64(h))
		}
		left := math.RoundToEven(float64(nw-c.Size) / 2) // Python round(), as torchvision
		top := math.RoundToEven(float64(nh-c.Size) / 2)
		sx, sy := float64(w)/float64(nw), float64(h)/float64(nh)
		return cropPlan{x0: left * sx, y0: top * sy, x1: (left + float64(c.Size)) * sx, y1: (top + float64(c.Size)) * sy,
			clip: image.Rect(0, 0, w, h)}
	}
	r := splitmix{s: seed}
	cx, cy, cw, ch := rrcParams(&r, w, h, c.ScaleMin, c.ScaleMax, c.RatioMin, c.RatioMax)
	flip := !c.NoFlip && r.float64() < 0.5
	return cropPlan{x0: float64(cx), y0: float64(cy), x1: float64(cx + cw), y1: float64(cy + ch),
		clip: image.Rect(cx, cy, cx+cw, cy+ch), flip: flip}
}

// rrcParams is torchvision's RandomResizedCrop.get_params.
func rrcParams(r *splitmix, w, h int, smin, smax, rmin, rmax float64) (x, y, cw, ch int) {
	area := float64(w * h)
	lr0, lr1 := math.Log(rmin), math.Log(rmax)
	for range 10 {
		target := area * (smin + (smax-smin)*r.float64())
		aspect := math.Exp(lr0 + (lr1-lr0)*r.float64())
		cw = int(math.Round(math.Sqrt(target * aspect)))
		ch = int(math.Round(math.Sqrt(target / aspect)))
		if cw > 0 && cw <= w && ch > 0 && ch <= h {
			y = int(r.bounded(uint64(h - ch + 1)))
			x = int(r.bounded(uint64(w - cw + 1)))
			return x, y, cw, ch
		}
	}
	ratio := float64(w) / float64(h)
	switch {
	case ratio < rmin:
		cw, ch = w, int(math.Round(float64(w)/rmin))
	case ratio > rmax:
		ch, cw = h, int(math.Round(float64(h)*rmax))
	default:
		cw, ch = w, h
	}
	cw, ch = max(min(cw, w), 1), max(min(ch, h), 1)
	return (w - cw) / 2, (h - ch) / 2, cw, ch
}

// Apply transforms img into dst (C×Size×Size floats, NCHW row of a batch);
// seed drives the random crop and flip.
func (t *Transformer) Apply(img image.Image, seed uint64, dst []float32) {
	b := img.Bounds()
	t.applyImage(img, t.plan(b.Dx(), b.Dy(), seed), dst)
}

// applyImage resamples plan p (in img's coordinates, from its origin).
func (t *Transformer) applyImage(img image.Image, p cropPlan, dst []float32) {
	t.resampleImage(img, p, t.prepare(p), img.Bounds().Min, dst)
}

// resampleImage runs plan p, whose weights prepare computed (win is its
// result), on img: plan coordinate (x, y) is img's (x, y) + origin.
func (t *Transformer) resampleImage(img image.Image, p cropPlan, win image.Rectangle, origin image.Point, dst []float32) {
	cs := 3
	if t.cfg.Channels == 1 || isGray(img) {
		cs = 1
	}
	t.resample(p, win, cs, func(r image.Rectangle) ([]uint8, int) {
		t.region = grow(t.region, r.Dx()*r.Dy()*cs)
		toPixels(img, r.Add(origin), cs, t.region)
		return t.region, r.Dx() * cs
	}, dst)
}

// apply resamples plan p; pixels returns the source pixels of rect r
// (image coordinates, cs interleaved channels) and their row stride.
func (t *Transformer) apply(p cropPlan, cs int, pixels func(r image.Rectangle) ([]uint8, int), dst []float32) {
	t.resample(p, t.prepare(p), cs, pixels, dst)
}

// prepare computes the resampling weights of plan p and returns the window
// of source pixels they read, in image coordinates (inside p.clip): all
// that resample asks pixels for. DecodeApply decodes just that.
func (t *Transformer) prepare(p cropPlan) image.Rectangle {
	S := t.cfg.Size
	// Coefficients relative to the clip rectangle.
	cl := p.clip
	t.kx.compute(p.x0-float64(cl.Min.X), p.x1-float64(cl.Min.X), cl.Dx(), S)
	t.ky.compute(p.y0-float64(cl.Min.Y), p.y1-float64(cl.Min.Y), cl.Dy(), S)
	rx0, rx1 := t.kx.span()
	ry0, ry1 := t.ky.span()
	return image.Rect(cl.Min.X+rx0, cl.Min.Y+ry0, cl.Min.X+rx1, cl.Min.Y+ry1)
}

// resample runs the weights that prepare(p) computed, reading window win
// (prepare's result) through pixels.
func (t *Transformer) resample(p cropPlan, win image.Rectangle, cs int, pixels func(r image.Rectangle) ([]uint8, int), dst []float32) {
	S := t.cfg.Size
	rx0, ry0 := win.Min.X-p.clip.Min.X, win.Min.Y-p.clip.Min.Y
	rh := win.Dy()
	src, stride := pixels(win)
	// Horizontal pass: rh rows × S columns × cs.
	t.tmp = growF(t.tmp, rh*S*cs)
	t.kx.shift(rx0)
	horizontal(src, stride, rh, cs, &t.kx, t.tmp)
	t.kx.shift(-rx0)
	// Vertical pass into channel planes with the affine map and flip.
	t.acc = growF(t.acc, S*cs)
	plane := S * S
	for yy := range S {
		acc := t.acc[:S*cs]
		clear(acc)
		lo, ws := t.ky.window(yy)
		for k, w := range ws {
			row := t.tmp[(lo+k-ry0)*S*cs : (lo+k-ry0+1)*S*cs]
			axpy(w, row, acc)
		}
		for c := range t.cfg.Channels {
			sc := 0
			if cs == 3 {
				sc = t.src[c]
			}
			a, bb := t.a[c], t.b[c]
			o := dst[c*plane+yy*S : c*plane+yy*S+S]
			if p.flip {
				for xx := range S {
					o[S-1-xx] = clamp255(acc[xx*cs+sc])*a + bb
				}
			} else {
				for xx := range S {
					o[xx] = clamp255(acc[xx*cs+sc])*a + bb
				}
			}
		}
	}
}

func clamp255(v float32) float32 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return v
}

func axpy(w float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += w * v
	}
}

func grow(b []uint8, n int) []uint8 {
	if cap(b) < n {
		return make([]uint8, n)
	}
	return b[:n]
}

func growF(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func isGray(img image.Image) bool {
	switch im := img.(type) {
	case *image.Gray, *image.Gray16:
		return true
	case *image.YCbCr:
		return false
	case *image.Paletted:
		for _, c := range im.Palette {
			r, g, b, _ := c.RGBA()
			if r != g || g != b {
				return false
			}
		}
		return true
	}
	return false
}

// coeffs are PIL's antialiased bilinear resampling weights: for output i,
// weights w[off[i]:off[i+1]] over source pixels lo[i], lo[i]+1, ...
type coeffs struct {
	lo  []int
	off []int
	w   []float32
}

// compute prepares out weights for the box [b0, b1) of a source of size n
// (PIL precompute_coeffs with the triangle filter, support 1).
func (k *coeffs) compute(b0, b1 float64, n, out int) {
	scale := (b1 - b0) / float64(out)
	fscale := max(scale, 1)
	support := fscale
	ss := 1 / fscale
	k.lo, k.off, k.w = k.lo[:0], k.off[:0], k.w[:0]
	k.off = append(k.off, 0)
	for i := range out {
		center := b0 + (float64(i)+0.5)*scale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), n)
		if xmax <= xmin { // degenerate box: nearest pixel
			xmin = min(max(int(center), 0), n-1)
			xmax = xmin + 1
		}
		start := len(k.w)
		var sum float64
		for x := xmin; x < xmax; x++ {
			v := 1 - math.Abs((float64(x)-center+0.5)*ss)
			if v < 0 {
				v = 0
			}
			k.w = append(k.w, float32(v))
			sum += v
		}
		if sum == 0 {
			k.w[start] = 1
			sum = 1
		}
		for j := start; j < len(k.w); j++ {
			k.w[j] = float32(float64(k.w[j]) / sum)
		}
		k.lo = append(k.lo, xmin)
		k.off = append(k.off, len(k.w))
	}
}

func (k *coeffs) window(i int) (lo int, w []float32) {
	return k.lo[i], k.w[k.off[i]:k.off[i+1]]
}

// span is the source range [lo, hi) that any weight touches.
func (k *coeffs) span() (lo, hi int) {
	lo, hi = k.lo[0], 0
	for i := range k.lo {
		lo = min(lo, k.lo[i])
		hi = max(hi, k.lo[i]+k.off[i+1]-k.off[i])
	}
	return lo, hi
}

func (k *coeffs) shift(d int) {
	for i := range k.lo {
		k.lo[i] -= d
	}
}

// horizontal resamples rh rows (stride bytes apart) of cs-channel uint8
// pixels into S×cs floats each.
func horizontal(src []uint8, stride, rh, cs int, k *coeffs, dst []float32) {
	S := len(k.lo)
	for y := range rh {
		row := src[y*stride:]
		out := dst[y*S*cs : (y+1)*S*cs]
		if cs == 1 {
			for i := range S {
				lo, ws := k.lo[i], k.w[k.off[i]:k.off[i+1]]
				px := row[lo : lo+len(ws)]
				var s float32
				for j, w := range ws {
					s += w * float32(px[j])
				}
				out[i] = s
			}
			continue
		}
		for i := range S {
			lo, ws := k.lo[i], k.w[k.off[i]:k.off[i+1]]
			px := row[lo*3 : (lo+len(ws))*3]
			var r, g, b float32
			for j, w := range ws {
				p := px[j*3 : j*3+3 : j*3+3]
				r += w * float32(p[0])
				g += w * float32(p[1])
				b += w * float32(p[2])
			}
			out[i*3], out[i*3+1], out[i*3+2] = r, g, b
		}
	}
}

// toPixels copies rect of img into dst as interleaved 8-bit pixels with cs
// channels (1: luma, 3: RGB); alpha is dropped as PIL's convert("RGB").
func toPixels(img image.Image, rect image.Rectangle, cs int, dst []uint8) {
	w := rect.Dx()
	switch im := img.(type) {
	case *image.YCbCr:
		if cs == 1 { // JPEG luma is ITU-R 601 luma, what PIL's "L" computes from RGB
			for y := rect.Min.Y; y < rect.Max.Y; y++ {
				i := im.YOffset(rect.Min.X, y)
				copy(dst[(y-rect.Min.Y)*w:], im.Y[i:i+w])
			}
			return
		}
		ycbcrToRGB(im, rect, dst)
		return
	case *image.Gray:
		if cs == 1 {
			for y := rect.Min.Y; y < rect.Max.Y; y++ {
				i := im.PixOffset(rect.Min.X, y)
				copy(dst[(y-rect.Min.Y)*w:], im.Pix[i:i+w])
			}
			return
		}
	case *image.NRGBA:
		rgbaLike(im.Pix, im.Stride, im.PixOffset(rect.Min.X, rect.Min.Y), w, rect.Dy(), cs, dst)
		return
	case *image.RGBA:
		rgbaLike(im.Pix, im.Stride, im.PixOffset(rect.Min.X, rect.Min.Y), w, rect.Dy(), cs, dst)
		return
	}
	// Everything else (paletted, 16-bit, CMYK): the generic path.
	i := 0
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		for x := rect.Min.X; x < rect.Max.X; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			if a != 0 && a != 0xffff { // un-premultiply, as PIL keeps straight RGB
				r, g, b = r*0xffff/a, g*0xffff/a, b*0xffff/a
			}
			if cs == 1 {
				dst[i] = luma(uint8(r>>8), uint8(g>>8), uint8(b>>8))
				i++
			} else {
				dst[i], dst[i+1], dst[i+2] = uint8(r>>8), uint8(g>>8), uint8(b>>8)
				i += 3
			}
		}
	}
}

// luma is PIL's L = R*299/1000 + G*587/1000 + B*114/1000 (fixed point).
func luma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

func rgbaLike(pix []uint8, stride, off, w, h, cs int, dst []uint8) {
	for y := range h {
		row := pix[off+y*stride : off+y*stride+4*w]
		if cs == 1 {
			d := dst[y*w : (y+1)*w]
			for x := range w {
				d[x] = luma(row[4*x], row[4*x+1], row[4*x+2])
			}
			continue
		}
		d := dst[y*w*3 : (y+1)*w*3]
		for x := range w {
			d[3*x], d[3*x+1], d[3*x+2] = row[4*x], row[4*x+1], row[4*x+2]
		}
	}
}

// ycbcrToRGB converts with the same integer arithmetic as image/color.
func ycbcrToRGB(im *image.YCbCr, rect image.Rectangle, dst []uint8) {
	w := rect.Dx()
	hs := uint(0) // horizontal chroma subsampling shift
	switch im.SubsampleRatio {
	case image.YCbCrSubsampleRatio422, image.YCbCrSubsampleRatio420:
		hs = 1
	case image.YCbCrSubsampleRatio411, image.YCbCrSubsampleRatio410:
		hs = 2
	}
	x0 := rect.Min.X
	for y := rect.Min.Y; y < rect.Max.Y; y++ {
		d := dst[(y-rect.Min.Y)*w*3 : (y-rect.Min.Y+1)*w*3]
		yi := im.YOffset(x0, y)
		ci0 := im.COffset(x0, y) - (x0 >> hs)
		ys := im.Y[yi : yi+w]
		for x, yv := range ys {
			ci := ci0 + (x0+x)>>hs
			yy1 := int32(yv) * 0x10101
			cb1 := int32(im.Cb[ci]) - 128
			cr1 := int32(im.Cr[ci]) - 128
			r := yy1 + 91881*cr1
			g := yy1 - 22554*cb1 - 46802*cr1
			b := yy1 + 116130*cb1
			p := d[3*x : 3*x+3 : 3*x+3]
			p[0] = clampYCC(r)
			p[1] = clampYCC(g)
			p[2] = clampYCC(b)
		}
	}
}

func clampYCC(v int32) uint8 {
	if uint32(v)&0xff000000 == 0 {
		return uint8(v >> 16)
	}
	return uint8(^(v >> 31))
}

// DecodeApply decodes data (JPEG or PNG) and transforms it into dst. The
// crop is planned from the JPEG header. With DCTScale (the training
// default), a JPEG is decoded at the smallest 1/1..1/8 scale that still
// leaves the crop at least Size pixels (as PIL's draft mode); both builds
// pick the same scale. In the default (pure-Go) build, internal/jpeg then
// reconstructs only the MCUs around the pixels that resampling reads
// (DecodeRegion: the rest of the scan is entropy-decoded and dropped, no
// IDCT); those pixels are a whole decode's at that scale, so without
// DCTScale the output is DecodeImage + Apply's, bit for bit. With the
// libjpeg build tag, libjpeg-turbo decodes the whole image (at that scale)
// straight into a reused buffer. Errors name the object and wrap
// ErrBadSample.
func (t *Transformer) DecodeApply(data []byte, name string, seed uint64, dst []float32) error {
	if haveLibjpeg && isJPEG(data) {
		if err := t.decodeApplyLibjpeg(data, seed, dst); err == nil {
			return nil
		} else if isTruncation(err) {
			return fmt.Errorf("%s: corrupt or truncated JPEG: %v: %w", name, err, ErrBadSample)
		}
		// Anything libjpeg refuses (CMYK, odd headers) gets the Go decoder's verdict.
	}
	return t.decodeApplyGo(data, name, seed, dst)
}

// decodeApplyGo is DecodeApply with internal/jpeg (and image/png).
func (t *Transformer) decodeApplyGo(data []byte, name string, seed uint64, dst []float32) error {
	var (
		p       cropPlan
		win     image.Rectangle
		planned bool
	)
	img, err := decodeImage(data, name, func(w, h int) (int, image.Rectangle) {
		p = t.plan(w, h, seed)
		d := t.dctDenom(p)
		if d > 1 {
			p = p.scaled(d, (w+d-1)/d, (h+d-1)/d) // DecodeScaled's size
		}
		win, planned = t.prepare(p), true
		return d, win
	})
	if err != nil {
		return err
	}
	if !planned {
		t.Apply(img, seed, dst) // PNGs: decoded whole
		return nil
	}
	// img holds win (and more) in the coordinates of the whole image.
	t.resampleImage(img, p, win, image.Point{}, dst)
	return nil
}

func isTruncation(err error) bool { return strings.Contains(err.Error(), "truncated") }

// dctDenom is the JPEG scale 1/denom for plan p: with DCTScale the largest
// of 8, 4, 2 that keeps the crop box at least Size pixels on both axes, so
// that resampling still only shrinks; otherwise 1.
func (t *Transformer) dctDenom(p cropPlan) int {
	if !t.cfg.DCTScale {
		return 1
	}
	for _, d := range []int{8, 4, 2} {
		if (p.x1-p.x0)/float64(d) >= float64(t.cfg.Size) && (p.y1-p.y0)/float64(d) >= float64(t.cfg.Size) {
			return d
		}
	}
	return 1
}

// scaled maps p onto the image decoded at 1/denom (ow×oh pixels): output
// pixel i covers source pixels [i·denom, (i+1)·denom), so coordinates
// divide by denom exactly; the clip rectangle grows to whole pixels.
func (p cropPlan) scaled(denom, ow, oh int) cropPlan {
	f := float64(denom)
	p.x0, p.x1, p.y0, p.y1 = p.x0/f, p.x1/f, p.y0/f, p.y1/f
	c := p.clip
	p.clip = image.Rect(c.Min.X/denom, c.Min.Y/denom, min((c.Max.X+denom-1)/denom, ow), min((c.Max.Y+denom-1)/denom, oh))
	return p
}

func (t *Transformer) decodeApplyLibjpeg(data []byte, seed uint64, dst []float32) error {
	w, h, comps, err := libjpegInfo(data)
	if err != nil {
		return err
	}
	if w <= 0 || h <= 0 || w > maxImageSide || h > maxImageSide || w*h > maxImagePixels || (comps != 1 && comps != 3) {
		return fmt.Errorf("JPEG %dx%d with %d components not handled by libjpeg", w, h, comps)
	}
	p := t.plan(w, h, seed)
	denom := t.dctDenom(p)
	gray := t.cfg.Channels == 1 || comps == 1
	pix, ow, oh, cs, err := libjpegDecode(data, denom, gray, t.jbuf)
	t.jbuf = pix
	if err != nil {
		return err
	}
	if denom != 1 {
		p = p.scaled(denom, ow, oh)
	}
	stride := ow * cs
	t.apply(p, cs, func(r image.Rectangle) ([]uint8, int) {
		return pix[r.Min.Y*stride+r.Min.X*cs:], stride
	}, dst)
	return nil
}
