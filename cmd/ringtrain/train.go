package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ringtrain/ringtrain/worker"
)

func runTrain(args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	var c worker.LocalConfig
	fs.StringVar(&c.Net, "net", "lenet", "architecture (see `ringtrain nets`)")
	fs.StringVar(&c.Dataset, "dataset", "mnist", "built-in dataset: mnist or fashion-mnist")
	fs.IntVar(&c.Epochs, "epochs", 2, "epochs")
	fs.IntVar(&c.Batch, "batch", 64, "batch size")
	fs.StringVar(&c.Optimizer, "optimizer", "sgd", "sgd, adam or adamw")
	fs.Float64Var(&c.LR, "lr", 0.05, "learning rate")
	fs.Float64Var(&c.Momentum, "momentum", 0.9, "SGD momentum")
	fs.Float64Var(&c.WeightDecay, "weight-decay", 0, "weight decay")
	fs.BoolVar(&c.Nesterov, "nesterov", false, "Nesterov momentum")
	fs.Float64Var(&c.LabelSmoothing, "label-smoothing", 0, "label smoothing ε")
	fs.StringVar(&c.Schedule.Kind, "schedule", "cosine", "learning-rate schedule: constant, step, multistep, cosine")
	fs.IntVar(&c.Schedule.WarmupSteps, "warmup-steps", 0, "linear warmup steps")
	fs.Float64Var(&c.Schedule.WarmupStart, "warmup-start", 0.1, "warmup start factor")
	fs.IntVar(&c.Threads, "threads", 0, "compute threads (0 = all cores)")
	fs.Uint64Var(&c.Seed, "seed", 1, "random seed")
	fs.IntVar(&c.MaxSteps, "max-steps", 0, "stop each epoch after this many steps (0 = full epochs)")
	logLevel := fs.String("log-level", "info", "log level")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c.Log = newLogger(*logLevel)
	c.Progress = os.Stderr
	ctx, cancel := signalContext()
	defer cancel()
	res, err := worker.TrainLocal(ctx, c)
	if err != nil {
		return err
	}
	fmt.Printf("result net=%s dataset=%s epochs=%d test_accuracy=%.4f train_loss=%.4f seconds=%.1f img_per_s=%.1f\n",
		c.Net, c.Dataset, c.Epochs, res.TestAccuracy, res.TrainLoss, res.Seconds, res.ImagesPerSec)
	return nil
}
