package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ringtrain/ringtrain/checkpoint"
	"github.com/ringtrain/ringtrain/objstore"
)

const ckptUsage = `usage: ringtrain ckpt <command> [flags]

  ls     --store URI [--run RUN]          runs, or a run's checkpoints (step, epoch, metrics, size)
  show   --store URI --run RUN [--step N] manifest and tensor shapes (newest good step by default)
  show   FILE.pth|FILE.safetensors        tensor names, dtypes and shapes of a file
  verify --store URI --run RUN [--step N] check every blob's size and sha256 (all steps by default)
  export --store URI --run RUN [--step N] --out FILE.safetensors
  export FILE.pth|FILE.safetensors --out FILE.safetensors
         writes weights as F32 safetensors PyTorch's load_state_dict accepts

URI is a local folder or s3://bucket/prefix (server from --s3-endpoint).
Every flag may also be set as RINGTRAIN_<FLAG> (dashes as underscores).`

// runCkpt is `ringtrain ckpt ls|show|verify|export`.
func runCkpt(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, ckptUsage)
		return flag.ErrHelp
	}
	ctx, cancel := signalContext()
	defer cancel()
	return ckptMain(ctx, args, os.Stdout)
}

func ckptMain(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ckpt "+args[0], flag.ContinueOnError)
	var f ckptFlags
	f.register(fs)
	pos, err := ckptParseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	switch args[0] {
	case "ls":
		return ckptLs(ctx, &f, out)
	case "show":
		return ckptShow(ctx, &f, pos, out)
	case "verify":
		return ckptVerify(ctx, &f, out)
	case "export":
		return ckptExport(ctx, &f, pos, out)
	}
	fmt.Fprintln(os.Stderr, ckptUsage)
	return fmt.Errorf("unknown ckpt command %q", args[0])
}

type ckptFlags struct {
	store    string
	run      string
	step     int64
	out      string
	compat   bool
	s3       objstore.S3Config
	unsigned bool
}

func (f *ckptFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.store, "store", "", "checkpoint store: local folder or s3://bucket/prefix")
	fs.StringVar(&f.run, "run", "", "run name")
	fs.Int64Var(&f.step, "step", -1, "step (-1: newest good one for show/export, all for verify)")
	fs.StringVar(&f.out, "out", "", "export: output .safetensors file")
	fs.BoolVar(&f.compat, "torch-compat", true, "export: store num_batches_tracked as int64 and add missing ones, as PyTorch's strict loading wants")
	fs.StringVar(&f.s3.Endpoint, "s3-endpoint", "", "S3 endpoint, host:port or http(s)://host:port")
	fs.StringVar(&f.s3.AccessKey, "s3-access-key", "", "S3 access key (else AWS_ACCESS_KEY_ID or the credentials file)")
	fs.StringVar(&f.s3.SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&f.s3.Region, "s3-region", "us-east-1", "S3 region")
	fs.BoolVar(&f.s3.PathStyle, "s3-path-style", true, "path-style addressing (MinIO, versitygw)")
	fs.BoolVar(&f.s3.Insecure, "s3-insecure", false, "plain HTTP when the endpoint has no scheme")
	fs.BoolVar(&f.unsigned, "s3-unsigned-payload", false, "send UNSIGNED-PAYLOAD (needed by gofakes3)")
}

// ckptEnvDefaults sets flags from RINGTRAIN_<FLAG> before the command line.
func ckptEnvDefaults(fs *flag.FlagSet) error {
	var errs []error
	fs.VisitAll(func(fl *flag.Flag) {
		key := "RINGTRAIN_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if err := fl.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", key, v, err))
			}
		}
	})
	return errors.Join(errs...)
}

