package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/internal/progress"
	"github.com/ringtrain/ringtrain/modelio"
	"github.com/ringtrain/ringtrain/nets"
	"github.com/ringtrain/ringtrain/nn"
	"github.com/ringtrain/ringtrain/nn/kernels"
	"github.com/ringtrain/ringtrain/transfer"
)

// transferFlags are the flags shared by predict and features.
type transferFlags struct {
	name       *string
	cfg        *nets.Config
	includeTop *bool
	weights    *string
	strict     *bool
	preprocess *string
	resize     *int
	batch      *int
	threads    *int
}

func addTransferFlags(fs *flag.FlagSet) *transferFlags {
	f := &transferFlags{}
	f.name, f.cfg, f.includeTop = netFlags(fs)
	f.weights = fs.String("weights", "", "weights: a torchvision .pth or a .safetensors file")
	f.strict = fs.Bool("strict", true, "require every weight to match by name and shape")
	f.preprocess = fs.String("preprocess", "", "caffe, torch, tf or unit (default: the net's)")
	f.resize = fs.Int("resize", 0, "resize the shorter side to this before the center crop (default: the input size, as Keras)")
	f.batch = fs.Int("batch", 16, "images per forward pass")
	f.threads = fs.Int("threads", runtime.GOMAXPROCS(0), "compute threads")
	return f
}

// model builds the net and loads its weights; it reports what loaded.
func (f *transferFlags) model() (*nn.Model, nets.Spec, error) {
	m, err := buildFromFlags(*f.name, f.cfg, *f.includeTop)
	if err != nil {
		return nil, nets.Spec{}, err
	}
	spec, _ := nets.Lookup(*f.name)
	if *f.weights == "" {
		fmt.Fprintln(os.Stderr, "warning: no --weights: the net is randomly initialised")
		return m, spec, nil
	}
	rep, err := modelio.ImportFile(m, *f.weights, *f.strict)
	if err != nil {
		return nil, spec, err
	}
	if !rep.OK() {
		fmt.Fprintf(os.Stderr, "weights %s: %s\n", *f.weights, rep)
	}
	return m, spec, nil
}

func (f *transferFlags) transform(m *nn.Model, spec nets.Spec) (dataset.TransformConfig, error) {
	mode := *f.preprocess
	if mode == "" {
		mode = spec.Preprocess
	}
	p, err := dataset.ParsePreprocess(mode)
	if err != nil {
		return dataset.TransformConfig{}, err
	}
	resize := *f.resize
	if resize == 0 {
		resize = m.In[1]
	}
	return dataset.TransformConfig{Size: m.In[1], Channels: m.In[0], ResizeShorter: resize, Preprocess: p}, nil
}

