package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ringtrain/ringtrain/dataset"
	"github.com/ringtrain/ringtrain/objstore"
)

const dataUsage = `usage: ringtrain data <command> [flags] args

  import mnist|fashion-mnist --out DIR|s3://bucket/prefix   write a built-in dataset as PNG class folders
  push DIR s3://bucket/prefix     upload a folder in parallel; resumes, skipping what is there
  pack SRC DST                    pack class folders (train/, val/) into tar shards with an index
  ls URI                          print splits, classes and sample counts

URIs are s3://bucket/prefix (server from --s3-endpoint) or local folders.
Credentials: --s3-access-key/--s3-secret-key, RINGTRAIN_S3_ACCESS_KEY/SECRET_KEY,
AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or an AWS credentials file.`

// runData is `ringtrain data ...`.
func runData(args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(os.Stderr, dataUsage)
		return flag.ErrHelp
	}
	ctx, cancel := signalContext()
	defer cancel()
	switch args[0] {
	case "import":
		return dataImport(ctx, args[1:])
	case "push":
		return dataPush(ctx, args[1:])
	case "pack":
		return dataPack(ctx, args[1:])
	case "ls":
		return dataLs(ctx, args[1:])
	}
	fmt.Fprintln(os.Stderr, dataUsage)
	return fmt.Errorf("unknown data command %q", args[0])
}

// dataS3Flags are the object-store flags every data command takes.
type dataS3Flags struct {
	cfg          objstore.S3Config
	unsigned     bool
	createBucket bool
}

func (d *dataS3Flags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.cfg.Endpoint, "s3-endpoint", "", "S3 endpoint, host:port or http(s)://host:port")
	fs.StringVar(&d.cfg.AccessKey, "s3-access-key", "", "S3 access key (else AWS_ACCESS_KEY_ID or the credentials file)")
	fs.StringVar(&d.cfg.SecretKey, "s3-secret-key", "", "S3 secret key")
	fs.StringVar(&d.cfg.CredentialsFile, "s3-credentials-file", "", "AWS-style credentials file")
	fs.StringVar(&d.cfg.Profile, "s3-profile", "", "profile in the credentials file")
	fs.StringVar(&d.cfg.Region, "s3-region", "us-east-1", "S3 region")
	fs.BoolVar(&d.cfg.PathStyle, "s3-path-style", true, "path-style addressing (MinIO, versitygw)")
	fs.BoolVar(&d.cfg.Insecure, "s3-insecure", false, "plain HTTP when the endpoint has no scheme")
	fs.BoolVar(&d.unsigned, "s3-unsigned-payload", false, "send UNSIGNED-PAYLOAD (needed by gofakes3)")
	fs.BoolVar(&d.createBucket, "create-bucket", false, "create the destination bucket if missing")
}

// open opens uri for reading (or, with write, for writing).
func (d *dataS3Flags) open(ctx context.Context, uri string, write bool) (objstore.Store, string, error) {
	bucket, prefix, isS3, err := objstore.ParseURI(uri)
	if err != nil {
		return nil, "", err
	}
	if !isS3 {
		if !write {
			if _, err := os.Stat(uri); err != nil {
				return nil, "", fmt.Errorf("local dataset %s: %w", uri, err)
			}
		}
		st, err := objstore.NewLocal(uri)
		return st, "", err
	}
	cfg, err := d.cfg.WithEnv(os.Getenv)
	if err != nil {
		return nil, "", err
	}
	cfg.DisableContentSHA256 = d.unsigned
	if write && d.createBucket {
		st, err := objstore.CreateBucket(ctx, cfg, bucket)
		return st, prefix, err
	}
	st, err := objstore.NewS3(ctx, cfg, bucket)
	if errors.Is(err, objstore.ErrNotExist) && write {
		err = fmt.Errorf("%w (pass --create-bucket to create it)", err)
	}
	return st, prefix, err
}