// ckptParseArgs parses flags placed before or after positional arguments.
func ckptParseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	if err := ckptEnvDefaults(fs); err != nil {
		return nil, err
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func (f *ckptFlags) objects(ctx context.Context) (objstore.Store, string, error) {
	if f.store == "" {
		return nil, "", errors.New("no --store (or RINGTRAIN_STORE)")
	}
	bucket, prefix, isS3, err := objstore.ParseURI(f.store)
	if err != nil {
		return nil, "", err
	}
	if !isS3 {
		dir := strings.TrimPrefix(f.store, "file://")
		if _, err := os.Stat(dir); err != nil {
			return nil, "", fmt.Errorf("checkpoint store %s: %w", dir, err)
		}
		st, err := objstore.NewLocal(dir)
		return st, "", err
	}
	cfg, err := f.s3.WithEnv(os.Getenv)
	if err != nil {
		return nil, "", err
	}
	cfg.DisableContentSHA256 = f.unsigned
	st, err := objstore.NewS3(ctx, cfg, bucket)
	return st, prefix, err
}

func (f *ckptFlags) openStore(ctx context.Context) (*checkpoint.Store, error) {
	objs, prefix, err := f.objects(ctx)
	if err != nil {
		return nil, err
	}
	if f.run == "" {
		return nil, errors.New("no --run (or RINGTRAIN_RUN); `ringtrain ckpt ls --store URI` lists runs")
	}
	return checkpoint.NewStore(objs, checkpoint.StoreConfig{Prefix: prefix, Run: f.run, Logger: newLogger("warn")})
}

// load returns the requested step, or the newest good one.
func (f *ckptFlags) load(ctx context.Context, st *checkpoint.Store) (*checkpoint.Checkpoint, error) {
	if f.step >= 0 {
		return st.Load(ctx, f.step)
	}
	ck, skipped, err := st.Latest(ctx)
	for _, s := range skipped {
		fmt.Fprintf(os.Stderr, "skipped step %d: %v\n", s.Step, s.Err)
	}
	return ck, err
}

func ckptLs(ctx context.Context, f *ckptFlags, out io.Writer) error {
	if f.run == "" {
		objs, prefix, err := f.objects(ctx)
		if err != nil {
			return err
		}
		runs, err := checkpoint.ListRuns(ctx, objs, prefix)
		if err != nil {
			return err
		}
		for _, r := range runs {
			fmt.Fprintln(out, r)
		}
		return nil
	}
	st, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	entries, err := st.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tEPOCH\tNET\tSIZE\tCREATED\tMETRICS\tSTATE")
	for _, e := range entries {
		if e.Manifest == nil {
			state := "incomplete (no manifest)"
			if e.Err != nil {
				state = "bad manifest: " + e.Err.Error()
			}
			fmt.Fprintf(tw, "%d\t-\t-\t%s\t-\t-\t%s\n", e.Step, ckptBytes(e.Size), state)
			continue
		}
		m := e.Manifest
		var ms []string
		for _, k := range slices.Sorted(maps.Keys(m.Metrics)) {
			ms = append(ms, fmt.Sprintf("%s=%.4g", k, m.Metrics[k]))
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\tcomplete\n", e.Step, m.Epoch, m.Net, ckptBytes(e.Size),
			m.CreatedAt.Format(time.DateTime), strings.Join(ms, " "))
	}
	return tw.Flush()
}

func ckptBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func ckptTensorTable(out io.Writer, title string, ts []checkpoint.Tensor) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	var total int
	fmt.Fprintf(tw, "%s\tDTYPE\tSHAPE\tNUMEL\n", title)
	for _, t := range ts {
		dt := t.DType
		if dt == "" {
			dt = checkpoint.F32
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", t.Name, dt, t.Shape, t.Numel())
		total += t.Numel()
	}
	fmt.Fprintf(tw, "(%d tensors, %d values)\t\t\t\n", len(ts), total)
	return tw.Flush()
}

func ckptShow(ctx context.Context, f *ckptFlags, pos []string, out io.Writer) error {
	if len(pos) == 1 {
		ts, meta, err := checkpoint.ReadTensorFile(pos[0])
		if err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(meta)) {
			fmt.Fprintf(out, "metadata %s = %s\n", k, meta[k])
		}
		return ckptTensorTable(out, "TENSOR", ts)
	}
	if len(pos) > 1 {
		return errors.New("show takes at most one file")
	}
	st, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	ck, err := f.load(ctx, st)
	if err != nil {
		return err
	}
	mb, err := ck.Manifest.Marshal()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s%s", st.StepDir(ck.Manifest.Step)+checkpoint.ManifestName+":\n", mb)
	if err := ckptTensorTable(out, "WEIGHTS", ck.Weights); err != nil {
		return err
	}
	if len(ck.Optim) > 0 {
		return ckptTensorTable(out, "OPTIMIZER STATE", ck.Optim)
	}
	return nil
}

