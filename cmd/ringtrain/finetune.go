package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/ringtrain/ringtrain/coordinator"
)

// runFinetune trains a new head on a pretrained net with its first layers
// frozen: on a local cluster, or submitted to a coordinator with --addr.
func runFinetune(args []string) error {
	fs := flag.NewFlagSet("finetune", flag.ContinueOnError)
	from := fs.String("from", "", "pretrained weights: .pth/.safetensors file, or a checkpoint run (s3://bucket/prefix/run[@step] or dir/run)")
	netName := fs.String("net", "", "architecture of the pretrained weights")
	head := fs.String("head", "", `new classifier, e.g. "gap,dense:1024:relu,dense:2" (empty: keep the net's, resized to --classes)`)
	freeze := fs.Int("freeze", 0, "freeze the first N layers (see `ringtrain layers`)")
	freezeUntil := fs.String("freeze-until", "", "freeze every layer up to and including this one")
	data := fs.String("data", "builtin:fashion-mnist", "training data: builtin:mnist|fashion-mnist, or s3://bucket/root/train")
	eval := fs.String("eval", "", "evaluation data (default: the built-in test split, or …/val next to --data)")
	classes := fs.Int("classes", 10, "classes of the new task")
	input := fs.Int("input", 28, "input height and width")
	channels := fs.Int("channels", 1, "input channels")
	preprocess := fs.String("preprocess", "", "pixel mode for S3 datasets: unit, caffe, torch, tf")
	epochs := fs.Int("epochs", 1, "epochs")
	batch := fs.Int("batch", 96, "global batch size")
	lr := fs.Float64("lr", 0.01, "learning rate")
	momentum := fs.Float64("momentum", 0.9, "SGD momentum")
	seed := fs.Uint64("seed", 1, "seed")
	job := fs.String("job", "finetune", "job name")
	ckpt := fs.String("checkpoint", "", "checkpoint location (default: the local cluster's S3)")
	addr := fs.String("addr", "", "submit to this coordinator instead of running a local cluster")
	workers := fs.Int("workers", 2, "local cluster: worker processes")
	threads := fs.Int("threads", 0, "local cluster: threads per worker")
	dir := fs.String("dir", "", "local cluster: state directory")
	logLevel := fs.String("log-level", "warn", "log level of the in-process servers")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *from == "" || *netName == "" {
		return fmt.Errorf("--from and --net are required")
	}
	evalURI := *eval
	layout := coordinator.LayoutClassFolders
	if strings.HasPrefix(*data, "builtin:") {
		layout = coordinator.LayoutIDX
		if evalURI == "" {
			evalURI = *data + "/test"
		}
	} else if evalURI == "" && strings.HasSuffix(*data, "/train") {
		evalURI = strings.TrimSuffix(*data, "/train") + "/val"
	}
	spec := coordinator.JobSpec{
		Name: *job, Net: *netName,
		Dataset: coordinator.DatasetSpec{URI: *data, Layout: layout, Preprocess: *preprocess},
		Classes: *classes, Input: coordinator.InputSpec{Channels: *channels, Height: *input, Width: *input},
		GlobalBatchSize: *batch, Epochs: *epochs, Seed: *seed,
		Optimizer: coordinator.OptimizerSpec{Name: "sgd", LR: *lr, Momentum: *momentum},
		Schedule:  coordinator.ScheduleSpec{Name: "cosine"},
		World:     coordinator.WorldSpec{Min: 1},
		Transfer:  &coordinator.TransferSpec{From: *from, Head: *head, Freeze: *freeze, FreezeUntil: *freezeUntil},
	}
	if evalURI != "" {
		spec.Eval = coordinator.EvalSpec{URI: evalURI, Layout: layout, EveryEpochs: 1}
	}
	spec.Checkpoint = coordinator.CheckpointSpec{URI: *ckpt, EveryEpochs: 1, Keep: 3}
	if *addr == "" {
		if spec.Checkpoint.URI == "" {
			spec.Checkpoint.URI = "s3://ringtrain/checkpoints"
		}
		return localCluster(localOptions{workers: *workers, threads: *threads, dir: *dir, logLevel: *logLevel}, spec)
	}
	if spec.Checkpoint.URI == "" {
		spec.Checkpoint = coordinator.CheckpointSpec{}
	}
	b, _ := json.Marshal(spec)
	c, err := coordinator.Dial(*addr)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := signalContext()
	defer cancel()
	resp, err := c.Submit(ctx, b)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(resp, "", "  ")
	fmt.Fprintln(os.Stdout, string(out))
	return nil
}