// dataArgs parses flags that may come before or after the positional args.
func dataArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func dataImport(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("data import", flag.ContinueOnError)
	var s3 dataS3Flags
	s3.register(fs)
	out := fs.String("out", "", "destination: folder or s3://bucket/prefix")
	parallel := fs.Int("parallel", 8, "parallel writes")
	limit := fs.Int("limit", 0, "keep only the first N samples of each split (0: all)")
	pos, err := dataArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || (pos[0] != "mnist" && pos[0] != "fashion-mnist") || *out == "" {
		return errors.New("usage: ringtrain data import mnist|fashion-mnist --out DIR|s3://bucket/prefix")
	}
	st, prefix, err := s3.open(ctx, *out, true)
	if err != nil {
		return err
	}
	p := dataset.NewProgress(os.Stderr, "import "+pos[0], 0, "images")
	if err := dataset.ImportMNIST(ctx, pos[0], st, prefix, dataset.ImportOptions{Parallel: *parallel, Progress: p, Limit: *limit}); err != nil {
		return err
	}
	fmt.Printf("imported %s to %s\n", pos[0], *out)
	return nil
}

func dataPush(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("data push", flag.ContinueOnError)
	var s3 dataS3Flags
	s3.register(fs)
	parallel := fs.Int("parallel", 16, "parallel uploads")
	pos, err := dataArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: ringtrain data push DIR s3://bucket/prefix")
	}
	src, srcPrefix, err := s3.open(ctx, pos[0], false)
	if err != nil {
		return err
	}
	dst, dstPrefix, err := s3.open(ctx, pos[1], true)
	if err != nil {
		return err
	}
	p := dataset.NewProgress(os.Stderr, "push", 0, "B")
	st, err := dataset.Copy(ctx, src, srcPrefix, dst, dstPrefix, dataset.CopyOptions{Parallel: *parallel, Progress: p})
	fmt.Printf("pushed %d objects (%.1f MiB), %d already there\n", st.Copied, float64(st.Bytes)/(1<<20), st.Skipped)
	return err
}

func dataPack(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("data pack", flag.ContinueOnError)
	var s3 dataS3Flags
	s3.register(fs)
	splits := fs.String("splits", "", "comma-separated splits (default: all found)")
	shardMB := fs.Int("shard-size-mb", 128, "target shard size in MiB (64-256 suits object storage)")
	shuffle := fs.Bool("shuffle", true, "shuffle samples across shards")
	seed := fs.Uint64("seed", 0, "shuffle seed")
	pos, err := dataArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New("usage: ringtrain data pack SRC DST")
	}
	src, srcPrefix, err := s3.open(ctx, pos[0], false)
	if err != nil {
		return err
	}
	dst, dstPrefix, err := s3.open(ctx, pos[1], true)
	if err != nil {
		return err
	}
	var names []string
	if *splits != "" {
		names = strings.Split(*splits, ",")
	} else {
		sums, err := dataset.Describe(ctx, src, srcPrefix)
		if err != nil {
			return err
		}
		for _, s := range sums {
			if s.Err != nil {
				return fmt.Errorf("split %s: %w", s.Name, s.Err)
			}
			names = append(names, s.Name)
		}
	}
	var classes, classNames []string
	for _, sp := range names {
		ix, err := dataset.ScanFolders(ctx, src, srcPrefix, sp, dataset.ScanOptions{})
		if err != nil {
			return err
		}
		classes, classNames = ix.Classes, ix.ClassNames
		p := dataset.NewProgress(os.Stderr, "pack "+sp, int64(len(ix.Samples)), "images")
		var last int
		out, err := dataset.Pack(ctx, src, ix, dst, dstPrefix, sp, dataset.PackOptions{
			ShardSize: int64(*shardMB) << 20, Shuffle: *shuffle, Seed: *seed,
			Progress: func(n int, _ int64) { p.Add(int64(n - last)); last = n },
		})
		if err != nil {
			return err
		}
		p.Finish()
		fmt.Printf("packed %s: %d samples into %d shards\n", sp, len(out.Samples), len(out.Shards))
	}
	if classes != nil {
		b := dataset.FormatClassIndex(classes, classNames)
		if err := dst.Put(ctx, dstPrefix+dataset.ClassIndexFile, strings.NewReader(string(b)), int64(len(b))); err != nil {
			return err
		}
	}
	return nil
}

func dataLs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("data ls", flag.ContinueOnError)
	var s3 dataS3Flags
	s3.register(fs)
	pos, err := dataArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: ringtrain data ls URI")
	}
	st, prefix, err := s3.open(ctx, pos[0], false)
	if err != nil {
		return err
	}
	sums, err := dataset.Describe(ctx, st, prefix)
	if err != nil {
		return err
	}
	where := strings.TrimSuffix(pos[0], "/") + "/"
	dataset.PrintSummary(os.Stdout, where, sums)
	return nil
}