// runPredict prints the top-k classes of each image, as Keras's
// decode_predictions.
func runPredict(args []string) error {
	fs := flag.NewFlagSet("predict", flag.ContinueOnError)
	f := addTransferFlags(fs)
	top := fs.Int("top", 3, "classes to print per image")
	namesFile := fs.String("class-names", "", "file with one class name per line (default: ImageNet's for 1000 classes)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	images := fs.Args()
	if len(images) == 0 {
		return fmt.Errorf("no images given")
	}
	m, spec, err := f.model()
	if err != nil {
		return err
	}
	if len(m.Out) != 1 {
		return fmt.Errorf("predict needs the classifier (--include-top=true); the net outputs %v", m.Out)
	}
	names, err := classNames(*namesFile, m.Out[0])
	if err != nil {
		return err
	}
	tc, err := f.transform(m, spec)
	if err != nil {
		return err
	}
	x, err := transfer.LoadImages(images, tc)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(*f.threads)
	defer pool.Close()
	probs, err := transfer.Run(m, pool, x, *f.batch, nil)
	if err != nil {
		return err
	}
	k := m.Out[0]
	transfer.Softmax(probs, k)
	for i, path := range images {
		fmt.Println(path)
		for j, p := range transfer.TopK(probs[i*k:(i+1)*k], *top, names) {
			fmt.Printf("  %d. %-30s %4d  %.4f\n", j+1, p.Name, p.Index, p.Prob)
		}
	}
	return nil
}

func classNames(file string, k int) ([]string, error) {
	if file == "" {
		if k == 1000 {
			return transfer.ImageNetClasses(), nil
		}
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	names := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(names) != k {
		return nil, fmt.Errorf("class names %s: %d names for a net with %d classes", file, len(names), k)
	}
	return names, nil
}

// runFeatures writes feature maps (include_top=false) or pooled vectors.
func runFeatures(args []string) error {
	fs := flag.NewFlagSet("features", flag.ContinueOnError)
	f := addTransferFlags(fs)
	out := fs.String("out", "features.safetensors", "output file: .safetensors or .npy")
	data := fs.String("data", "", "a dataset split instead of image files: s3://bucket/root/val or root/val (class folders or tar shards)")
	var s3 dataS3Flags
	s3.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	images := fs.Args()
	if len(images) == 0 && *data == "" {
		return fmt.Errorf("no images given (IMAGE... or --data URI)")
	}
	if *data != "" {
		return datasetFeatures(f, *data, *out, &s3)
	}
	m, spec, err := f.model()
	if err != nil {
		return err
	}
	tc, err := f.transform(m, spec)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(*f.threads)
	defer pool.Close()
	bar := progress.New(os.Stderr, "features", int64(len(images)), "img")
	var feats []float32
	for lo := 0; lo < len(images); lo += *f.batch {
		chunk := images[lo:min(lo+*f.batch, len(images))]
		x, err := transfer.LoadImages(chunk, tc)
		if err != nil {
			return err
		}
		y, err := transfer.Run(m, pool, x, *f.batch, nil)
		if err != nil {
			return err
		}
		feats = append(feats, y...)
		bar.Add(int64(len(chunk)), "")
	}
	bar.Done(fmt.Sprintf("output %v per image", m.Out))
	shape := append([]int{len(images)}, m.Out...)
	switch strings.ToLower(filepath.Ext(*out)) {
	case ".npy":
		err = writeNPY(*out, shape, feats)
	case ".safetensors":
		err = checkpoint.WriteSafetensorsFile(*out, []checkpoint.Tensor{{Name: "features", Shape: shape, Data: feats}},
			map[string]string{"net": *f.name, "images": strings.Join(images, "\n")})
	default:
		err = fmt.Errorf("--out %s: want a .safetensors or .npy file", *out)
	}
	if err != nil {
		return err
	}
	fmt.Printf("features net=%s images=%d shape=%v out=%s\n", *f.name, len(images), shape, *out)
	return nil
}

// writeNPY writes a little-endian float32 array in NumPy's .npy format 1.0.
func writeNPY(path string, shape []int, data []float32) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = fmt.Sprint(d)
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	pad := 64 - (10+len(header)+1)%64
	header += strings.Repeat(" ", pad%64) + "\n"
	buf := make([]byte, 0, 10+len(header)+4*len(data))
	buf = append(buf, "\x93NUMPY\x01\x00"...)
	buf = append(buf, byte(len(header)), byte(len(header)>>8))
	buf = append(buf, header...)
	for _, v := range data {
		u := math.Float32bits(v)
		buf = append(buf, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return os.WriteFile(path, buf, 0o644)
}

// datasetFeatures is `features --data`: every sample of a split, in index
// order, with its label.
func datasetFeatures(f *transferFlags, uri, out string, s3 *dataS3Flags) error {
	m, spec, err := f.model()
	if err != nil {
		return err
	}
	tc, err := f.transform(m, spec)
	if err != nil {
		return err
	}
	cfg, err := s3.cfg.WithEnv(os.Getenv)
	if err != nil {
		return err
	}
	cfg.DisableContentSHA256 = s3.unsigned
	ctx, cancel := signalContext()
	defer cancel()
	store, ix, err := transfer.OpenSplit(ctx, uri, cfg)
	if err != nil {
		return err
	}
	pool := kernels.NewPool(*f.threads)
	defer pool.Close()
	bar := progress.New(os.Stderr, "features", int64(len(ix.Samples)), "img")
	last := 0
	feats, labels, err := transfer.DatasetFeatures(ctx, m, pool, store, ix, tc, *f.batch, func(done int) {
		bar.Add(int64(done-last), "")
		last = done
	})
	if err != nil {
		return err
	}
	bar.Done(fmt.Sprintf("output %v per image", m.Out))
	shape := append([]int{len(labels)}, m.Out...)
	lab := make([]float32, len(labels))
	for i, l := range labels {
		lab[i] = float32(l)
	}
	switch strings.ToLower(filepath.Ext(out)) {
	case ".npy":
		err = writeNPY(out, shape, feats)
	case ".safetensors":
		err = checkpoint.WriteSafetensorsFile(out, []checkpoint.Tensor{{Name: "features", Shape: shape, Data: feats},
			{Name: "labels", Shape: []int{len(labels)}, DType: checkpoint.I64, Data: lab}},
			map[string]string{"net": *f.name, "data": uri, "classes": strings.Join(ix.Classes, "\n")})
	default:
		err = fmt.Errorf("--out %s: want a .safetensors or .npy file", out)
	}
	if err != nil {
		return err
	}
	fmt.Printf("features net=%s data=%s samples=%d shape=%v out=%s\n", *f.name, uri, len(labels), shape, out)
	return nil
}
