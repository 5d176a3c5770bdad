package dataset

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"strings"
	"sync"

	"github.com/ringtrain/ringtrain/objstore"
)

// ImportOptions tunes ImportMNIST.
type ImportOptions struct {
	Parallel int
	Progress *Progress
	// Limit keeps only the first Limit samples of each split (0: all).
	Limit int
}

// ImportMNIST writes the built-in dataset name ("mnist" or "fashion-mnist",
// see LoadMNIST) as PNG class folders under prefix in dst: train/<class>/,
// val/<class>/ (the test set) and classes.txt. Class folders are the class
// names made path-safe ("T-shirt/top" -> "T-shirt_top").
func ImportMNIST(ctx context.Context, name string, dst objstore.Store, prefix string, opt ImportOptions) error {
	train, test, err := LoadMNIST(name)
	if err != nil {
		return err
	}
	return importArrays(ctx, name, train, test, dst, prefix, opt)
}

func importArrays(ctx context.Context, name string, train, test *Arrays, dst objstore.Store, prefix string, opt ImportOptions) error {
	folders := make([]string, len(train.Classes))
	for i, c := range train.Classes {
		folders[i] = SafeFolderName(c)
	}
	idx := FormatClassIndex(folders, train.Classes)
	if err := dst.Put(ctx, prefix+ClassIndexFile, bytes.NewReader(idx), int64(len(idx))); err != nil {
		return err
	}
	if opt.Parallel <= 0 {
		opt.Parallel = 8
	}
	nTrain, nTest := train.N, test.N
	if opt.Limit > 0 {
		nTrain, nTest = min(nTrain, opt.Limit), min(nTest, opt.Limit)
	}
	if opt.Progress != nil {
		opt.Progress.total = int64(nTrain + nTest)
	}
	for _, sp := range []struct {
		split string
		a     *Arrays
		n     int
	}{{"train", train, nTrain}, {"val", test, nTest}} {
		if err := importSplit(ctx, sp.a, sp.n, dst, prefix+sp.split+"/", folders, opt); err != nil {
			return fmt.Errorf("import %s %s: %w", name, sp.split, err)
		}
	}
	opt.Progress.Finish()
	return nil
}

func importSplit(ctx context.Context, a *Arrays, n int, dst objstore.Store, dir string, folders []string, opt ImportOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	jobs := make(chan int)
	errc := make(chan error, opt.Parallel)
	var wg sync.WaitGroup
	for range opt.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			img := image.NewGray(image.Rect(0, 0, a.W, a.H))
			var buf bytes.Buffer
			enc := png.Encoder{CompressionLevel: png.BestCompression}
			for i := range jobs {
				for j, v := range a.Sample(i) {
					img.Pix[j] = uint8(math.Round(float64(v) * 255)) // exact inverse of LoadMNIST's b/255
				}
				buf.Reset()
				if err := enc.Encode(&buf, img); err != nil {
					errc <- err
					cancel()
					return
				}
				key := fmt.Sprintf("%s%s/%05d.png", dir, folders[a.Labels[i]], i)
				if err := dst.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len())); err != nil {
					errc <- err
					cancel()
					return
				}
				opt.Progress.Add(1)
			}
		}()
	}
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return ctx.Err()
	}
}

// SafeFolderName turns a class name into a folder name without '/', '\\'
// or leading dots.
func SafeFolderName(name string) string {
	r := strings.NewReplacer("/", "_", "\\", "_", "\x00", "_", "\t", " ", "\n", " ")
	s := strings.TrimLeft(r.Replace(name), ".")
	if s == "" {
		s = "_"
	}
	return s
}