func ckptVerify(ctx context.Context, f *ckptFlags, out io.Writer) error {
	st, err := f.openStore(ctx)
	if err != nil {
		return err
	}
	entries, err := st.List(ctx)
	if err != nil {
		return err
	}
	var bad int
	start := time.Now()
	var done int64
	found := false
	for i, e := range entries {
		if f.step >= 0 && e.Step != f.step {
			continue
		}
		found = true
		t0 := time.Now()
		var status string
		switch {
		case e.Manifest == nil && e.Err == nil:
			status = "INCOMPLETE (no manifest; a save in progress or one that died)"
		case e.Manifest == nil:
			status, bad = "BAD: "+e.Err.Error(), bad+1
		default:
			if err := st.Verify(ctx, e.Step); err != nil {
				if !errors.Is(err, checkpoint.ErrCorrupt) {
					return err
				}
				status, bad = "CORRUPT: "+err.Error(), bad+1
			} else {
				status = "ok"
			}
		}
		done += e.Size
		el := time.Since(start).Seconds()
		rate := float64(done) / (1 << 20) / max(el, 1e-9)
		fmt.Fprintf(out, "[%d/%d] step %d: %s (%s in %.2fs, %.1f MiB/s overall)\n", i+1, len(entries), e.Step, status,
			ckptBytes(e.Size), time.Since(t0).Seconds(), rate)
	}
	if f.step >= 0 && !found {
		return fmt.Errorf("step %d not found in %s", f.step, st)
	}
	if bad > 0 {
		return fmt.Errorf("%d bad checkpoint(s) in %s", bad, st)
	}
	return nil
}

func ckptExport(ctx context.Context, f *ckptFlags, pos []string, out io.Writer) error {
	if f.out == "" {
		return errors.New("export needs --out FILE.safetensors")
	}
	var ts []checkpoint.Tensor
	meta := map[string]string{"format": "pt"}
	switch len(pos) {
	case 0:
		st, err := f.openStore(ctx)
		if err != nil {
			return err
		}
		ck, err := f.load(ctx, st)
		if err != nil {
			return err
		}
		ts = ck.Weights
		meta["ringtrain.net"] = ck.Manifest.Net
		meta["ringtrain.step"] = fmt.Sprint(ck.Manifest.Step)
		if len(ck.Manifest.ClassNames) > 0 {
			meta["ringtrain.class_names"] = strings.Join(ck.Manifest.ClassNames, "\n")
		}
	case 1:
		var err error
		if ts, _, err = checkpoint.ReadTensorFile(pos[0]); err != nil {
			return err
		}
	default:
		return errors.New("export takes at most one input file")
	}
	// Floating tensors go out as F32; integer ones keep their type.
	for i := range ts {
		switch ts[i].DType {
		case checkpoint.F16, checkpoint.BF16, checkpoint.F64:
			ts[i].DType = checkpoint.F32
		}
	}
	if f.compat {
		ts = checkpoint.TorchCompat(ts)
	}
	if err := checkpoint.WriteSafetensorsFile(f.out, ts, meta); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote %s: %d tensors\n", f.out, len(ts))
	return nil
}
