package dataset

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
)

// benchImages returns the darknet sample photos (skip if absent).
func benchImages(b *testing.B) [][]byte {
	glob := os.Getenv("RINGTRAIN_BENCH_IMAGES")
	if glob == "" {
		glob = "/usr/share/darknet/data/*.jpg"
	}
	files, _ := filepath.Glob(glob)
	if len(files) == 0 {
		b.Skipf("no images match %s (apt-get install darknet)", glob)
	}
	var out [][]byte
	for _, f := range files {
		d, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// mnistPNGs encodes the first n MNIST training digits as PNG files.
func mnistPNGs(b *testing.B, n int) [][]byte {
	train, _, err := LoadMNIST("mnist")
	if err != nil {
		b.Skipf("MNIST: %v", err)
	}
	var out [][]byte
	img := image.NewGray(image.Rect(0, 0, 28, 28))
	for i := range n {
		for j, v := range train.Sample(i) {
			img.Pix[j] = uint8(math.Round(float64(v) * 255))
		}
		var buf bytes.Buffer
		png.Encode(&buf, img)
		out = append(out, buf.Bytes())
	}
	return out
}

// BenchmarkDecodeAugment is decode + transform of one image per op on one
// goroutine (run with -cpu 1 for a per-core figure); scripts/bench_decode.py
// runs it beside Pillow/torchvision.
func BenchmarkDecodeAugment(b *testing.B) {
	cases := []struct {
		name string
		imgs func(*testing.B) [][]byte
		cfg  TransformConfig
	}{
		// Exact decodes ("Go pure" in scripts/bench_decode.py; training
		// needs NoDCTScale for that since DCTScale became its default) and
		// DCT-scaled ones (-dct, "+DCT").
		{"darknet/train224", benchImages, TransformConfig{Size: 224, Train: true, Preprocess: Torch, NoDCTScale: true}},
		{"darknet/eval224", benchImages, TransformConfig{Size: 224, Preprocess: Torch}},
		{"darknet/train224-dct", benchImages, TransformConfig{Size: 224, Train: true, Preprocess: Torch, DCTScale: true}},
		{"darknet/eval224-dct", benchImages, TransformConfig{Size: 224, Preprocess: Torch, DCTScale: true}},
		{"mnist/train28", func(b *testing.B) [][]byte { return mnistPNGs(b, 2000) }, TransformConfig{Size: 28, Channels: 1, Train: true, ScaleMin: 0.5, ScaleMax: 1, Preprocess: Unit}},
		{"mnist/eval28", func(b *testing.B) [][]byte { return mnistPNGs(b, 2000) }, TransformConfig{Size: 28, Channels: 1, ResizeShorter: 28, Preprocess: Unit}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			imgs := tc.imgs(b)
			tr, err := NewTransformer(tc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			out := make([]float32, tr.Config().SampleLen())
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuSeconds()
			for i := 0; i < b.N; i++ {
				if err := tr.DecodeApply(imgs[i%len(imgs)], "bench", uint64(i), out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "img/s")
			// Per CPU-second of the process (GC included): on a loaded
			// machine wall time measures the scheduler's share more than us.
			if cpu := cpuSeconds() - cpu0; cpu > 0 {
				b.ReportMetric(float64(b.N)/cpu, "img/cpu-s")
			}
		})
	}
}

// cpuSeconds is the user+system CPU time of this process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// BenchmarkDecodeOnly separates decoding from the transform.
func BenchmarkDecodeOnly(b *testing.B) {
	imgs := benchImages(b)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := DecodeImage(imgs[i%len(imgs)], "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoader is the whole pipeline (list, fetch, decode, augment,
// batch) over a class-folder dataset or packed shards named by
// RINGTRAIN_BENCH_DATASET (a folder, e.g. from `ringtrain data import
// mnist`), with RINGTRAIN_BENCH_SIZE (default 28) and GOMAXPROCS workers.
func BenchmarkLoader(b *testing.B) {
	dir := os.Getenv("RINGTRAIN_BENCH_DATASET")
	if dir == "" {
		b.Skip("set RINGTRAIN_BENCH_DATASET to a dataset folder")
	}
	size := 28
	if v := os.Getenv("RINGTRAIN_BENCH_SIZE"); v != "" {
		fmt.Sscan(v, &size)
	}
	ctx := context.Background()
	st := localStore(b, dir)
	ix, err := ScanFolders(ctx, st, "", "train", ScanOptions{})
	if err != nil {
		b.Fatal(err)
	}
	s := Sampler{N: len(ix.Samples), GlobalBatch: 256, Shuffle: true}
	l, err := NewLoader(LoaderConfig{Store: st, Index: ix, Sampler: s, World: 1, Workers: runtime.GOMAXPROCS(0),
		Transform: TransformConfig{Size: size, Channels: 1, Train: true, ScaleMin: 0.5, ScaleMax: 1, DCTScale: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		bt, err := l.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n += bt.N
		l.Release(bt)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "img/s")
}
